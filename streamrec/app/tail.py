"""``streamrec tail``: print recommendations (or any topic) as they arrive, readable."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from recmodels.datasets import read_titles
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
