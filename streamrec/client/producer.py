"""Publishing events: validated before sending, keyed by user, to the topic of their type,
batched by the Kafka producer; delivery failures are reported, never dropped silently."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from streamrec.client.loop import LoopThread
from streamrec.contracts.event import EVENT_TYPES, decode_event
from streamrec.kernel.clients import aiokafka_options
from streamrec.kernel.errors import InvalidEvent, StreamrecError
from streamrec.kernel.settings import KafkaSettings, TopicSettings


class DeliveryFailed(StreamrecError):
    """Some events were not delivered; ``failures`` holds (event_id, error) of each."""

    def __init__(self, failures: list[tuple[str, str]]) -> None:
        first = "; ".join(f"{eid}: {err}" for eid, err in failures[:3])
        super().__init__(f"{len(failures)} event(s) not delivered (first: {first})")
        self.failures = failures


def event(user_id: str, item_id: str, type: str, *, ts: int | None = None,
          event_id: str | None = None, session_id: str | None = None,
          props: dict[str, Any] | None = None) -> tuple[str, bytes]:
    """(type, message value) of one event v1, checked by the ingest path's own rules:
    :class:`InvalidEvent` names the field at fault. ``ts`` defaults to now (epoch ms),
    ``event_id`` to a fresh UUID (two identical clicks in one millisecond stay two)."""
    _, raw = _message(user_id, item_id, type, ts=ts, event_id=event_id,
                      session_id=session_id, props=props)
    return type, raw


def _message(user_id: str, item_id: str, type: str, *, ts: int | None = None,
             event_id: str | None = None, session_id: str | None = None,
             props: dict[str, Any] | None = None) -> tuple[str, bytes]:
    """(event_id, message value), validated."""
    if type not in EVENT_TYPES:
        raise InvalidEvent("unknown_type", "type",
                           f"expected one of view, click, purchase, got {type!r}")
    body: dict[str, Any] = {
        "event_id": event_id or f"c-{uuid.uuid4().hex}", "user_id": user_id,
        "item_id": item_id, "type": type,
        "ts": int(time.time() * 1000) if ts is None else ts}
    if session_id is not None:
        body["session_id"] = session_id
    if props is not None:
        body["props"] = props
    raw = orjson.dumps(body)
    decoded = decode_event(raw, type)
    return decoded.event_id, raw


class AsyncEventProducer:
    """Events to their typed topics, keyed by user (asyncio)."""

    def __init__(self, bootstrap: str = "127.0.0.1:9092", *,
                 kafka: KafkaSettings | None = None, topics: TopicSettings | None = None,
                 linger_ms: int = 5, request_timeout_ms: int = 30_000) -> None:
        settings = kafka or KafkaSettings(bootstrap=bootstrap)
        names = topics or TopicSettings()
        self._topics = {"view": names.view, "click": names.click, "purchase": names.purchase}
        self._producer = AIOKafkaProducer(**aiokafka_options(settings), linger_ms=linger_ms,
                                          acks="all", request_timeout_ms=request_timeout_ms)
        self._pending: dict[str, asyncio.Future[Any]] = {}

    async def start(self) -> AsyncEventProducer:
        await self._producer.start()
        return self

    async def __aenter__(self) -> AsyncEventProducer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(self, user_id: str, item_id: str, type: str,
                   **fields: Any) -> str:
        """Validate and hand one event to the producer (it batches); returns its event_id.
        :meth:`flush` waits for delivery."""
        event_id, raw = _message(user_id, item_id, type, **fields)
        self._pending[event_id] = await self._producer.send(
            self._topics[type], raw, key=user_id.encode())
        return event_id

    async def flush(self) -> int:
        """Wait until every event sent so far is delivered; returns how many were. Raises
        :class:`DeliveryFailed` naming each one that was not."""
        pending, self._pending = self._pending, {}
        if not pending:
            return 0
        results = await asyncio.gather(*pending.values(), return_exceptions=True)
        failures = [(eid, f"{type(r).__name__}: {r}") for eid, r in zip(pending, results,
                                                                         strict=True)
                    if isinstance(r, BaseException)]
        if failures:
            raise DeliveryFailed(failures)
        return len(pending)

    async def close(self) -> None:
        """Flush, then stop the producer (also when the flush failed)."""
        try:
            await self.flush()
        finally:
            await self._producer.stop()


class EventProducer:
    """:class:`AsyncEventProducer` for code without an event loop."""

    def __init__(self, bootstrap: str = "127.0.0.1:9092", **options: Any) -> None:
        self._loop = LoopThread("streamrec-producer")
        self._async = self._loop.first(lambda: AsyncEventProducer(bootstrap, **options).start())

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, user_id: str, item_id: str, type: str, **fields: Any) -> str:
        return self._loop.run(self._async.send(user_id, item_id, type, **fields))

    def flush(self) -> int:
        return self._loop.run(self._async.flush())

    def close(self) -> None:
        self._loop.last(self._async.close())
