"""A real 3-master Redis Cluster on loopback (infra.redis_cluster): it forms with the slots
split evenly and spreads keys over the masters; streamrec, whose state step needs a single
primary, refuses it at start with a line saying so, one-shot commands and workers alike."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from redis.cluster import RedisCluster

from infra.redis_cluster import LocalRedisCluster
from infra.stack import free_port
from streamrec.kernel.settings import Settings
from tests.conftest import ROOT, Pipeline, StackInfo, flatten_env, pipeline_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    with LocalRedisCluster(tmp_path_factory.mktemp("cluster"), masters=3) as running:
        yield running


def test_three_masters_share_the_slots_and_the_keys(cluster: LocalRedisCluster) -> None:
    client = RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    try:
        masters = {node.port for node in client.get_primaries()}
        assert masters == set(cluster.ports)
        for k in range(3000):
            client.set(f"probe:{k}", k)
    finally:
        client.close()
    sizes = []
    for port in cluster.ports:
        node = Redis(host="127.0.0.1", port=port)
        sizes.append(node.dbsize())
        node.close()
    assert sum(sizes) == 3000
    assert max(sizes) <= 1.2 * min(sizes), sizes


def _pipeline(tmp: Path, cluster: LocalRedisCluster, kafka_port: int | None = None) -> Pipeline:
    values = pipeline_settings(StackInfo(kafka_port or free_port(), cluster.ports[0]),
                               worker={"data_dir": str(tmp / "faust")})
    env = dict(os.environ, **flatten_env(values), PYTHONPATH=str(ROOT),
               STREAMREC_METRICS__PORT="0")
    return Pipeline(Settings.model_validate(values), env, tmp)


def test_a_command_pointed_at_a_cluster_says_it_needs_one_primary_and_exits(
        tmp_path: Path, cluster: LocalRedisCluster) -> None:
    pipeline = _pipeline(tmp_path, cluster)
    done = pipeline.cli("state", "dump", timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"127.0.0.1:{cluster.ports[0]}" in done.stderr
    assert "is a Redis Cluster node" in done.stderr
    assert "needs a single Redis primary" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_a_worker_pointed_at_a_cluster_exits_at_once_instead_of_waiting(
        tmp_path: Path, cluster: LocalRedisCluster, stack: StackInfo) -> None:
    """Waiting for a cluster to become a single primary would not help: the worker (its
    broker up) stops within seconds, with the same line, even with a long connect
    timeout."""
    pipeline = _pipeline(tmp_path, cluster, stack.kafka_port)
    started = time.monotonic()
    done = pipeline.cli("worker", "--connect-timeout", "120", timeout=90)
    assert done.returncode == 2, done.stderr
    assert time.monotonic() - started < 60
    assert "is a Redis Cluster node" in done.stderr
    assert "Traceback" not in done.stderr
