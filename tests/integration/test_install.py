"""README's "Installing chat_ws into another Django site", done literally.

The chat_ws wheel is built from the checkout and installed into a fresh virtualenv; a site made by
``django-admin startproject`` gets README's snippets (found by their ``<!-- install:NAME -->``
markers), runs README's commands and serves a conversation over a real socket, in EDN and in JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devtools.processes import free_port, stop, wait_for_port
from tests.live import ROOT
from tests.redis_util import require_redis
from tests.wsclient import WsClient

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.redis, pytest.mark.timeout(240)]

PIP_TIMEOUT = 180  # seconds one pip call may take (wheels come from the configured index or cache)
COMMAND_TIMEOUT = 60  # seconds one manage.py command may take
START_TIMEOUT = 30  # seconds daphne may take to listen
SOURCES = ("pyproject.toml", "MANIFEST.in", "README.md", "chat_ws")  # what the build reads
SITE = "mysite"  # README's project name
SNIPPET = re.compile(r"<!-- install:(?P<name>[\w.]+) -->\n[ ]*```\w*\n(?P<body>.*?)\n[ ]*```\n", re.S)

# The test's own lines after README's settings: its Redis key prefix and the Origin its client sends.
TEST_SETTINGS = """
# Added by tests/integration/test_install.py
CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = os.environ["CHAT_WS_TEST_PREFIX"] + ":layer:"
CHAT_WS["KEY_PREFIX"] = os.environ["CHAT_WS_TEST_PREFIX"]
ALLOWED_HOSTS = ["127.0.0.1"]
"""

# With the bare wheel (no extras, so no redis): the in-memory setup imports, checks and migrates.
WITHOUT_REDIS = """
import importlib, importlib.util
import django
from django.conf import settings
from django.core.management import call_command

assert importlib.util.find_spec("redis") is None, "redis is installed"
settings.configure(
    INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.admin",
                    "django.contrib.sessions", "django.contrib.messages", "channels", "chat_ws"],
    CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
                "OPTIONS": {"context_processors": ["django.contrib.auth.context_processors.auth",
                                                   "django.contrib.messages.context_processors.messages",
                                                   "django.template.context_processors.request"]}}],
    MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware",
                "django.contrib.auth.middleware.AuthenticationMiddleware",
                "django.contrib.messages.middleware.MessageMiddleware"],
    ROOT_URLCONF="chat_ws.urls",
    SECRET_KEY="test",
)
django.setup()
for name in ("api", "consumers", "routing", "health", "sweep", "views", "admin", "tasks"):
    importlib.import_module("chat_ws." + name)
call_command("check", fail_level="WARNING")
call_command("migrate", verbosity=0)
"""


def readme_snippets() -> dict[str, list[str]]:
    """README's install snippets by marker name, each dedented, in README's order."""
    found: dict[str, list[str]] = {}
    for match in SNIPPET.finditer((ROOT / "README.md").read_text()):
        found.setdefault(match["name"], []).append(textwrap.dedent(match["body"]) + "\n")
    return found


def run(args: list[str], timeout: float, **kwargs: Any) -> str:
    """Run a command; fail the test with its output when it fails."""
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert result.returncode == 0, f"{shlex.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
    return result.stdout


@dataclass
class Site:
    """The installed virtualenv and the new site."""

    venv: Path
    path: Path
    env: dict[str, str]
    serve: list[str] = field(default_factory=list)  # README's daphne command line

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)


def build_wheel(tmp: Path) -> Path:
    """``pip wheel --no-deps`` of a copy of the checkout's sources (the build writes into its tree)."""
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp / "dist"), str(src)], PIP_TIMEOUT)
    (wheel,) = (tmp / "dist").glob("chat_ws-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"chat_ws", wheel.name.split("-py3")[0] + ".dist-info"}
    for expected in (
        "chat_ws/static/chat_ws/chat_ws.js",
        "chat_ws/templates/chat_ws/admin/pending_questions.html",
        "chat_ws/migrations/0001_initial.py",
        "chat_ws/store/scripts.py",
    ):
        assert expected in names, expected
    return wheel


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """A fresh virtualenv with the wheel, and a site set up as README says (migrated, static collected)."""
    redis_url = require_redis()
    tmp = tmp_path_factory.mktemp("install")
    wheel = build_wheel(tmp)
    snippets = readme_snippets()
    for name in ("shell", "settings", "asgi.py", "urls.py", "chat_handlers.py"):
        assert name in snippets, f"README has no <!-- install:{name} --> snippet"

    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", str(venv)], 120)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV")}
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        REDIS_URL=redis_url,
        CHAT_WS_TEST_PREFIX="chat_ws_test:install",  # each test's server gets its own prefix
        PYTHONUNBUFFERED="1",
    )
    site = Site(venv=venv, path=tmp / SITE, env=env)
    pip = [site.bin("python"), "-m", "pip", "install", "--quiet"]

    run([*pip, str(wheel)], PIP_TIMEOUT, env=env)
    run([site.bin("python"), "-c", WITHOUT_REDIS], COMMAND_TIMEOUT, env=env, cwd=tmp)

    lines = [shlex.split(line, comments=True) for block in snippets["shell"] for line in block.splitlines()]
    lines = [line for line in lines if line]
    installs = [line for line in lines if line[0] == "pip"]
    assert installs, "README's install snippet has no pip install"
    for line in installs:
        args = [arg.replace("/path/to/checkout", str(wheel)) for arg in line[2:]]
        run([*pip, *args], PIP_TIMEOUT, env=env)
    location = run([site.bin("python"), "-c", "import chat_ws; print(chat_ws.__file__)"], 30, env=env, cwd=tmp)
    assert location.startswith(str(venv)), f"chat_ws imported from {location}, not from the wheel"

    run([site.bin("django-admin"), "startproject", SITE], COMMAND_TIMEOUT, env=env, cwd=tmp)
    package = site.path / SITE
    with open(package / "settings.py", "a") as settings:
        settings.write("\n" + "\n".join(snippets["settings"]) + TEST_SETTINGS)
    for name in ("asgi.py", "urls.py", "chat_handlers.py"):
        (package / name).write_text("".join(snippets[name]))

    for line in lines:
        if line[:2] == ["python", "manage.py"]:
            run([site.bin("python"), *line[1:]], COMMAND_TIMEOUT, env=env, cwd=site.path)
        elif line[0] == "daphne":
            site.serve = line
        else:
            assert line[0] == "pip", f"the test does not know how to run {shlex.join(line)}"
    assert site.serve, "README's snippet does not start daphne"
    assert (site.path / "staticfiles" / "chat_ws" / "chat_ws.js").is_file(), "collectstatic left out chat_ws.js"
    return site


@dataclass
class Server:
    port: int
    log: Path

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


@pytest.fixture
def server(site: Site, key_prefix: str, request: pytest.FixtureRequest) -> Iterator[Server]:
    """README's daphne command on a free port, in its own process group, with this test's prefix."""
    request.node._chat_ws_redis_url = site.env["REDIS_URL"]  # key_prefix deletes this test's keys
    port = free_port()
    args = list(site.serve)
    args[0] = site.bin("daphne")
    args[args.index("-p") + 1] = str(port)
    log_path = site.path / f"daphne-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            args,
            cwd=site.path,
            env={**site.env, "CHAT_WS_TEST_PREFIX": key_prefix},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped as a whole below
        )
    try:
        wait_for_port(port, proc, START_TIMEOUT)
        yield Server(port, log_path)
    finally:
        stop(proc, timeout=10, group=True)
        if request.node.rep_call_failed if hasattr(request.node, "rep_call_failed") else False:
            print(f"--- daphne log ---\n{log_path.read_text(errors='replace')[-5000:]}")


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


@pytest.mark.parametrize("use_json", [False, True], ids=["edn", "json"])
async def test_readme_site_serves_the_client_and_a_conversation(server: Server, use_json: bool) -> None:
    status, body = await asyncio.to_thread(get, f"{server.http_url}/static/chat_ws/chat_ws.js")
    assert status == 200 and b"ChatClient" in body
    status, body = await asyncio.to_thread(get, f"{server.http_url}/chat_ws/health/")
    assert status == 200 and json.loads(body)["healthy"] is True

    async with WsClient(server.ws_url, json=use_json, origin=server.http_url) as client:
        await client.send({"dispatch-key": "ping", "ping-id": 7})
        frame = await asyncio.wait_for(client.ws.recv(), 5)
        if use_json:
            assert json.loads(frame)["dispatch-key"] == "ping-confirm"
        else:
            assert frame.startswith("{:dispatch-key :ping-confirm, :ping-id 7")

        await client.send({"dispatch-key": "start-conversation"})
        question = await client.next_question()
        assert question["dispatch-key"] == "iviewr-says" and question["text"] == "What do you make?"

        await client.answer("Bicycles.")
        replies = {}
        for _ in range(2):  # the answer's clear-promise-keys and the handler's reply, in either order
            message = await client.recv()
            replies[message["dispatch-key"]] = message
        assert set(replies["clear-promise-keys"]["promise-keys"]) == {question["p-key"]}
        assert replies["iviewr-says"]["text"] == "Bicycles.: noted."
