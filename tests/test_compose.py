"""docker-compose.yml and the Dockerfile refer to things that exist (Docker does not run here);
docs/operations.md documents every setting."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import get_commands, load_command_class

from chat_ws.conf import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
APP_SERVICES = ("migrate", "web", "sweeper")  # services that run the project's image
READ_BY_LIBRARIES = {"DATABASE_URL"}  # dj_database_url.config() reads it in the settings


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def argv(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def check_command(args: list[str]) -> None:
    """A command line of the image runs something this project has, with arguments it accepts."""
    if args[:2] == ["python", "manage.py"]:
        name = args[2]
        commands = get_commands()
        assert name in commands, f"no management command {name}"
        parser = load_command_class(commands[name], name).create_parser("manage.py", name)
        parser.parse_args(args[3:])  # exits (SystemExit) on an unknown option
    elif args[0] == "daphne":
        module, _, attr = args[-1].partition(":")
        assert importlib.util.find_spec("daphne") is not None
        assert callable(getattr(importlib.import_module(module), attr))
    else:
        raise AssertionError(f"unexpected command {args}")


def test_services_and_their_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"redis", "migrate", "web", "sweeper"} <= set(services)
    assert services["web"]["deploy"]["replicas"] == 2
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
    for name in ("web", "sweeper"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_each_app_service_runs_a_command_of_the_project(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in APP_SERVICES:
        service = services[name]
        assert service["build"] == ".", name
        check_command(argv(service))
    assert argv(services["migrate"])[:3] == ["python", "manage.py", "migrate"]
    assert argv(services["sweeper"]) == ["python", "manage.py", "chat_ws_sweep", "--loop", "--interval", "60"]


def test_environment_is_read_by_the_settings(compose: dict[str, Any]) -> None:
    readers = (ROOT / "stbd_project" / "settings.py").read_text() + (ROOT / "stbd_project" / "asgi.py").read_text()
    for name in APP_SERVICES:
        env = compose["services"][name]["environment"]
        assert env["REDIS_URL"].startswith("redis://redis:")
        for key in set(env) - READ_BY_LIBRARIES:
            assert f'"{key}"' in readers, f"{key} is set in docker-compose.yml but read nowhere"


def test_healthcheck_hits_the_health_endpoint(compose: dict[str, Any]) -> None:
    from django.urls import resolve

    test = " ".join(compose["services"]["web"]["healthcheck"]["test"])
    path = re.search(r"http://127\.0\.0\.1:8000(/[^'\"]*)", test).group(1)  # type: ignore[union-attr]
    assert resolve(path).url_name == "health"


def test_dockerfile_copies_what_exists_and_runs_daphne() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    copies = [line.split()[1:-1] for line in lines if line.startswith("COPY ")]
    assert copies, "the Dockerfile copies nothing"
    for sources in copies:
        for source in sources:
            assert (ROOT / source).exists(), source
    (cmd,) = [line for line in lines if line.startswith("CMD ")]
    args = yaml.safe_load(cmd.removeprefix("CMD "))  # the JSON exec form
    check_command(args)
    installs = [line for line in lines if "pip install" in line]
    assert any("requirements/runtime.txt" in line for line in installs)  # the demo's runtime only
    assert not any(" requirements.txt" in line for line in installs)  # no test tools in the image


def test_operations_guide_documents_every_setting() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    missing = [key for key in DEFAULTS if f"| `{key}` |" not in guide]
    assert not missing, f"docs/operations.md lacks settings: {missing}"
