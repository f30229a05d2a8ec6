"""A Ray cluster of three nodes on loopback, shared by the module's tests.

Every byte stays on 127.0.0.1: each node is started with ``node_ip_address`` set to it,
and ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes Ray resolve local addresses to it
(without, Ray advertises the machine's own address). ``EVOLVE_REQUIRE_RAY=1`` (CI) turns
a missing Ray into a failure instead of a skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

LOOPBACK = "127.0.0.1"
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def ray_installed() -> Any:
    try:
        from ray import cluster_utils
    except ImportError as error:
        if os.environ.get("EVOLVE_REQUIRE_RAY") == "1":
            raise
        pytest.skip(f"Ray is not installed (pip install 'evolve-ai[ray]'): {error}")
    return cluster_utils


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """A head and two worker nodes, one CPU each, on loopback."""
    cluster_utils = ray_installed()
    saved = {key: os.environ.get(key) for key in RAY_ENV}
    os.environ.update(RAY_ENV)  # for this process and every evolve it starts
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "node_ip_address": LOOPBACK, "include_dashboard": False})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def on_cluster(cluster: Any) -> dict[str, object]:
    """The evolve.toml settings that run a workspace's agents on ``cluster``."""
    return {"cluster.backend": "ray", "cluster.address": cluster.address,
            "cluster.node_address": LOOPBACK}
