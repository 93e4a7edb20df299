"""The one place that wires the worker process: settings -> clients -> Faust app -> agents."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import faust
import torch
from faust.app.base import BootStrategy
from threadpoolctl import threadpool_limits

from infra.stack import port_is_free
from recmodels.online import encoder_dtype
from serving.publisher import serve, serve_inline
from serving.recommender import MARKOV_VERSION, Recommender
from serving.web import install_views
from streamrec.kernel import metrics
from streamrec.kernel.allocator import keep_freed_memory
from streamrec.kernel.clients import kafka_ssl_context, redis_client
from streamrec.kernel.consumer import Batch, BatchConsumer, consume
from streamrec.kernel.errors import StreamrecError
from streamrec.kernel.outbox import Outbox
from streamrec.kernel.retry import probe_redis, redis_call
from streamrec.kernel.settings import Settings
from streamrec.kernel.topics import ensure_topics, input_topics
from streamrec.state.catalog import ItemCatalog
from streamrec.state.keys import Keys
from streamrec.state.model_holder import ModelHolder
from streamrec.state.model_store import ModelStore
from streamrec.state.reader import ServingStateReader
from streamrec.state.store import ApplyConfig, RedisStateStore
from streamrec.state.user_writes import UserWriter
from streamrec.state.watermarks import reset_watermarks
from streams.pipeline import EventPath, ReadAhead, process_events, publish_updates
from streams.user_vectors import UserVectorWriter

log = logging.getLogger(__name__)


def _credentials(settings: Settings) -> Any:
    k = settings.kafka
    if k.sasl_mechanism:
        password = k.sasl_password.get_secret_value() if k.sasl_password else ""
        return faust.SASLCredentials(username=k.sasl_username or "", password=password,
                                     mechanism=k.sasl_mechanism,
                                     ssl_context=kafka_ssl_context(k))
    context = kafka_ssl_context(k)
    return faust.SSLCredentials(context) if context is not None else None


class _Boot(BootStrategy):
    # The worker's input is consumed below Faust's streams (streamrec.kernel.consumer); Faust runs
    # the web views, the timers and the producer.
    enable_kafka_consumer = False


class App(faust.App):
    BootStrategy = _Boot
    _before_stop: list[Callable[[], Awaitable[None]]] | None = None

    def add_before_stop(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` when the app stops, before its producer and web server stop (Faust
        stops those before it cancels the app's tasks)."""
        if self._before_stop is None:
            self._before_stop = []
        self._before_stop.append(hook)

    async def on_stop(self) -> None:
        for hook in self._before_stop or []:
            await hook()
        await super().on_stop()


ROLES = ("all", "stream", "serving")
STOP_TIMEOUT_S = 10.0  # a stopping worker waits this long at most for its consumer


def app_id_for(settings: Settings, role: str) -> str:
    """Consumer group of a role: stream (and all) use the app id, serving its own group."""
    return f"{settings.worker.app_id}-serving" if role == "serving" else settings.worker.app_id


def build_app(settings: Settings, role: str = "all", ready_file: Path | None = None) -> faust.App:
    if role not in ROLES:
        raise StreamrecError(f"worker role {role!r}: expected one of {', '.join(ROLES)}")
    w = settings.worker
    app = App(
        app_id_for(settings, role),
        broker=[f"kafka://{host}" for host in settings.kafka.bootstrap.split(",")],
        broker_credentials=_credentials(settings),  # the producer's
        web_enabled=settings.metrics.port > 0,
        web_port=settings.metrics.port or 6066,
        web_bind="0.0.0.0",  # noqa: S104
        web_host=settings.worker.web_host,
        datadir=w.data_dir,
        autodiscover=False,
        # A producer batch per partition that is full makes the next send wait for a
        # broker round trip: room for a whole batch of lists (~1 KiB each) avoids that.
        producer_max_batch_size=512 * 1024,
        # No linger: a batch's lists are handed to the producer without yielding to the
        # loop, so they leave in one produce request anyway; a linger only delays them.
        producer_linger_ms=0,
    )
    t = settings.topics
    keys = Keys(settings.redis.prefix)
    redis = redis_client(settings.redis)
    st, sv = settings.state, settings.serving
    models = ModelHolder(ModelStore(redis, keys), encoder_dtype(w.encoder_precision))
    outbox = Outbox(app.maybe_start_producer)

    @app.timer(interval=sv.model_poll_s)  # type: ignore[untyped-decorator]
    async def refresh_model() -> None:
        try:
            await models.refresh()
        except Exception as exc:  # Redis away or a bad version: keep serving the current one
            log.warning("model refresh failed error=%s: %s", type(exc).__name__, exc)

    recommender: Recommender | None = None
    read_ahead: ReadAhead | None = None
    if role in ("all", "serving"):
        reader = ServingStateReader(redis, keys, history=sv.markov_history,
                                    row_size=settings.state.markov_row_size,
                                    popular=4 * sv.top_n + sv.exclude_recent + 50)
        recommender = Recommender(reader, ItemCatalog(redis, keys), sv,
                                  clock_ms=lambda: int(time.time() * 1000), models=models)
        metrics.MODEL_VERSION.labels(version=MARKOV_VERSION).set(1)
        read_ahead = reader.read_ahead

    def ready() -> None:
        metrics.READINESS.mark_ready()
        if ready_file is not None:
            ready_file.parent.mkdir(parents=True, exist_ok=True)
            ready_file.write_text(str(int(time.time() * 1000)))
        log.info("worker ready app_id=%s role=%s", app.conf.id, role)

    work: Callable[[AsyncIterator[Batch]], Awaitable[None]]
    if role in ("all", "stream"):
        consumer = BatchConsumer(settings, app_id_for(settings, role),
                                 list(input_topics(settings).values()), st.batch_size, ready)
        announce = serve_inline(recommender, t.recommendations) \
            if recommender is not None else publish_updates(t.user_updates)
        path = EventPath(
            type_by_topic={topic: kind for kind, topic in input_topics(settings).items()},
            store=RedisStateStore(redis, ApplyConfig.from_settings(keys.prefix, w.app_id, st)),
            outbox=outbox, dlq_topic=t.dlq, announce=announce,
            vectors=UserVectorWriter(UserWriter(redis, keys), models),
            announce_stores_vectors=recommender is not None, read_ahead=read_ahead,
            idle_ms=w.max_idle_ms, hold_limit=w.hold_limit)
        work = partial(process_events, path=path, acknowledge=consumer.done.acknowledge,
                       hold=consumer.hold, rewind=consumer.rewind)

        async def forget_watermarks(missing: list[str]) -> None:
            await redis_call("reset_watermarks",
                             partial(reset_watermarks, redis, keys, w.app_id, missing))

        @app.timer(interval=w.topic_check_interval_s)  # type: ignore[untyped-decorator]
        async def recreate_lost_topics() -> None:
            try:
                created = await ensure_topics(settings, before_create=forget_watermarks)
            except Exception as exc:  # broker down: the consumer reconnects by itself
                log.debug("topic check failed error=%s", type(exc).__name__)
                return
            if created:
                log.warning("topics were missing and are recreated names=%s "
                            "(broker lost its data?)", ",".join(created))
    else:
        if recommender is None:  # role serving always builds one above
            raise StreamrecError("worker role serving: no recommender")
        consumer = BatchConsumer(settings, app_id_for(settings, role), [t.user_updates],
                                 sv.batch_size, ready)
        work = partial(serve, announce=serve_inline(recommender, t.recommendations),
                       outbox=outbox, acknowledge=consumer.done.acknowledge)

    consuming: list[asyncio.Task[Any]] = []

    @app.task  # type: ignore[untyped-decorator]
    async def consume_input() -> None:
        task = asyncio.current_task()
        if task is not None:
            consuming.append(task)
        try:  # serve with the current model from the first batch on
            await models.refresh()
        except Exception as exc:
            log.warning("model load failed error=%s: %s", type(exc).__name__, exc)
        await consume(consumer, work)

    async def stop_consuming() -> None:
        """Stop taking batches (the one in hand stays uncommitted, so it comes again) and
        leave the group while the producer is still up."""
        consumer.request_stop()
        for task in consuming:
            task.cancel()
        if consuming:
            await asyncio.wait(consuming, timeout=STOP_TIMEOUT_S)

    app.add_before_stop(stop_consuming)

    install_views(app, role, recommender, lambda: models.version or MARKOV_VERSION)

    @app.timer(interval=w.lag_interval_s)  # type: ignore[untyped-decorator]
    async def export_consumer_lag() -> None:
        await _export_lag(consumer)
        await probe_redis(redis)

    return app


async def _export_lag(consumer: BatchConsumer) -> None:
    """Records in the log after the last one read, per assigned partition."""
    try:
        lags = await asyncio.wait_for(consumer.lag(), 10.0)
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
