"""``streamrec demo``: embedded stack + worker + MovieLens replay + live recommendations.

Data, in order: ``$STREAMREC_DEMO_DATA`` (a folder or ratings file); ``../shared/data/ml-100k``
beside the project; a copy cached in ``~/.cache/streamrec``; a download from GroupLens
checked against the archive's published MD5; else a seeded synthetic stream (and it says
so). Everything it starts is stopped when it ends, fails or gets Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import shutil
import signal
import tempfile
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import orjson
from aiokafka import AIOKafkaConsumer

from infra.processes import WorkerProcess
from infra.stack import Stack, free_port
from recmodels.datasets import Interaction, read_ml100k, read_titles, synthetic_stream
from streamrec.app.tail import format_recommendation
from streamrec.kernel.clients import aiokafka_options
from streamrec.kernel.errors import StreamrecError
from streamrec.kernel.settings import Settings
from streams.producer import publish

ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
ML100K_MD5 = "0e33842e24a9c977be4e0107933c0723"  # published by GroupLens (ml-100k.zip.md5)
CACHE = Path.home() / ".cache" / "streamrec" / "ml-100k"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class DemoData:
    events: list[Interaction]
    titles: dict[str, str]
    origin: str


def _from_folder(folder: Path) -> tuple[Path, Path | None] | None:
    for ratings, items in (("ml-100k.inter", "ml-100k.item"), ("u.data", "u.item")):
        if (folder / ratings).is_file():
            titles = folder / items
            return folder / ratings, titles if titles.is_file() else None
    return None


def _download(target: Path) -> bool:
    try:
        with urllib.request.urlopen(ML100K_URL, timeout=20) as response:
            blob = response.read(20_000_000)
    except OSError as exc:
        print(f"demo: could not download MovieLens 100K ({exc})")
        return False
    digest = hashlib.md5(blob).hexdigest()  # noqa: S324 (checking a published MD5)
    if digest != ML100K_MD5:
        print(f"demo: downloaded archive has MD5 {digest}, expected {ML100K_MD5}; not used")
        return False
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        for name in ("u.data", "u.item"):
            (target / name).write_bytes(archive.read(f"ml-100k/{name}"))
    return True


def find_data(offline: bool = False) -> DemoData:
    candidates: list[Path] = []
    if os.environ.get("STREAMREC_DEMO_DATA"):
        candidates.append(Path(os.environ["STREAMREC_DEMO_DATA"]))
    candidates += [Path.cwd().parent / "shared" / "data" / "ml-100k",
                   PROJECT_ROOT.parent / "shared" / "data" / "ml-100k", CACHE]
    for place in candidates:
        found = _from_folder(place) if place.is_dir() else \
            ((place, None) if place.is_file() else None)
        if found:
            ratings, titles = found
            return DemoData(read_ml100k(ratings), read_titles(titles) if titles else {},
                            f"MovieLens 100K from {ratings}")
    if not offline and _download(CACHE):
        return DemoData(read_ml100k(CACHE / "u.data"), read_titles(CACHE / "u.item"),
                        f"MovieLens 100K downloaded from GroupLens (MD5 checked) to {CACHE}")
    return DemoData(list(synthetic_stream(100_000)), {},
                    "a seeded SYNTHETIC stream (MovieLens 100K not found and not downloadable)")


STOP_WAIT_S = 5.0  # the longest a client may take to stop when the demo ends


def _as_ctrl_c(signum: int, frame: FrameType | None) -> None:
    """SIGTERM stops the demo the way Ctrl-C does (inside the event loop: asyncio cancels
    the replay, so its clients close cleanly)."""
    signal.raise_signal(signal.SIGINT)


async def _show(settings: Settings, data: DemoData, users: int, timeout_s: float,
                rate: float, max_items: int) -> int:
    consumer = AIOKafkaConsumer(settings.topics.recommendations,
                                **aiokafka_options(settings.kafka), group_id=None,
                                auto_offset_reset="earliest", fetch_max_wait_ms=100)
    await consumer.start()
    producer = asyncio.create_task(publish(settings, data.events, len(data.events), rate=rate))
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while len(seen) < users and time.monotonic() < deadline:
            if producer.done() and producer.exception():
                raise StreamrecError(f"demo: producer failed: {producer.exception()}")
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                for msg in messages:
                    body = orjson.loads(msg.value)
                    if not body.get("items"):
                        continue
                    body["items"] = body["items"][:max_items]
                    seen.add(body["user_id"])
                    print(format_recommendation(body, data.titles), flush=True)
    finally:
        # Ctrl-C must not wait for the producer's flush or the consumer's leave on a slow
        # broker (aiokafka waits up to its request timeout): a few seconds each at most
        producer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(producer, STOP_WAIT_S)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(consumer.stop(), STOP_WAIT_S)
    return len(seen)


def run_demo(users: int = 100, timeout_s: float = 300.0, rate: float = 500.0,
             max_items: int = 5, offline: bool = False) -> int:
    # Ctrl-C stops the demo even when it was started with SIGINT ignored (a background
    # job of a non-interactive shell), where Python installs no handler of its own
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _as_ctrl_c)
    data = find_data(offline=offline)
    print(f"demo: data is {data.origin} ({len(data.events)} events)")
    run_dir = Path(tempfile.mkdtemp(prefix="streamrec-demo-"))
    stack = Stack(run_dir / "stack")
    worker: WorkerProcess | None = None
    started = time.monotonic()
    try:
        kafka_port, redis_port = free_port(), free_port()
        print(f"demo: starting the embedded broker (:{kafka_port}) and Redis (:{redis_port})")
        stack.up(kafka_port=kafka_port, redis_port=redis_port)
        settings = Settings.model_validate({
            "kafka": {"bootstrap": f"127.0.0.1:{kafka_port}"},
            "redis": {"url": f"redis://127.0.0.1:{redis_port}/0"},
        })
        env = dict(os.environ,
                   STREAMREC_KAFKA__BOOTSTRAP=settings.kafka.bootstrap,
                   STREAMREC_REDIS__URL=settings.redis.url,
                   STREAMREC_METRICS__PORT=str(free_port()),
                   STREAMREC_WORKER__DATA_DIR=str(run_dir / "faust"))
        worker = WorkerProcess(env, run_dir)
        print(f"demo: starting a worker (log: {worker.log_path})")
        worker.start().wait_ready()
        print(f"demo: worker ready after {time.monotonic() - started:.1f} s; replaying at "
              f"{rate:.0f} events/s until {users} users have recommendations\n")
        shown = asyncio.run(_show(settings, data, users, timeout_s, rate, max_items))
        print(f"\ndemo: recommendations shown for {shown} distinct users in "
              f"{time.monotonic() - started:.1f} s")
        return 0 if shown >= users else 1
    except KeyboardInterrupt:
        print("\ndemo: interrupted, stopping everything")
        return 130
    finally:
        if worker is not None:
            worker.stop()
        stack.down()
        shutil.rmtree(run_dir, ignore_errors=True)
        print("demo: stopped the worker, the broker and Redis")
