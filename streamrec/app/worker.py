"""The one place that wires a worker process: settings -> clients -> Faust app -> the
role's consumer and work. One builder per role:

* ``stream``: the event path (:mod:`streams.pipeline`) over the three input topics; it
  announces each changed user on ``streamrec.user-updates``;
* ``serving``: lists for the users on ``streamrec.user-updates`` (:mod:`serving.publisher`);
* ``all``: the event path with serving inline (one Kafka hop per event).

``worker.consumer`` picks how the role's topics are consumed: ``batch`` (an aiokafka
consumer below Faust, :mod:`streamrec.kernel.consumer`) or ``faust`` (a Faust agent,
:mod:`streamrec.kernel.faust_source`). Both feed the same work.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import faust
import torch
from redis.asyncio import Redis
from threadpoolctl import threadpool_limits

from infra.stack import port_is_free
from recmodels.online import encoder_dtype
from serving.console import Publish, install_console
from serving.publisher import serve, serve_inline
from serving.recommender import MARKOV_VERSION, Recommender
from serving.web import Access, install_views
from streamrec.app.faust_app import App, install_extensions, make_app
from streamrec.kernel import metrics
from streamrec.kernel.allocator import keep_freed_memory
from streamrec.kernel.clients import redis_client
from streamrec.kernel.consumer import Batch, BatchConsumer, Source
from streamrec.kernel.errors import StreamrecError
from streamrec.kernel.faust_source import FaustSource
from streamrec.kernel.outbox import Outbox
from streamrec.kernel.retry import probe_redis, redis_call
from streamrec.kernel.settings import Settings
from streamrec.kernel.topics import ensure_topics, input_topics
from streamrec.state.catalog import ItemCatalog
from streamrec.state.erasure import Eraser
from streamrec.state.keys import Keys
from streamrec.state.model_holder import ModelHolder
from streamrec.state.model_store import ModelStore
from streamrec.state.reader import ServingStateReader
from streamrec.state.store import ApplyConfig, RedisStateStore
from streamrec.state.user_writes import UserWriter
from streamrec.state.users import user_profile
from streamrec.state.watermarks import reset_watermarks
from streams.erasure import process_erasures
from streams.pipeline import EventPath, process_events, publish_updates
from streams.user_vectors import UserVectorWriter

log = logging.getLogger(__name__)

ROLES = ("all", "stream", "serving")
ERASURE_BATCH = 500  # erasure requests per batch
STOP_TIMEOUT_S = 10.0  # a stopping worker waits this long at most for its consumer
Work = Callable[[AsyncIterator[Batch]], Awaitable[None]]


def app_id_for(settings: Settings, role: str) -> str:
    """Consumer group of a role: stream (and all) use the app id, serving its own group."""
    return f"{settings.worker.app_id}-serving" if role == "serving" else settings.worker.app_id


@dataclass
class Parts:
    """What every role is built from."""

    settings: Settings
    role: str
    app: App
    redis: Redis
    keys: Keys
    models: ModelHolder
    outbox: Outbox
    ready: Callable[[], None]


@dataclass(frozen=True)
class Role:
    """A role's input topics, batch size, and its work given the source it consumes."""

    topics: list[str]
    batch_size: int
    work: Callable[[Source], Work]
    recommender: Recommender | None


def _recommender(p: Parts) -> Recommender:
    sv = p.settings.serving
    reader = ServingStateReader(p.redis, p.keys, history=sv.markov_history,
                                row_size=p.settings.state.markov_row_size,
                                popular=4 * sv.top_n + sv.exclude_recent + 50)
    metrics.MODEL_VERSION.labels(version=MARKOV_VERSION).set(1)
    return Recommender(reader, ItemCatalog(p.redis, p.keys), sv,
                       clock_ms=lambda: int(time.time() * 1000), models=p.models)


def _event_path(p: Parts, recommender: Recommender | None) -> Role:
    """Roles ``stream`` and ``all``: the three input topics through the event path."""
    s, w = p.settings, p.settings.worker
    topics = input_topics(s)
    path = EventPath(
        type_by_topic={topic: kind for kind, topic in topics.items()},
        store=RedisStateStore(p.redis, ApplyConfig.from_settings(p.keys.prefix, w.app_id,
                                                                 s.state)),
        outbox=p.outbox, dlq_topic=s.topics.dlq,
        announce=serve_inline(recommender, s.topics.recommendations)
        if recommender is not None else publish_updates(s.topics.user_updates),
        vectors=UserVectorWriter(UserWriter(p.redis, p.keys), p.models),
        announce_stores_vectors=recommender is not None,
        read_ahead=recommender.read_ahead if recommender is not None else None,
        idle_ms=w.max_idle_ms, hold_limit=w.hold_limit,
        pseudonymize=s.privacy.pseudonymizer())
    _watch_topics(p)

    def work(source: Source) -> Work:
        return partial(process_events, path=path, acknowledge=source.acknowledge,
                       hold=source.hold, rewind=source.rewind)
    return Role(list(topics.values()), s.state.batch_size, work, recommender)


def build_stream(p: Parts) -> Role:
    return _event_path(p, None)


def build_all(p: Parts) -> Role:
    return _event_path(p, _recommender(p))


def build_serving(p: Parts) -> Role:
    """Role ``serving``: lists for the users of ``streamrec.user-updates``."""
    recommender = _recommender(p)
    t = p.settings.topics

    def work(source: Source) -> Work:
        return partial(serve, announce=serve_inline(recommender, t.recommendations),
                       outbox=p.outbox, acknowledge=source.acknowledge)
    return Role([t.user_updates], p.settings.serving.batch_size, work, recommender)


BUILDERS: dict[str, Callable[[Parts], Role]] = {
    "all": build_all, "stream": build_stream, "serving": build_serving}


def _watch_topics(p: Parts) -> None:
    """Recreate input topics a broker lost, forgetting their watermarks."""
    s = p.settings

    async def forget_watermarks(missing: list[str]) -> None:
        await redis_call("reset_watermarks", partial(reset_watermarks, p.redis, p.keys,
                                                     s.worker.app_id, missing))

    @p.app.timer(interval=s.worker.topic_check_interval_s)  # type: ignore[untyped-decorator]
    async def recreate_lost_topics() -> None:
        try:
            created = await ensure_topics(s, before_create=forget_watermarks)
        except Exception as exc:  # broker down: the consumer reconnects by itself
            log.debug("topic check failed error=%s", type(exc).__name__)
            return
        if created:
            log.warning("topics were missing and are recreated names=%s "
                        "(broker lost its data?)", ",".join(created))


def _parts(settings: Settings, role: str, ready_file: Path | None) -> Parts:
    app = make_app(settings, app_id_for(settings, role))
    keys = Keys(settings.redis.prefix)
    redis = redis_client(settings.redis)
    models = ModelHolder(ModelStore(redis, keys), encoder_dtype(settings.worker.encoder_precision))

    def ready() -> None:
        metrics.READINESS.mark_ready()
        if ready_file is not None:
            ready_file.parent.mkdir(parents=True, exist_ok=True)
            ready_file.write_text(str(int(time.time() * 1000)))
        log.info("worker ready app_id=%s role=%s consumer=%s", app.conf.id, role,
                 settings.worker.consumer)

    @app.timer(interval=settings.serving.model_poll_s)  # type: ignore[untyped-decorator]
    async def refresh_model() -> None:
        try:
            await models.refresh()
        except Exception as exc:  # Redis away or a bad version: keep serving the current one
            log.warning("model refresh failed error=%s: %s", type(exc).__name__, exc)

    return Parts(settings, role, app, redis, keys, models, Outbox(app.maybe_start_producer),
                 ready)


def _publisher(p: Parts) -> Publish:
    """The console's "try it": one event to its input topic, keyed by user, delivered."""
    topics = input_topics(p.settings)

    async def publish(kind: str, key: bytes, value: bytes) -> None:
        producer = await p.app.maybe_start_producer()
        delivered = await producer.send(topics[kind], key, value, None, None, None)
        await delivered
    return publish


def _source(p: Parts, role: Role) -> Source:
    s = p.settings
    if s.worker.consumer == "faust":
        source = FaustSource(role.topics, role.batch_size, s.worker.commit_interval_s,
                             s.worker.fetch_max_wait_ms / 1000)
        source.install(p.app, f"{p.role}-input")
        p.app.on_partitions_assigned.connect(_on_assigned(p.ready))
        return source
    return BatchConsumer(s, app_id_for(s, p.role), role.topics, role.batch_size, p.ready)


def _on_assigned(ready: Callable[[], None]) -> Callable[..., Awaitable[None]]:
    async def receiver(*_: Any, **__: Any) -> None:
        ready()
    return receiver


def build_app(settings: Settings, role: str = "all", ready_file: Path | None = None) -> faust.App:
    if role not in ROLES:
        raise StreamrecError(f"worker role {role!r}: expected one of {', '.join(ROLES)}")
    p = _parts(settings, role, ready_file)
    spec = BUILDERS[role](p)
    source = _source(p, spec)
    work = spec.work(source)
    consuming: list[asyncio.Task[Any]] = []

    @p.app.task  # type: ignore[untyped-decorator]
    async def consume_input() -> None:
        task = asyncio.current_task()
        if task is not None:
            consuming.append(task)
        try:  # serve with the current model from the first batch on
            await p.models.refresh()
        except Exception as exc:
            log.warning("model load failed error=%s: %s", type(exc).__name__, exc)
        if not isinstance(source, BatchConsumer):  # Faust runs its consumer and agent
            await work(source.batches())
            return
        await source.start()
        try:
            await work(source.batches())
        finally:  # commits what is done, leaves the group: its partitions move at once
            await source.stop()

    erasures = None
    if role != "serving":  # the state's roles forget users on request
        erasures = BatchConsumer(settings, f"{settings.worker.app_id}-erasure",
                                 [settings.topics.erasure], ERASURE_BATCH)

        @p.app.task  # type: ignore[untyped-decorator]
        async def consume_erasures() -> None:
            task = asyncio.current_task()
            if task is not None:
                consuming.append(task)
            assert erasures is not None
            await erasures.start()
            try:
                await process_erasures(erasures.batches(), Eraser(p.redis, p.keys), p.outbox,
                                       settings.topics.recommendations, erasures.acknowledge,
                                       settings.privacy.pseudonymizer())
            finally:
                await erasures.stop()

    async def stop_consuming() -> None:
        """Stop taking batches (the one in hand stays uncommitted, so it comes again) and
        leave the group while the producer is still up."""
        source.request_stop()
        if erasures is not None:
            erasures.request_stop()
        for task in consuming:
            task.cancel()
        if consuming:
            await asyncio.wait(consuming, timeout=STOP_TIMEOUT_S)

    p.app.add_before_stop(stop_consuming)
    pseudonymize = settings.privacy.pseudonymizer()
    token = settings.metrics.token
    access = Access(token.get_secret_value() if token else None, settings.metrics.open_health)
    install_views(p.app, role, spec.recommender,
                  lambda: p.models.version or MARKOV_VERSION, pseudonymize, access)
    if spec.recommender is not None and settings.serving.console:
        install_console(p.app, partial(user_profile, p.redis, p.keys),
                        _publisher(p) if settings.serving.console_try_it else None,
                        pseudonymize, access)

    @p.app.timer(interval=settings.worker.lag_interval_s)  # type: ignore[untyped-decorator]
    async def export_consumer_lag() -> None:
        await _export_lag(source)
        await probe_redis(p.redis)

    install_extensions(p.app, settings)
    return p.app


async def _export_lag(source: Source) -> None:
    """Records in the log after the last one read, per assigned partition."""
    try:
        lags = await asyncio.wait_for(source.lag(), 10.0)
    except Exception as exc:  # broker away or rebalancing: keep the last values
        log.debug("lag check failed error=%s", type(exc).__name__)
        return
    metrics.CONSUMER_LAG.clear()
    for tp, lag in lags.items():
        metrics.CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)


def _check_port_free(port: int) -> None:
    if port and not port_is_free(port):
        raise StreamrecError(f"worker: port {port} for /metrics and HTTP is taken; set "
                             "STREAMREC_METRICS__PORT to a free port (0 disables HTTP)")


def run_worker(settings: Settings, role: str = "all", ready_file: Path | None = None) -> None:
    """Create missing topics, start /metrics, then hand over to Faust's worker."""
    if ready_file is not None:
        ready_file.unlink(missing_ok=True)
    if settings.worker.event_loop == "uvloop":
        import uvloop  # noqa: PLC0415

        uvloop.install()
    keep_freed_memory(settings.worker.malloc_keep_mb)
    torch.set_num_threads(settings.worker.torch_threads)
    # numpy's OpenBLAS starts a thread per core whose idle threads spin after each of the
    # many small products of batch scoring, taking a core from Redis and the broker: the
    # event loop is single-threaded anyway (measured: 0.093 -> 0.034 CPU s per 1,000 events).
    threadpool_limits(settings.worker.torch_threads, user_api="blas")
    Path(settings.worker.data_dir).mkdir(parents=True, exist_ok=True)
    app = build_app(settings, role, ready_file)
    asyncio.run(ensure_topics(settings))
    _check_port_free(settings.metrics.port)
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True)
    _tune_gc()
    worker.execute_from_commandline()


def _tune_gc() -> None:
    """The imports (Faust, PyTorch) leave ~10^6 long-lived objects that every full
    collection would walk again; freeze them, and collect young objects less often (each
    batch allocates many short-lived ones, which reference counting frees anyway)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
