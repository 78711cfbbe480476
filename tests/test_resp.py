"""The store's auto-pipelined Redis connection, against real Redis servers with faults injected.

redis-py is the oracle: what this connection writes, redis-py reads back, and the other way round.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from chat_ws.exceptions import StoreUnavailable
from chat_ws.store.resp import Address, ReplyError, RespConnection, Script
from tests.redis_util import OwnRedis, own_redis, require_redis, require_redis_server  # noqa: F401 (fixture)

pytestmark = pytest.mark.redis

ECHO = Script("return {KEYS[1], ARGV[1]}")


@pytest.fixture
def prefix() -> str:
    return f"chat_ws_test:resp:{secrets.token_hex(4)}:"


@pytest.fixture
def oracle(prefix: str) -> Iterator[Any]:
    """redis-py on the test database; deletes this test's keys afterwards."""
    client: Any = redis.Redis.from_url(require_redis())
    yield client
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
async def conn(oracle: Any) -> AsyncIterator[RespConnection]:
    connection = RespConnection(require_redis(), timeout=5.0)
    yield connection
    await connection.close()


async def blocked_in_redis(url: str, client_id: int, timeout: float = 5.0) -> None:
    """Wait until Redis reports the connection with CLIENT ID client_id blocked in a command (its
    pipelined writes arrived): asked over another connection, one round trip after another."""
    probe = RespConnection(url)
    try:
        async with asyncio.timeout(timeout):
            while True:
                info = await probe.call("CLIENT", "LIST", "ID", client_id)
                if "flags=b" in info.decode():
                    return
    finally:
        await probe.close()


def count_writes(connection: RespConnection) -> list[int]:
    """Instrument the live transport: how many writes it is asked for."""
    proto = connection._proto
    assert proto is not None and proto.transport is not None
    writes = [0]
    original = proto.transport.write

    def write(data: Any) -> None:
        writes[0] += 1
        original(data)

    proto.transport.write = write  # type: ignore[method-assign]
    return writes


async def test_commands_issued_together_share_one_write(conn: RespConnection, oracle: Any, prefix: str) -> None:
    await conn.call("PING")
    writes = count_writes(conn)
    replies = await asyncio.gather(*(conn.call("SET", f"{prefix}{i}", f"v{i}") for i in range(200)))
    assert replies == [b"OK"] * 200
    assert writes[0] == 1
    assert oracle.get(f"{prefix}199") == b"v199"


async def test_each_caller_gets_its_own_reply(conn: RespConnection, oracle: Any, prefix: str) -> None:
    oracle.mset({f"{prefix}{i}": str(i) for i in range(500)})
    replies = await asyncio.gather(*(conn.call("GET", f"{prefix}{i}") for i in range(500)))
    assert replies == [str(i).encode() for i in range(500)]


async def test_reply_shapes_match_redis_py(conn: RespConnection, oracle: Any, prefix: str) -> None:
    oracle.rpush(f"{prefix}list", "a", "b")
    assert await conn.call("LRANGE", f"{prefix}list", 0, -1) == oracle.lrange(f"{prefix}list", 0, -1)
    assert await conn.call("GET", f"{prefix}missing") is None
    assert await conn.call("INCR", f"{prefix}n") == 1
    assert await conn.evalsha(ECHO, [f"{prefix}k"], ["ü"]) == [f"{prefix}k".encode(), "ü".encode()]


async def test_a_redis_error_reaches_its_caller_only(conn: RespConnection, oracle: Any, prefix: str) -> None:
    oracle.set(f"{prefix}s", "text")
    bad = conn.call("LPUSH", f"{prefix}s", "x")
    good = conn.call("GET", f"{prefix}s")
    with pytest.raises(ReplyError, match="WRONGTYPE"):
        await bad
    assert await good == b"text"


async def test_an_argument_redis_cannot_carry_is_a_type_error(conn: RespConnection) -> None:
    with pytest.raises(TypeError):
        await conn.call("SET", "k", None)
    assert await conn.call("PING") == b"PONG"


async def test_noscript_loads_the_script_and_retries(own_redis: OwnRedis) -> None:
    connection = RespConnection(own_redis.url)
    try:
        assert await connection.evalsha(ECHO, ["k"], ["v"]) == [b"k", b"v"]
        await connection.call("SCRIPT", "FLUSH")  # as a restart without persistence does
        assert await connection.evalsha(ECHO, ["k2"], ["v2"]) == [b"k2", b"v2"]
    finally:
        await connection.close()


async def test_killed_redis_fails_every_call_in_flight_then_reconnects(own_redis: OwnRedis) -> None:
    connection = RespConnection(own_redis.url, timeout=30.0)
    try:
        client_id = await connection.call("CLIENT", "ID")
        blocked = [connection.call("BLPOP", f"never-{i}", 20) for i in range(50)]  # in flight for 20 s
        more = connection.call("GET", "x")  # queued behind them
        await blocked_in_redis(own_redis.url, client_id)  # Redis holds the pipeline: mid-reply
        began = time.monotonic()
        own_redis.kill()
        outcomes = await asyncio.wait_for(asyncio.gather(*blocked, more, return_exceptions=True), 5)
        assert time.monotonic() - began < 5
        assert all(isinstance(o, StoreUnavailable) for o in outcomes), outcomes
        assert connection.in_flight() == 0
        with pytest.raises(StoreUnavailable):  # still down: refused at once, not hung
            await asyncio.wait_for(connection.call("PING"), 5)
        own_redis.start()
        assert await connection.call("PING") == b"PONG"
        assert connection.connects == 2
    finally:
        await connection.close()


async def test_a_reply_after_its_deadline_is_dropped_in_order(conn: RespConnection, oracle: Any, prefix: str) -> None:
    oracle.set(f"{prefix}after", "later")
    slow = conn.call("BLPOP", f"{prefix}empty", 0.5, timeout=0.1)  # Redis answers after 0.5 s
    began = time.monotonic()
    with pytest.raises(StoreUnavailable, match="in time"):
        await slow
    assert time.monotonic() - began < 0.45
    # the late nil reply to BLPOP must not be taken for the answer to this GET
    assert await conn.call("GET", f"{prefix}after") == b"later"
    assert conn.connects == 1


async def test_in_flight_commands_are_bounded(oracle: Any, prefix: str) -> None:
    connection = RespConnection(require_redis(), max_in_flight=2, timeout=5.0)
    try:
        client_id = await connection.call("CLIENT", "ID")  # connected: the next calls take the fast path
        first = connection.call("BLPOP", f"{prefix}a", 0.3)
        second = connection.call("BLPOP", f"{prefix}b", 0.3)
        third = connection.call("SET", f"{prefix}c", "1")
        assert connection.in_flight() == 2  # the third waits for room instead of going out
        await blocked_in_redis(require_redis(), client_id)
        assert oracle.get(f"{prefix}c") is None  # Redis holds the first two; the SET is not sent
        assert await asyncio.wait_for(third, 5) == b"OK"
        assert (await first, await second) == (None, None)
    finally:
        await connection.close()


async def test_waiting_for_room_has_a_deadline(oracle: Any, prefix: str) -> None:
    connection = RespConnection(require_redis(), max_in_flight=1, timeout=0.2)
    try:
        await connection.call("PING")  # connected: the BLPOP below is in flight at once
        blocking = connection.call("BLPOP", f"{prefix}a", 1, timeout=5)
        with pytest.raises(StoreUnavailable, match="saturated"):
            await connection.call("PING")
        assert await blocking is None
    finally:
        await connection.close()


async def test_auth_and_database_from_the_url(prefix: str) -> None:
    require_redis_server()
    server = OwnRedis("--requirepass", "s3cr:t")
    server.start()
    try:
        connection = RespConnection(f"redis://:s3cr%3At@127.0.0.1:{server.port}/3")
        await connection.call("SET", "k", "v")
        await connection.close()
        check: Any = redis.Redis(port=server.port, password="s3cr:t", db=3)
        assert check.get("k") == b"v"
        check.close()
        wrong = RespConnection(f"redis://:nope@127.0.0.1:{server.port}/0")
        with pytest.raises(StoreUnavailable, match="refused"):
            await wrong.call("PING")
        await wrong.close()
    finally:
        server.cleanup()


async def test_tls_url(tmp_path: Path) -> None:
    require_redis_server()
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost"],
        check=True, capture_output=True,
    )
    server = OwnRedis("--port", "0", "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                      "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no")
    server.start(port_arg="--tls-port")
    try:
        connection = RespConnection(f"rediss://localhost:{server.port}/0?ssl_ca_certs={cert}")
        assert await connection.call("PING") == b"PONG"
        await connection.close()
        unverified = RespConnection(f"rediss://127.0.0.1:{server.port}/0?ssl_cert_reqs=none")
        assert await unverified.call("PING") == b"PONG"
        await unverified.close()
        untrusted = RespConnection(f"rediss://localhost:{server.port}/0")  # self-signed: refused
        with pytest.raises(StoreUnavailable):
            await untrusted.call("PING")
        await untrusted.close()
    finally:
        server.cleanup()


def test_endpoint_parses_urls() -> None:
    e = Address("redis://user:p%40ss@example:6380/4")
    assert (e.host, e.port, e.db, e.username, e.password) == ("example", 6380, 4, "user", "p@ss")
    assert e.handshake() == [("AUTH", "user", "p@ss"), ("SELECT", 4)]
    assert Address("redis://localhost").handshake() == []
    u = Address("unix:///run/redis.sock?db=2")
    assert (u.path, u.db) == ("/run/redis.sock", 2)
    from chat_ws.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError):
        Address("http://localhost")


def test_works_on_uvloop(prefix: str, oracle: Any) -> None:
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> list[Any]:
        connection = RespConnection(require_redis())
        try:
            replies = await asyncio.gather(*(connection.call("SET", f"{prefix}u{i}", i) for i in range(20)))
            replies.append(await connection.evalsha(ECHO, ["k"], ["v"]))
            return replies
        finally:
            await connection.close()

    assert uvloop.run(scenario()) == [b"OK"] * 20 + [[b"k", b"v"]]
    assert oracle.get(f"{prefix}u19") == b"19"


async def test_a_redis_that_cannot_serve_now_is_unavailable_not_an_error(own_redis: OwnRedis) -> None:
    """BUSY (a long script; LOADING after a restart is the same case): StoreUnavailable, so that
    callers treat it as the outage it is, not as a bug to log with a traceback."""
    admin: Any = redis.Redis.from_url(own_redis.url)
    admin.config_set("busy-reply-threshold", 50)
    spinner = asyncio.create_task(asyncio.to_thread(_spin, own_redis.url))
    connection = RespConnection(own_redis.url)
    try:
        for _ in range(200):  # each PING is answered at once; the script turns BUSY after 50 ms
            try:
                await connection.call("PING")
            except StoreUnavailable as exc:
                assert "BUSY" in str(exc) and isinstance(exc.__cause__, ReplyError)
                break
        else:
            pytest.fail("Redis never answered BUSY")
        admin.script_kill()
        await asyncio.wait_for(spinner, 10)
        assert await connection.call("PING") == b"PONG"
    finally:
        await connection.close()
        admin.close()


def _spin(url: str) -> None:
    client: Any = redis.Redis.from_url(url)
    try:
        client.eval("while true do end", 0)
    except redis.ResponseError:
        pass  # killed by SCRIPT KILL
    finally:
        client.close()
