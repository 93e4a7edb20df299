"""Retrying Redis work through outages: capped backoff, one log line per outage."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError

from streamrec.kernel import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")
TRANSIENT = (ConnectionError, TimeoutError, BusyLoadingError, OSError)


async def probe_redis(redis: Any) -> bool:
    """One PING; sets ``streamrec_redis_up`` (so idle processes report Redis too)."""
    try:
        await redis.ping()
    except TRANSIENT:
        metrics.REDIS_UP.set(0)
        return False
    metrics.REDIS_UP.set(1)
    return True


async def redis_call(op: str, fn: Callable[[], Awaitable[T]], max_backoff_s: float = 2.0) -> T:
    """Run ``fn`` until it succeeds; nothing is acknowledged meanwhile (the caller waits)."""
    backoff = 0.05
    outage_started: float | None = None
    while True:
        start = time.perf_counter()
        try:
            result = await fn()
        except TRANSIENT as exc:
            metrics.REDIS_UP.set(0)
            if outage_started is None:
                outage_started = time.monotonic()
                log.warning("redis unavailable op=%s error=%s; retrying with backoff", op,
                            type(exc).__name__)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff_s)
            continue
        metrics.REDIS_SECONDS.labels(op=op).observe(time.perf_counter() - start)
        metrics.REDIS_UP.set(1)
        if outage_started is not None:
            log.warning("redis back op=%s outage_s=%.1f", op, time.monotonic() - outage_started)
        return result
