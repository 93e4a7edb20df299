"""Least privilege and transport security against a real Redis 7 that only speaks TLS
(a CA made here) and has one ACL user per role (``streamrec redis-acl``):

- a stream worker, a serving worker, the trainer and the operator's commands each run as
  their own user, and the pipeline works: events applied, lists published, a model
  trained and published, the state dumped;
- each user is refused what is outside its role: serving cannot write a Markov row (not
  even from a script), the stream worker cannot write a model, the trainer cannot write a
  user, none can FLUSHALL, the default user is off;
- a plain (non-TLS) connection gets no answer, and no password, certificate or key shows
  in any output.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from infra.processes import WorkerProcess
from infra.stack import free_port
from recmodels.datasets import synthetic_stream
from streamrec.state.access import ROLES, user_name
from streams.producer import publish
from tests.conftest import ROOT, Pipeline, TopicReader, metric_sum
from tests.ops_helpers import ensure_redis7

pytestmark = pytest.mark.integration

N = 3000
PASSWORDS = {role: f"{role}-{uuid.uuid4().hex}" for role in ROLES}
PREFIX = f"acl{uuid.uuid4().hex[:6]}:"


@dataclass
class SecureRedis:
    port: int
    ca: Path
    folder: Path

    def client(self, role: str | None, tls: bool = True) -> redis.Redis:
        options: dict[str, Any] = {"host": "127.0.0.1", "port": self.port,
                                   "socket_timeout": 5}
        if tls:
            options.update(ssl=True, ssl_ca_certs=str(self.ca))
        if role is not None:
            options.update(username=user_name(role), password=PASSWORDS[role])
        return redis.Redis(**options)

    def env(self, role: str) -> dict[str, str]:
        return {"STREAMREC_REDIS__URL": f"rediss://127.0.0.1:{self.port}/0",
                "STREAMREC_REDIS__SSL_CA_CERTS": str(self.ca),
                "STREAMREC_REDIS__USERNAME": user_name(role),
                "STREAMREC_REDIS__PASSWORD": PASSWORDS[role]}


def _openssl(folder: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)


def _certificates(folder: Path) -> None:
    """A CA, and a server certificate for 127.0.0.1 signed by it."""
    _openssl(folder, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-out", "ca.crt", "-days", "2", "-subj", "/CN=streamrec-test-ca")
    _openssl(folder, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
             "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(folder, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext")


@pytest.fixture(scope="module")
def secure_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureRedis]:
    binary = ensure_redis7()
    folder = tmp_path_factory.mktemp("secure-redis")
    _certificates(folder)
    acl_env = {f"STREAMREC_ACL_PASSWORD_{role.upper()}": pw for role, pw in PASSWORDS.items()}
    done = subprocess.run([sys.executable, "-m", "streamrec.app.cli", "redis-acl", "--out",
                           str(folder / "users.acl")],
                          env={**_base_env(), **acl_env, "STREAMREC_REDIS__PREFIX": PREFIX},
                          capture_output=True, text=True, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert not any(pw in (folder / "users.acl").read_text() for pw in PASSWORDS.values())
    port = free_port()
    server = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--tls-cert-file", "server.crt",
         "--tls-key-file", "server.key", "--tls-ca-cert-file", "ca.crt",
         "--tls-auth-clients", "no", "--aclfile", "users.acl", "--save", "",
         "--appendonly", "no", "--dir", str(folder)],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    secure = SecureRedis(port, folder / "ca.crt", folder)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                secure.client("operator").ping()
                break
            except redis.RedisError:
                assert time.monotonic() < deadline, "TLS redis-server did not come up"
                time.sleep(0.2)
        yield secure
    finally:
        server.terminate()
        server.wait(10)


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")} | {
        "PYTHONPATH": str(ROOT)}


def _refused(call: Callable[[], Any]) -> str:
    with pytest.raises(redis.RedisError) as caught:
        call()
    text = str(caught.value)
    assert any(word in text for word in ("NOPERM", "no permissions", "can't access")), text
    return text


def test_each_role_runs_as_its_own_user_over_tls_and_is_refused_the_rest(
        make_pipeline: Callable[..., Pipeline], secure_redis: SecureRedis) -> None:
    pipeline = make_pipeline(trainer={"time_budget_s": 8, "threads": 1, "min_users": 10},
                             redis={"prefix": PREFIX})
    prefix = pipeline.settings.redis.prefix
    env = {k: v for k, v in pipeline.env.items() if not k.startswith("STREAMREC_REDIS__")}
    env["STREAMREC_REDIS__PREFIX"] = prefix
    workers = []
    for role, user in (("stream", "stream"), ("serving", "serving")):
        worker = WorkerProcess(dict(env, **secure_redis.env(user),
                                    STREAMREC_METRICS__PORT=str(free_port())),
                               pipeline.tmp, role=role, name=f"secure-{role}")
        pipeline.workers.append(worker)
        workers.append(worker.start())
    for worker in workers:
        worker.wait_ready(90)
    serving = workers[1]
    events = list(synthetic_stream(N, n_users=150, seed=67))
    asyncio.run(publish(pipeline.settings, events, N))
    operator = secure_redis.client("operator")
    deadline = time.monotonic() + 90
    while int(operator.hget(f"{prefix}stats", "applied") or 0) < N and \
            time.monotonic() < deadline:
        time.sleep(0.2)
    assert int(operator.hget(f"{prefix}stats", "applied") or 0) == N
    while metric_sum(serving, "streamrec_recommendations_total") < 100 and \
            time.monotonic() < deadline:
        time.sleep(0.2)
    reader = TopicReader(pipeline.settings.kafka.bootstrap,
                         pipeline.settings.topics.recommendations)
    try:
        lists = reader.poll_until(lambda m: len(m) >= 100, timeout=30)
    finally:
        reader.close()
    assert len(lists) >= 100

    def cli(role: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "streamrec.app.cli", *args],
                              env=dict(env, **secure_redis.env(role)), capture_output=True,
                              text=True, timeout=180, check=False, cwd=ROOT)

    trained = cli("trainer", "trainer", "--once")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "outcome=published" in trained.stdout or "trainer: published" in trained.stdout, \
        trained.stdout
    assert operator.get(f"{prefix}model:current")
    dumped = cli("operator", "state", "dump", "--out", str(pipeline.tmp / "dump.json"))
    assert dumped.returncode == 0, dumped.stderr
    assert '"users"' in (pipeline.tmp / "dump.json").read_text()

    serving_user = secure_redis.client("serving")
    _refused(lambda: serving_user.zincrby(f"{prefix}mk:0", 1, "1"))
    _refused(lambda: serving_user.eval(f"return redis.call('ZINCRBY', '{prefix}mk:0', 1, '1')",
                                       0))
    stream_user = secure_redis.client("stream")
    _refused(lambda: stream_user.set(f"{prefix}model:current", "mine"))
    trainer_user = secure_redis.client("trainer")
    _refused(lambda: trainer_user.hset(f"{prefix}u:someone", "seq", b""))
    for role in ROLES:
        _refused(secure_redis.client(role).flushall)
        if role != "monitor":
            _refused(lambda r=role: secure_redis.client(r).config_get("*"))
    monitor = secure_redis.client("monitor")  # what redis_exporter and health checks run
    assert monitor.ping() and "used_memory" in monitor.info("memory")
    assert "maxmemory" in monitor.config_get("maxmemory")
    _refused(lambda: monitor.get(f"{prefix}stats"))  # no key at all
    _refused(lambda: monitor.set(f"{prefix}stats", "x"))
    _refused(lambda: monitor.config_set("maxmemory", "1"))
    with pytest.raises(redis.RedisError):
        secure_redis.client(None).get(f"{prefix}stats")  # the default user is off

    with pytest.raises(redis.ConnectionError):  # a plain connection gets no answer
        secure_redis.client("operator", tls=False).ping()
    secrets = [*PASSWORDS.values(), "BEGIN CERTIFICATE", "BEGIN PRIVATE KEY",
               (secure_redis.folder / "server.key").read_text().splitlines()[1]]
    outputs = [w.log_tail(2_000_000) for w in workers] + [
        p.stdout + p.stderr for p in (trained, dumped)]
    for text in outputs:
        assert not [s for s in secrets if s in text]
