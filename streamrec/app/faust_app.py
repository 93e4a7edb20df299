"""The worker's Faust app: web views, timers, the producer, and (``worker.consumer =
faust``) the agents that consume; plus the teams' own agents and tables
(``worker.extensions``)."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from faust.app.base import BootStrategy

from streamrec.kernel.clients import kafka_ssl_context
from streamrec.kernel.errors import StreamrecError
from streamrec.kernel.settings import Settings

Extension = Callable[[faust.App, Settings], None]


def _credentials(settings: Settings) -> Any:
    k = settings.kafka
    if k.sasl_mechanism:
        password = k.sasl_password.get_secret_value() if k.sasl_password else ""
        return faust.SASLCredentials(username=k.sasl_username or "", password=password,
                                     mechanism=k.sasl_mechanism,
                                     ssl_context=kafka_ssl_context(k))
    context = kafka_ssl_context(k)
    return faust.SSLCredentials(context) if context is not None else None


class _BatchBoot(BootStrategy):
    # worker.consumer = batch: the input is consumed below Faust's streams
    # (streamrec.kernel.consumer); Faust runs the web views, the timers and the producer.
    enable_kafka_consumer = False


class App(faust.App):
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


class BatchApp(App):
    BootStrategy = _BatchBoot


def make_app(settings: Settings, group: str) -> App:
    """The app of a worker whose consumer group is ``group``."""
    w = settings.worker
    cls = App if w.consumer == "faust" else BatchApp
    return cls(
        group,
        broker=[f"kafka://{host}" for host in settings.kafka.bootstrap.split(",")],
        broker_credentials=_credentials(settings),
        web_enabled=settings.metrics.port > 0,
        web_port=settings.metrics.port or 6066,
        web_bind=settings.metrics.bind,
        web_host=w.web_host,
        datadir=w.data_dir,
        autodiscover=False,
        topic_partitions=settings.kafka.partitions,
        topic_allow_declare=True,
        broker_commit_interval=w.commit_interval_s,
        # the group's timeouts of the batch consumer: a joining or leaving worker gets its
        # partitions within seconds (Faust's defaults wait up to a minute)
        broker_rebalance_timeout=w.rebalance_timeout_s,
        broker_session_timeout=w.session_timeout_s,
        broker_heartbeat_interval=min(3.0, w.session_timeout_s / 3),
        consumer_auto_offset_reset=w.offset_reset,
        stream_wait_empty=False,
        # A producer batch per partition that is full makes the next send wait for a
        # broker round trip: room for a whole batch of lists (~1 KiB each) avoids that.
        producer_max_batch_size=512 * 1024,
        # No linger: a batch's lists are handed to the producer without yielding to the
        # loop, so they leave in one produce request anyway; a linger only delays them.
        producer_linger_ms=0,
    )


def load_extension(spec: str) -> Extension:
    """``module:function`` of ``worker.extensions``."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise StreamrecError(f"worker.extensions entry {spec!r}: expected 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise StreamrecError(f"worker.extensions entry {spec!r}: cannot import "
                             f"{module_name!r}: {exc}") from exc
    function = getattr(module, attr, None)
    if not callable(function):
        raise StreamrecError(f"worker.extensions entry {spec!r}: {module_name} has no "
                             f"function {attr!r}")
    return function  # type: ignore[no-any-return]


def install_extensions(app: faust.App, settings: Settings) -> None:
    """Let each extension add its agents, tables, timers and views to the app."""
    for spec in settings.worker.extensions:
        load_extension(spec)(app, settings)
