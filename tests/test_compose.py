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
CLUSTER_NODES = ("redis-node-1", "redis-node-2", "redis-node-3")
LAYER_HOSTS = ("redis-layer-1", "redis-layer-2")
CLUSTER_SERVICES = {*CLUSTER_NODES, "redis-cluster-init", *LAYER_HOSTS, "web-cluster"}  # profile "cluster"


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


def test_cluster_services_exist_only_under_the_cluster_profile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert CLUSTER_SERVICES <= set(services)
    for name, service in services.items():
        if name in CLUSTER_SERVICES:
            assert service["profiles"] == ["cluster"], name
        else:  # the default profile: unchanged, and it needs nothing of the cluster profile
            assert "profiles" not in service, name
            assert not set(service.get("depends_on", {})) & CLUSTER_SERVICES, name
    for name in CLUSTER_NODES:
        args = argv(services[name])
        option = dict(zip(args[1::2], args[2::2]))
        assert args[0] == "redis-server" and option["--cluster-enabled"] == "yes", name
        assert option["--cluster-announce-hostname"] == name  # the name the other services resolve
        assert option["--cluster-preferred-endpoint-type"] == "hostname"
    init = services["redis-cluster-init"]
    script = " ".join(argv(init))
    create = f"redis-cli --cluster create {' '.join(f'{node}:6379' for node in CLUSTER_NODES)}"
    assert create + " --cluster-replicas 0 --cluster-yes" in script
    assert init["restart"] == "no"
    assert init["depends_on"] == {node: {"condition": "service_healthy"} for node in CLUSTER_NODES}
    for name in LAYER_HOSTS:
        assert argv(services[name])[0] == "redis-server"


def test_web_cluster_uses_the_cluster_and_the_sharded_layer(compose: dict[str, Any]) -> None:
    services = compose["services"]
    web, cluster_web = services["web"], services["web-cluster"]
    assert cluster_web["build"] == "." and cluster_web["image"] == web["image"]  # the x-app anchor
    check_command(argv(cluster_web))
    env = cluster_web["environment"]
    assert env["REDIS_CLUSTER"] == "1"
    seed = re.fullmatch(r"redis://([\w-]+):6379", env["REDIS_URL"])
    assert seed is not None and seed.group(1) in CLUSTER_NODES
    assert env["CHANNEL_LAYER_URLS"].split(",") == [f"redis://{host}:6379" for host in LAYER_HOSTS]
    shared = set(web["environment"]) - {"REDIS_URL", "ALLOWED_HOSTS"}
    assert {key: env[key] for key in shared} == {key: web["environment"][key] for key in shared}
    assert "web-cluster" in env["ALLOWED_HOSTS"].split(",")
    depends = cluster_web["depends_on"]
    assert depends["redis-cluster-init"]["condition"] == "service_completed_successfully"
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert all(depends[host]["condition"] == "service_healthy" for host in LAYER_HOSTS)
    assert "redis" not in depends  # its store is the cluster
    assert cluster_web["healthcheck"] == web["healthcheck"]
    assert not host_ports(cluster_web) & host_ports(web)


def host_ports(service: dict[str, Any]) -> set[int]:
    """The host ports of "8000-8001:8000" or "8002:8000" mappings."""
    found: set[int] = set()
    for mapping in service["ports"]:
        first, _, last = mapping.split(":")[0].partition("-")
        found.update(range(int(first), int(last or first) + 1))
    return found
