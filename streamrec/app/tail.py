"""``streamrec tail``: print recommendations (read through :mod:`streamrec.client`) or any
other topic as they arrive, readable."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from recmodels.datasets import read_titles
from streamrec.client import AsyncRecommendationReader
from streamrec.kernel.clients import aiokafka_options
from streamrec.kernel.settings import Settings


def format_recommendation(message: dict[str, Any], titles: dict[str, str]) -> str:
    def name(item_id: str) -> str:
        return titles.get(item_id, item_id)

    trigger = message.get("trigger") or {}
    items = message.get("items") or []
    lines = [f"user {message.get('user_id')}  model={message.get('model_version')}  "
             f"trigger={trigger.get('event_id')}  items={len(items)}"]
    for rank, item in enumerate(items, start=1):
        why = []
        for reason in item.get("reasons", []):
            if reason.get("kind") == "markov":
                why.append(f"after {name(reason.get('after', '?'))} p={reason.get('p')}")
            else:
                why.append(str(reason.get("kind")))
        lines.append(f"  {rank:2d}. {name(item['item_id'])}  "
                     f"score={item.get('score')}  ({'; '.join(why)})")
    return "\n".join(lines)


def format_message(value: bytes | None, titles: dict[str, str]) -> str:
    if value is None:
        return "(tombstone)"
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        return value.decode("utf-8", errors="replace")
    if isinstance(body, dict) and "items" in body and "user_id" in body:
        return format_recommendation(body, titles)
    return orjson.dumps(body).decode()


async def tail(settings: Settings, topic: str, titles: str | None = None,
               limit: int | None = None, from_beginning: bool = False,
               idle_exit_s: float | None = None) -> int:
    names = read_titles(Path(titles)) if titles else {}
    if topic == settings.topics.recommendations:
        return await _tail_lists(settings, names, limit, from_beginning, idle_exit_s)
    consumer = AIOKafkaConsumer(topic, **aiokafka_options(settings.kafka), group_id=None,
                                auto_offset_reset="earliest" if from_beginning else "latest",
                                fetch_max_wait_ms=100)
    await consumer.start()
    seen = 0
    last = time.monotonic()
    try:
        while limit is None or seen < limit:
            batch = await consumer.getmany(timeout_ms=200)
            if not batch:
                if idle_exit_s is not None and time.monotonic() - last > idle_exit_s:
                    break
                continue
            last = time.monotonic()
            for messages in batch.values():
                for msg in messages:
                    sys.stdout.write(format_message(msg.value, names) + "\n")
                    seen += 1
            sys.stdout.flush()
    except asyncio.CancelledError:
        pass
    finally:
        await consumer.stop()
    return seen


async def _tail_lists(settings: Settings, names: dict[str, str], limit: int | None,
                      from_beginning: bool, idle_exit_s: float | None) -> int:
    """The recommendations topic through the client: typed lists; messages that are not
    v1 lists are skipped and counted."""
    seen = 0
    last = time.monotonic()
    async with AsyncRecommendationReader(kafka=settings.kafka,
                                         topic=settings.topics.recommendations,
                                         from_beginning=from_beginning) as reader:
        with contextlib.suppress(asyncio.CancelledError):
            while limit is None or seen < limit:
                found = await reader.next(0.2)
                if found is None:
                    if idle_exit_s is not None and time.monotonic() - last > idle_exit_s:
                        break
                    continue
                last = time.monotonic()
                sys.stdout.write(format_recommendation(found.to_dict(), names) + "\n")
                sys.stdout.flush()
                seen += 1
        if reader.skipped:
            print(f"skipped {reader.skipped} message(s) that are not v1 recommendations",
                  file=sys.stderr)
    return seen
