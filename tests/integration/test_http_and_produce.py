"""What a user touches besides the topics: ``streamrec produce`` end to end, /healthz,
GET /recommendations/{user_id} (good and bad ``n``, Redis down and back), and
``streamrec_redis_up``. A stack of its own: this module stops its Redis."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from infra.processes import WorkerProcess
from infra.stack import Stack, free_port
from streamrec.contracts.json_schemas import schema
from streamrec.contracts.recommendation import validate
from streamrec.kernel.settings import Settings
from tests.conftest import (
    ROOT,
    Pipeline,
    StackInfo,
    applied_count,
    flatten_env,
    pipeline_settings,
    state_of,
)

pytestmark = pytest.mark.integration

N = 600


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pipeline, Stack]]:
    tmp = tmp_path_factory.mktemp("http")
    info = StackInfo(free_port(), free_port())
    stack = Stack(tmp / "stack")
    stack.up(kafka_port=info.kafka_port, redis_port=info.redis_port)
    values = pipeline_settings(info, worker={"lag_interval_s": 0.5,
                                             "data_dir": str(tmp / "faust")})
    env = dict(os.environ, **flatten_env(values), PYTHONPATH=str(ROOT))
    pipeline = Pipeline(Settings.model_validate(values), env, tmp)
    try:
        pipeline.start_worker()
        yield pipeline, stack
    finally:
        pipeline.stop()
        stack.down()


def _get(worker: WorkerProcess, path: str) -> tuple[int, Any]:
    port = worker.env["STREAMREC_METRICS__PORT"]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            body = reply.read()
            status = reply.status
    except urllib.error.HTTPError as err:
        body, status = err.read(), err.code
    return status, body if path == "/metrics" else json.loads(body)


def _redis_up(worker: WorkerProcess) -> float:
    _, text = _get(worker, "/metrics")
    return float(next(line.split()[-1] for line in text.decode().splitlines()
                      if line.startswith("streamrec_redis_up ")))


def test_produce_publishes_a_data_set_that_the_worker_applies(
        served: tuple[Pipeline, Stack]) -> None:
    pipeline, _ = served
    result = pipeline.cli("produce", "synthetic", "--format", "synthetic", "--limit", str(N),
                          "--quiet")
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 60
    while applied_count(pipeline.settings) < N and time.monotonic() < deadline:
        time.sleep(0.2)
    assert applied_count(pipeline.settings) == N
    state = state_of(pipeline.settings)
    assert sum(u["events"] for u in state["users"].values()) == N
    assert any(u["bought"] for u in state["users"].values()), "purchases arrived too"


def test_the_console_does_not_publish_unless_told_to(
        served: tuple[Pipeline, Stack]) -> None:
    port = served[0].workers[0].env["STREAMREC_METRICS__PORT"]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/events", method="POST",
        data=b'{"user_id": "u", "item_id": "i", "type": "click"}')
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403
    assert "CONSOLE_TRY_IT" in json.loads(refused.value.read())["error"]


def test_healthz_says_ready_with_the_role(served: tuple[Pipeline, Stack]) -> None:
    status, body = _get(served[0].workers[0], "/healthz")
    assert status == 200
    assert body["status"] == "ok" and body["role"] == "all"


def test_pull_returns_a_v1_message_of_at_most_n_items(served: tuple[Pipeline, Stack]) -> None:
    pipeline, _ = served
    user = next(iter(state_of(pipeline.settings)["users"]))
    status, body = _get(pipeline.workers[0], f"/recommendations/{user}?n=3")
    assert status == 200, body
    assert validate(body) == []
    assert body["user_id"] == user
    assert 1 <= len(body["items"]) <= 3


def test_the_contracts_are_served_and_a_pulled_list_validates_against_its_schema(
        served: tuple[Pipeline, Stack]) -> None:
    pipeline, _ = served
    worker = pipeline.workers[0]
    status, event_schema = _get(worker, "/schemas/event.v1.json")
    assert status == 200 and event_schema == schema("event.v1.json")
    status, recommendation_schema = _get(worker, "/schemas/recommendation.v1.json")
    assert status == 200
    user = next(iter(state_of(pipeline.settings)["users"]))
    _, message = _get(worker, f"/recommendations/{user}?n=5")
    Draft202012Validator(recommendation_schema).validate(message)
    port = worker.env["STREAMREC_METRICS__PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/schemas/asyncapi.yaml") as reply:
        assert reply.read().startswith(b"# The topics of streamrec")
    status, body = _get(worker, "/schemas/secrets.json")
    assert status == 404 and "event.v1.json" in body["error"]


@pytest.mark.parametrize("n", ["0", "101", "ten", "-1"])
def test_pull_with_a_bad_n_is_a_400_naming_the_parameter(served: tuple[Pipeline, Stack],
                                                         n: str) -> None:
    status, body = _get(served[0].workers[0], f"/recommendations/u?n={n}")
    assert status == 400
    assert "'n'" in body["error"] and repr(n) in body["error"]


def test_pull_while_redis_is_down_is_a_503_and_redis_up_says_so(
        served: tuple[Pipeline, Stack], tmp_path: Path) -> None:
    pipeline, stack = served
    worker = pipeline.workers[0]
    assert _redis_up(worker) == 1
    stack.stop_service("redis")
    try:
        status, body = _get(worker, "/recommendations/u?n=3")
        assert (status, body) == (503, {"error": "redis unavailable"})
        deadline = time.monotonic() + 10
        while _redis_up(worker) != 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _redis_up(worker) == 0
    finally:
        port = int(pipeline.settings.redis.url.rsplit(":", 1)[1].split("/")[0])
        kafka = int(pipeline.settings.kafka.bootstrap.rsplit(":", 1)[1])
        stack.up(kafka_port=kafka, redis_port=port)
    deadline = time.monotonic() + 20
    status = 0
    while status != 200 and time.monotonic() < deadline:
        status, _ = _get(worker, "/recommendations/u?n=3")
        time.sleep(0.2)
    assert status == 200
    while _redis_up(worker) != 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _redis_up(worker) == 1
    assert worker.running
