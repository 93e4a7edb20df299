"""The Python client against the embedded stack and a worker with the default topics: the
README's example runs as written and prints the list; bad events are refused before
sending; undelivered events are reported. A stack of its own (default topic names)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from infra.processes import WorkerProcess
from infra.stack import Stack, free_port
from recmodels.datasets import synthetic_stream
from streamrec.client import (
    AsyncEventProducer,
    AsyncRecommendationReader,
    DeliveryFailed,
    EventProducer,
    InvalidEvent,
)
from streamrec.kernel.settings import Settings
from streams.producer import publish
from tests.conftest import ROOT, StackInfo, wait_applied

pytestmark = pytest.mark.integration

BACKLOG = 2000


@pytest.fixture(scope="module")
def stack_and_worker(tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[tuple[Stack, StackInfo]]:
    tmp = tmp_path_factory.mktemp("client")
    info = StackInfo(free_port(), free_port())
    stack = Stack(tmp / "stack")
    stack.up(kafka_port=info.kafka_port, redis_port=info.redis_port)
    env = dict(os.environ, PYTHONPATH=str(ROOT), STREAMREC_KAFKA__BOOTSTRAP=info.bootstrap,
               STREAMREC_REDIS__URL=info.redis_url, STREAMREC_METRICS__PORT=str(free_port()),
               STREAMREC_WORKER__DATA_DIR=str(tmp / "faust"))
    worker = WorkerProcess(env, tmp)
    settings = Settings.model_validate({"kafka": {"bootstrap": info.bootstrap},
                                        "redis": {"url": info.redis_url}})
    try:
        worker.start().wait_ready(120)
        # a catalogue to recommend from: a shop's earlier traffic
        history = list(synthetic_stream(BACKLOG, n_users=300, n_items=80, seed=3))
        asyncio.run(publish(settings, history, len(history)))
        wait_applied(settings, BACKLOG)
        yield stack, info
    finally:
        worker.stop()
        stack.down()


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python client"):]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)  # type: ignore[union-attr]


def test_the_readme_example_runs_and_prints_the_list(
        stack_and_worker: tuple[Stack, StackInfo]) -> None:
    _, info = stack_and_worker
    code = readme_example().replace("127.0.0.1:9092", info.bootstrap)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md (Python client)", "exec"), {})
    lines = out.getvalue().splitlines()
    assert lines, "the example printed no list"
    for line in lines:  # "<item_id> <score> [<reason kinds>]"
        item, score, kinds = line.split(" ", 2)
        assert item and item not in ("sku-2",)  # just bought: never recommended back
        float(score)
        assert kinds.startswith("[") and kinds.endswith("]")


def test_bad_events_are_refused_before_sending_naming_the_field(
        stack_and_worker: tuple[Stack, StackInfo]) -> None:
    _, info = stack_and_worker
    with EventProducer(info.bootstrap) as producer:
        for kwargs, field in (({"user_id": "", "item_id": "i", "type": "view"}, "user_id"),
                              ({"user_id": "u", "item_id": "i", "type": "like"}, "type"),
                              ({"user_id": "u", "item_id": "i\x00", "type": "view"}, "item_id"),
                              ({"user_id": "u", "item_id": "i", "type": "view", "ts": -5},
                               "ts")):
            with pytest.raises(InvalidEvent) as caught:
                producer.send(**kwargs)  # type: ignore[arg-type]
            assert caught.value.field == field
        assert producer.flush() == 0  # nothing was handed to Kafka


def test_async_client_sends_and_reads_a_typed_list(
        stack_and_worker: tuple[Stack, StackInfo]) -> None:
    _, info = stack_and_worker

    async def run() -> None:
        async with AsyncRecommendationReader(info.bootstrap) as reader:
            async with AsyncEventProducer(info.bootstrap) as producer:
                await producer.send("bob", "sku-7", "view")
                last = await producer.send("bob", "sku-8", "click", session_id="s-1")
                assert await producer.flush() == 2
            found = await reader.wait_for("bob", trigger=last, timeout_s=30)
            assert found.user_id == "bob" and found.trigger_event_id == last
            assert found.items and all(item.reasons for item in found.items)
            assert "sku-8" not in {item.item_id for item in found.items}  # just seen

    asyncio.run(run())


def test_tail_prints_lists_read_through_the_client(
        stack_and_worker: tuple[Stack, StackInfo]) -> None:
    _, info = stack_and_worker
    env = dict(os.environ, PYTHONPATH=str(ROOT), STREAMREC_KAFKA__BOOTSTRAP=info.bootstrap)
    done = subprocess.run([sys.executable, "-m", "streamrec.app.cli", "tail",
                           "--from-beginning", "--limit", "3", "--idle-exit", "10"],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    heads = [line for line in done.stdout.splitlines() if line.startswith("user ")]
    assert len(heads) == 3 and all("model=" in h and "items=" in h for h in heads)


def test_undelivered_events_are_reported_by_flush(
        stack_and_worker: tuple[Stack, StackInfo]) -> None:
    stack, info = stack_and_worker

    async def run() -> None:
        producer = await AsyncEventProducer(info.bootstrap, request_timeout_ms=3000).start()
        try:
            stack.down()  # the broker goes away (last test of the module)
            sent = [await producer.send("carol", f"sku-{i}", "view") for i in range(3)]
            with pytest.raises(DeliveryFailed) as caught:
                await producer.flush()
            assert [eid for eid, _ in caught.value.failures] == sent
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer._producer.stop(), 10)

    asyncio.run(run())
