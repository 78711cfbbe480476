"""chat_ws.layers.RedisChannelLayer receives as channels-redis does (the oracle), for a future per
waiting socket instead of a queue and two tasks, and rides out a killed Redis like it."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels_redis.core import RedisChannelLayer as TheirLayer

from chat_ws import layers
from chat_ws.layers import RedisChannelLayer as OurLayer
from tests.cluster_util import layer_hosts  # noqa: F401 (fixture)
from tests.redis_util import OwnRedis, blocked_clients, own_redis, require_redis  # noqa: F401 (fixture)

pytestmark = pytest.mark.redis

WAIT = 10.0  # seconds any awaited outcome may take


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Any, Any]]:
    """Our layer and channels-redis's own, each on its own prefix of the test database."""
    tag = secrets.token_hex(4)
    # capacity: messages kept in memory per channel; channel_capacity: of the process's Redis list
    options = {"capacity": 3, "channel_capacity": {"*": 1000}}
    ours = OurLayer(hosts=[require_redis()], prefix=f"chat_ws_test:layer:{tag}:ours", **options)
    theirs = TheirLayer(hosts=[require_redis()], prefix=f"chat_ws_test:layer:{tag}:theirs", **options)
    yield ours, theirs
    for layer in (ours, theirs):
        await layer.flush()


async def scenario(layer: Any) -> dict[str, list[Any]]:
    """Sends before and while receivers wait, on three specific channels and a general one."""
    a, b, c = [await layer.new_channel() for _ in range(3)]
    got: dict[str, list[Any]] = {"a": [], "b": [], "c": [], "general": []}

    async def take(name: str, channel: str, n: int) -> None:
        for _ in range(n):
            got[name].append((await layer.receive(channel))["n"])

    for n in range(3):
        await layer.send(a, {"type": "t", "n": f"a{n}"})  # in Redis before anyone receives
    await layer.send(b, {"type": "t", "n": "b0"})
    await layer.send("general.queue", {"type": "t", "n": "g0"})
    takers = [
        asyncio.create_task(take("a", a, 5)),
        asyncio.create_task(take("b", b, 2)),
        asyncio.create_task(take("c", c, 1)),
        asyncio.create_task(take("general", "general.queue", 1)),
    ]
    for channel, n in ((a, "a3"), (b, "b1"), (a, "a4"), (c, "c0")):
        await layer.send(channel, {"type": "t", "n": n})
    await asyncio.wait_for(asyncio.gather(*takers), WAIT)
    return got


async def test_receives_what_channels_redis_receives(pair: tuple[Any, Any]) -> None:
    ours, theirs = pair
    expected = {"a": ["a0", "a1", "a2", "a3", "a4"], "b": ["b0", "b1"], "c": ["c0"], "general": ["g0"]}
    assert await scenario(theirs) == expected
    assert await scenario(ours) == expected


async def keep_for_later(layer: Any) -> list[str]:
    """Five messages for a channel nobody waits on arrive while another receiver waits; its next
    receives get the last ``capacity`` of them (the oldest dropped first)."""
    waiting, later = await layer.new_channel(), await layer.new_channel()
    receiver = asyncio.create_task(layer.receive(waiting))
    for n in range(5):
        await layer.send(later, {"type": "t", "n": n})
    await layer.send(waiting, {"type": "t", "n": "last"})  # read after the five: they are in memory now
    assert (await asyncio.wait_for(receiver, WAIT))["n"] == "last"
    return [(await asyncio.wait_for(layer.receive(later), WAIT))["n"] for _ in range(3)]


async def test_messages_for_a_channel_nobody_waits_on_are_kept_as_channels_redis_keeps_them(
    pair: tuple[Any, Any],
) -> None:
    ours, theirs = pair
    assert await keep_for_later(theirs) == [2, 3, 4]
    assert await keep_for_later(ours) == [2, 3, 4]


async def test_a_cancelled_receive_loses_nothing(own_redis: OwnRedis) -> None:
    ours = OurLayer(hosts=[own_redis.url], prefix="chat_ws_test:layer:cancel")
    alone, other = await ours.new_channel(), await ours.new_channel()
    first = asyncio.create_task(ours.receive(alone))
    await blocked_clients(own_redis.url)  # the pump's BRPOP is under way
    first.cancel()  # the only receiver: the pump's read is cancelled mid-BRPOP
    with pytest.raises(asyncio.CancelledError):
        await first
    await ours.send(alone, {"type": "t", "n": 1})
    assert (await asyncio.wait_for(ours.receive(alone), WAIT))["n"] == 1
    stays = asyncio.create_task(ours.receive(other))
    goes = asyncio.create_task(ours.receive(alone))
    await blocked_clients(own_redis.url)
    goes.cancel()  # another receiver keeps the pump reading
    with pytest.raises(asyncio.CancelledError):
        await goes
    await ours.send(alone, {"type": "t", "n": 2})
    await ours.send(other, {"type": "t", "n": 3})
    assert (await asyncio.wait_for(stays, WAIT))["n"] == 3
    assert (await asyncio.wait_for(ours.receive(alone), WAIT))["n"] == 2
    await ours.flush()


async def all_waiting(layer: Any, count: int) -> None:
    """Return once count receives wait inside the layer (channels-redis counts its receivers; ours
    lists them), yielding to the loop between looks."""

    def waiting() -> int:
        if isinstance(layer, OurLayer):
            demux = layer._demuxes.get(asyncio.get_running_loop())
            return len(demux.waiting) if demux is not None else 0
        return int(layer.receive_count)

    while waiting() < count:
        await asyncio.sleep(0)  # a turn of the loop for the receivers to run, not a wait for time


async def test_a_waiting_receive_costs_no_task_of_its_own(pair: tuple[Any, Any]) -> None:
    ours, theirs = pair
    for layer, most in ((ours, 1), (theirs, 2 * 200)):  # one pump; channels-redis: two tasks each
        channels = [await layer.new_channel() for _ in range(200)]
        before = len(asyncio.all_tasks())
        receivers = [asyncio.create_task(layer.receive(c)) for c in channels]
        await asyncio.wait_for(all_waiting(layer, len(channels)), WAIT)
        extra = len(asyncio.all_tasks()) - before - len(receivers)
        assert 0 < extra <= most if layer is theirs else extra == most
        for channel in channels:
            await layer.send(channel, {"type": "t"})
        await asyncio.wait_for(asyncio.gather(*receivers), WAIT)


async def test_kept_messages_of_a_gone_socket_expire(pair: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    ours, _ = pair
    now = [1000.0]
    monkeypatch.setattr(layers._Demux, "clock", staticmethod(lambda: now[0]))
    waiting, gone, fresh = [await ours.new_channel() for _ in range(3)]
    receiver = asyncio.create_task(ours.receive(waiting))
    await ours.send(gone, {"type": "t", "n": "never received"})
    await ours.send(waiting, {"type": "t", "n": "read after it"})
    assert (await asyncio.wait_for(receiver, WAIT))["n"] == "read after it"  # so the first is kept now
    kept = next(iter(ours._demuxes.values())).kept
    assert gone in kept
    now[0] += ours.expiry  # nobody asked for it within the layer's expiry
    receiver = asyncio.create_task(ours.receive(waiting))
    await ours.send(fresh, {"type": "t", "n": "new"})
    await ours.send(waiting, {"type": "t", "n": "done"})
    assert (await asyncio.wait_for(receiver, WAIT))["n"] == "done"
    assert gone not in kept
    assert (await asyncio.wait_for(ours.receive(fresh), WAIT))["n"] == "new"


async def test_a_killed_redis_fails_waiting_receives_then_they_receive_again(own_redis: OwnRedis) -> None:
    layer = OurLayer(hosts=[own_redis.url], prefix="chat_ws_test:layer:killed")
    channels = [await layer.new_channel() for _ in range(20)]
    receivers = [asyncio.create_task(layer.receive(c)) for c in channels]
    await layer.send(channels[0], {"type": "t", "n": "before"})
    assert (await asyncio.wait_for(receivers[0], WAIT))["n"] == "before"
    own_redis.kill()
    outcomes = await asyncio.wait_for(asyncio.gather(*receivers[1:], return_exceptions=True), 60)
    assert all(isinstance(o, Exception) for o in outcomes), outcomes  # none hangs, none is lost silently
    own_redis.start()
    again = [asyncio.create_task(layer.receive(c)) for c in channels]
    for channel in channels:
        await layer.send(channel, {"type": "t", "n": "after"})
    assert [m["n"] for m in await asyncio.wait_for(asyncio.gather(*again), WAIT)] == ["after"] * 20
    await layer.flush()


async def test_sharded_over_two_hosts_every_specific_channel_gets_its_messages(layer_hosts: Any) -> None:
    """channels-redis sends a specific channel's message to the host of the full name and receives
    from the host of the process's name (django/channels#1492); ours sends where it receives."""
    prefix = f"chat_ws_test:layer:{secrets.token_hex(4)}:sharded"
    ours, theirs = OurLayer(hosts=list(layer_hosts.urls), prefix=prefix), TheirLayer(hosts=list(layer_hosts.urls))
    channels = [await ours.new_channel() for _ in range(40)]
    misrouted = [c for c in channels if theirs.consistent_hash(c) != theirs.consistent_hash(theirs.non_local_name(c))]
    assert misrouted, "with two hosts channels-redis sends some specific channels to the wrong host"
    for n, channel in enumerate(channels):
        await ours.send(channel, {"type": "t", "n": n})
    got = await asyncio.wait_for(asyncio.gather(*(ours.receive(c) for c in channels)), WAIT)
    assert [m["n"] for m in got] == list(range(len(channels)))
    # the process channels of many layers (one per server process) spread over both hosts
    layers = [OurLayer(hosts=list(layer_hosts.urls), prefix=prefix) for _ in range(40)]
    by_host = {layer.consistent_hash(await layer.new_channel()): layer for layer in layers}
    assert sorted(by_host) == [0, 1]
    for layer in by_host.values():  # a message waiting in each host's Redis
        await layer.send(await layer.new_channel(), {"type": "t"})
    import redis

    for url in layer_hosts.urls:
        client = redis.Redis.from_url(url)
        assert list(client.scan_iter(match=f"{prefix}*")), f"no layer key on {url}"
        client.close()
    await ours.flush()
