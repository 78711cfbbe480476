"""The server side of the chaos ledger, read after the settle: each server's leak report and
health, the private Redis's keys, the interview rows and the tracebacks in the servers' logs."""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from loadtest.chaos_env import ChaosEnv, DemoServer
from loadtest.ledger import KeyInfo, ServerSide

logger = logging.getLogger(__name__)

HTTP_TIMEOUT = 10.0  # seconds per request to a server
LEAK_POLL = 1.0  # seconds between leak reports while the last rows drain
TRACEBACK = "Traceback (most recent call last)"
FILE_LINE = re.compile(r'^\s+File "([^"]+)", line (\d+), in (\S+)')
SCAN_COUNT = 1000
CLIENT_KEYS = ("conn", "cq")  # per-client keys whose members are looked at


def _short(body: Any) -> str:
    return " ".join(str(body).split())[:200]


def get_json(url: str, token: str) -> tuple[int, Any]:
    """GET url with the health token; (status, parsed body) even for an error status."""
    request = urllib.request.Request(url, headers={"Accept": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, body[:200].decode(errors="replace")


def _leak_report(server: DemoServer, prefix: str, token: str) -> dict[str, int]:
    url = f"{server.http_url}/demo/leaks?{urlencode({'client_prefix': prefix})}"
    try:
        status, body = get_json(url, token)
    except (OSError, ValueError) as exc:
        raise LookupError(f"{server.name} /demo/leaks unreachable: {exc}") from exc
    if status != 200 or not isinstance(body, dict) or not isinstance(body.get("leaks"), dict):
        raise LookupError(f"{server.name} /demo/leaks answered {status}: {_short(body)}")
    return {str(k): int(v) for k, v in body["leaks"].items()}


def leak_reports(env: ChaosEnv, prefix: str, settle: float) -> tuple[dict[str, dict[str, int]], list[str]]:
    """Every server's /demo/leaks for the run's prefix, once the store-wide counts reached 0 or
    ``settle`` passed. While waiting only the first server is asked, once a second: the counts
    are store-wide, and each request costs the servers a database query."""
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        try:
            if not any(_leak_report(env.servers[0], prefix, env.token).values()):
                break
        except LookupError:
            break  # the final round reports it
        time.sleep(LEAK_POLL)  # polling remote counts: there is no event to wait on
    reports: dict[str, dict[str, int]] = {}
    problems: list[str] = []
    for server in env.servers:
        try:
            reports[server.name] = _leak_report(server, prefix, env.token)
        except LookupError as exc:
            problems.append(str(exc))
    return reports, problems


def health_reports(env: ChaosEnv) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Every server's health report with counts (200 or 503, both carry them)."""
    reports: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for server in env.servers:
        try:
            status, body = get_json(f"{server.http_url}/chat_ws/health/", env.token)
        except (OSError, ValueError) as exc:
            problems.append(f"{server.name} health unreachable: {exc}")
            continue
        if not isinstance(body, dict) or "active_clients" not in body:
            problems.append(f"{server.name} health answered {status} without counts: {_short(body)}")
            continue
        reports[server.name] = body
    return reports, problems


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def store_keys(url: str) -> list[KeyInfo]:
    """Every key of the private Redis (the run's alone) with its type, TTL and member counts.

    A client's question index (``cq``) counts the members whose record is still in its bucket's
    question hash; a presence hash (``conn``) says whether it is closed (in its grace)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=HTTP_TIMEOUT)
    found: list[KeyInfo] = []
    try:
        for raw in client.scan_iter(match="*", count=SCAN_COUNT):
            key = _decode(raw)
            kind = _decode(client.type(key))
            pttl = int(client.pttl(key))
            ttl = pttl / 1000 if pttl >= 0 else -1.0
            size = {"hash": client.hlen, "zset": client.zcard, "set": client.scard, "list": client.llen}.get(
                kind, lambda _k: 0
            )(key)
            info = KeyInfo(key=key, type=kind, ttl=ttl, size=int(size))
            parts = key.split(":")
            if len(parts) >= 4 and parts[1].startswith("{") and parts[2] in CLIENT_KEYS:
                bucket = ":".join(parts[:2])
                if parts[2] == "cq" and kind == "zset":
                    members: list[Any] = list(client.zrange(key, 0, -1))
                    if members:
                        records = client.hmget(f"{bucket}:q", members)
                        info.live = sum(1 for r in records if r is not None)
                elif parts[2] == "conn" and kind == "hash":
                    info.closed = bool(client.hexists(key, "closed_at"))
            found.append(info)
    finally:
        client.close()
    return found


CHAINED = ("The above exception was the direct cause", "During handling of the above exception")


def tracebacks(logs: Path) -> list[tuple[str, int, str]]:
    """Every traceback in the servers' logs: (log file, line, "<log record> -> <exception>
    (at <file:line in function>)"); a chain of exceptions counts once, by its last one."""
    found: list[tuple[str, int, str]] = []
    for path in sorted(logs.glob("server*.log")):
        lines = path.read_text(errors="replace").splitlines()
        i = 0
        while i < len(lines):
            if TRACEBACK not in lines[i]:
                i += 1
                continue
            first = i
            record = next((lines[j].strip() for j in range(i - 1, max(-1, i - 4), -1) if lines[j][:2] == "20"), "")
            exception, where = "(traceback cut short)", ""
            i += 1
            while i < len(lines):
                line = lines[i]
                match = FILE_LINE.match(line)
                if match:
                    where = f"{Path(match[1]).name}:{match[2]} in {match[3]}"
                elif line.strip() and not line.startswith((" ", "\t")):
                    if TRACEBACK in line or line.startswith(CHAINED):
                        pass  # the chain goes on
                    else:
                        exception = line.strip()
                        following = next((x for x in lines[i + 1 :] if x.strip()), "")
                        if not following.startswith(CHAINED):
                            break
                i += 1
            headline = f"{record[24:][:120]} -> " if record else ""
            found.append((path.name, first + 1, f"{headline}{exception[:200]} (at {where})"))
            i += 1
    return found


def collect_live(env: ChaosEnv, prefix: str, leak_settle: float) -> ServerSide:
    """What the running servers, the Redis and the database hold after the settle (the rows
    first: the servers' requests may use up the database's connections)."""
    side = ServerSide()
    try:
        side.rows = {row.client_id: row for row in env.db.rows(prefix)}
    except Exception as exc:
        side.rows = None
        side.unavailable.append(f"reading the interview rows failed: {type(exc).__name__}: {exc}")
    side.leaks, problems = leak_reports(env, prefix, leak_settle)
    side.unavailable.extend(problems)
    side.health, problems = health_reports(env)
    side.unavailable.extend(problems)
    try:
        side.keys = store_keys(env.redis.url)
    except Exception as exc:
        side.unavailable.append(f"Redis scan failed: {type(exc).__name__}: {exc}")
    if any(r.get("open_sessions") for r in side.leaks.values()):
        try:
            side.context.extend(f"open session row: {row}" for row in env.db.open_sessions(prefix))
        except Exception as exc:
            side.context.append(f"open session rows unreadable: {type(exc).__name__}: {exc}")
    return side
