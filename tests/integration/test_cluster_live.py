"""Two server processes on a local 3-master Redis Cluster (the store) and two standalone Redis
servers (the channel layer, sharded): the original protocol across processes, exactly once; forget
and sweep; health per node."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request
from typing import Any

import pytest

from tests.cluster_util import layer_hosts, redis_cluster  # noqa: F401 (session fixtures)
from tests.live import ROOT
from tests.wsclient import WsClient

pytestmark = [pytest.mark.integration, pytest.mark.redis]

ASK_TIMEOUT = 30.0  # seconds the asking command may take (it starts Django first)
TOKEN = "cluster-test-token"


@pytest.fixture
def start(live_servers: Any, redis_cluster: Any, layer_hosts: Any) -> Any:
    """Start a demo server on the cluster: REDIS_CLUSTER=1 and CHANNEL_LAYER_URLS, as README says."""
    env = {
        "REDIS_URL": redis_cluster.url,
        "REDIS_CLUSTER": "1",
        "CHANNEL_LAYER_URLS": ",".join(layer_hosts.urls),
        "CHAT_WS_HEALTH_TOKEN": TOKEN,
    }
    return lambda: live_servers(redis=False, **env)


async def ask(server: Any, client_id: str, text: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "manage.py", "chat_ws_ask", client_id, text, "--timeout", "60",
        cwd=ROOT, env=server.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def outcome(proc: asyncio.subprocess.Process) -> tuple[int | None, str, str]:
    out, err = await asyncio.wait_for(proc.communicate(), ASK_TIMEOUT)
    return proc.returncode, out.decode().strip(), err.decode()


async def test_ask_on_one_process_answer_on_the_other_exactly_once(start: Any) -> None:
    first, second = start(), start()
    client = await WsClient(first.ws_url).connect()
    asker = await ask(first, client.client_id, "How many a week?")
    question = await client.next_question(timeout=ASK_TIMEOUT)
    p_key = str(question["p-key"])
    await client.ws.close()  # the socket drops; the question waits for the reconnect

    moved = await WsClient(second.ws_url, client.client_id).connect()
    again = await moved.next_question()
    assert str(again["p-key"]) == p_key and again["text"] == "How many a week?"
    await moved.answer("About 400.")
    assert await outcome(asker) == (0, "About 400.", "")
    cleared = await moved.recv_until("clear-promise-keys")
    assert [str(k) for k in cleared["promise-keys"]] == [p_key]

    await moved.answer("Again.")  # a second answer to the same p-key resolves nothing
    await moved.send({"dispatch-key": "ping", "ping-id": 7})
    assert (await moved.recv_until("ping-confirm"))["ping-id"] == 7
    out = second.manage("shell", "-c", "from chat_ws.api import pending_sync; print(len(pending_sync()))")
    assert out.stdout.strip().endswith("0"), out.stderr
    await moved.close()


async def test_forget_closes_the_socket_elsewhere_and_the_sweep_runs(start: Any) -> None:
    first, second = start(), start()
    client = await WsClient(second.ws_url).connect()
    asker = await ask(first, client.client_id, "Still there?")
    await client.next_question(timeout=ASK_TIMEOUT)

    forced = first.manage("chat_ws_sweep", "--force", client.client_id, "--json")
    assert forced.returncode == 0, forced.stderr
    report = json.loads(forced.stdout.strip().splitlines()[-1])
    assert (report["forced"], report["rejected"], report["errors"]) == (1, 1, 0)
    code, _, err = await outcome(asker)
    assert code != 0 and "ClientGone" in err
    assert await client.closed() == 4002  # its socket, served by the other process, is closed

    swept = second.manage("chat_ws_sweep", "--json")
    assert swept.returncode == 0, swept.stderr
    assert json.loads(swept.stdout.strip().splitlines()[-1])["errors"] == 0


def get_health(server: Any) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{server.http_url}/chat_ws/health/", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        return dict(json.loads(response.read()))


async def test_health_reports_every_master_and_layer_host(start: Any, redis_cluster: Any) -> None:
    server = start()
    clients = [await WsClient(server.ws_url).connect() for _ in range(5)]
    report = await asyncio.to_thread(get_health, server)
    assert report["healthy"] and report["store"] and report["channel_layer"]
    assert sorted(n["node"] for n in report["store_nodes"]) == sorted(
        f"127.0.0.1:{p}" for p in redis_cluster.ports
    )
    assert report["layer_hosts"] == 2
    assert report["active_clients"] >= 5
    for client in clients:
        await client.close()
