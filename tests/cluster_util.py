"""A Redis Cluster and standalone layer hosts of the test session's own (devtools.redis_cluster).

Session-scoped: started by the first test that asks, stopped (their files removed) at session end.
Without redis-server or redis-cli the tests that use them skip, or fail when CI=true.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from devtools.redis_cluster import Cluster, Standalones, start_cluster, start_standalone

CLUSTER_MASTERS = 3
LAYER_HOSTS = 2
TOOLS = ("redis-server", "redis-cli")


def require_cluster_tools(tools: tuple[str, ...] = TOOLS) -> None:
    """Skip (laptop) or fail (CI=true) when redis-server or redis-cli is missing."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        reason = f"{' and '.join(missing)} not installed (Debian packages redis-server, redis-tools)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " (CI=true: the Redis Cluster tests must run)", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Cluster]:
    """A Redis Cluster of 3 masters on 127.0.0.1: ``.url`` (the seed), ``.urls``, ``.ports``,
    ``.masters()``, ``.master_for_slot(slot)``."""
    require_cluster_tools()
    cluster = start_cluster(CLUSTER_MASTERS)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def layer_hosts() -> Iterator[Standalones]:
    """Two standalone redis-servers without persistence for a sharded channel layer: ``.urls``, ``.ports``."""
    require_cluster_tools(("redis-server",))
    servers = start_standalone(LAYER_HOSTS)
    try:
        yield servers
    finally:
        servers.stop()
