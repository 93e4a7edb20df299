"""Reading recommendation lists as typed :class:`Recommendation` messages."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streamrec.client.loop import LoopThread
from streamrec.contracts.recommendation import InvalidRecommendation, Recommendation
from streamrec.kernel.clients import aiokafka_options
from streamrec.kernel.errors import StreamrecError
from streamrec.kernel.pseudonyms import pseudonym
from streamrec.kernel.settings import KafkaSettings, TopicSettings

log = logging.getLogger(__name__)


class AsyncRecommendationReader:
    """Lists from the recommendations topic as they arrive (asyncio). ``from_beginning``:
    the compacted topic's backlog first (every user's last list), else only new ones.
    Messages that are not v1 recommendations are skipped and counted (``skipped``)."""

    def __init__(self, bootstrap: str = "127.0.0.1:9092", *,
                 kafka: KafkaSettings | None = None, topic: str | None = None,
                 from_beginning: bool = False, pseudonym_key: str | None = None) -> None:
        """``pseudonym_key``: the workers' ``privacy.pseudonym_key``, when they publish
        pseudonymous ids; :meth:`wait_for` then takes raw ids."""
        settings = kafka or KafkaSettings(bootstrap=bootstrap)
        self._topic = topic or TopicSettings().recommendations
        self._from_beginning = from_beginning
        self._consumer = AIOKafkaConsumer(**aiokafka_options(settings), group_id=None,
                                          enable_auto_commit=False, fetch_max_wait_ms=100,
                                          auto_offset_reset="earliest")
        self.skipped = 0
        self._key = pseudonym_key.encode() if pseudonym_key is not None else None

    async def start(self) -> AsyncRecommendationReader:
        """Connect, and fix where reading starts: the beginning, or the lists published
        from now on (resolved here, so none published after ``start`` is missed)."""
        await self._consumer.start()
        try:
            await self._consumer.topics()  # metadata of every topic
            partitions = self._consumer.partitions_for_topic(self._topic) or set()
            if not partitions:
                raise StreamrecError(f"topic {self._topic!r} does not exist (workers create "
                                     "it on start)")
            tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
            self._consumer.assign(tps)
            starts = await (self._consumer.beginning_offsets(tps) if self._from_beginning
                            else self._consumer.end_offsets(tps))
            for tp, offset in starts.items():
                self._consumer.seek(tp, offset)
        except BaseException:
            await self._consumer.stop()
            raise
        return self

    async def __aenter__(self) -> AsyncRecommendationReader:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._consumer.stop()

    async def next(self, timeout_s: float | None = None) -> Recommendation | None:
        """The next list, or None when none came within ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while deadline is None or loop.time() < deadline:
            wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - loop.time()))
            batch = await self._consumer.getmany(timeout_ms=int(wait * 1000), max_records=1)
            for records in batch.values():
                for record in records:
                    if record.value is None:  # a tombstone: the user's list was removed
                        continue
                    try:
                        return Recommendation.from_json(record.value)
                    except InvalidRecommendation as exc:
                        self.skipped += 1
                        log.warning("skipped a message at %s/%d@%d: %s", record.topic,
                                    record.partition, record.offset, exc)
        return None

    async def __aiter__(self) -> AsyncIterator[Recommendation]:
        while True:
            found = await self.next()
            if found is not None:
                yield found

    async def wait_for(self, user_id: str, *, trigger: str | None = None,
                       timeout_s: float = 30.0) -> Recommendation:
        """The first list for ``user_id`` (made by the event ``trigger``, when given);
        :class:`StreamrecError` when none came within ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        published_as = pseudonym(user_id, self._key) if self._key is not None else user_id
        while (left := deadline - loop.time()) > 0:
            found = await self.next(left)
            if found is not None and found.user_id == published_as and (
                    trigger is None or found.trigger_event_id == trigger):
                return found
        wanted = f" made by event {trigger}" if trigger else ""
        raise StreamrecError(f"no list for user {user_id!r}{wanted} within {timeout_s:.0f} s")


class RecommendationReader:
    """:class:`AsyncRecommendationReader` for code without an event loop."""

    def __init__(self, bootstrap: str = "127.0.0.1:9092", **options: Any) -> None:
        self._loop = LoopThread("streamrec-reader")
        self._async = self._loop.first(
            lambda: AsyncRecommendationReader(bootstrap, **options).start())

    def __enter__(self) -> RecommendationReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def skipped(self) -> int:
        return self._async.skipped

    def next(self, timeout_s: float | None = None) -> Recommendation | None:
        return self._loop.run(self._async.next(timeout_s))

    def wait_for(self, user_id: str, *, trigger: str | None = None,
                 timeout_s: float = 30.0) -> Recommendation:
        return self._loop.run(self._async.wait_for(user_id, trigger=trigger,
                                                   timeout_s=timeout_s))

    def close(self) -> None:
        self._loop.last(self._async.close())
