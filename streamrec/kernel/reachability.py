"""Kafka and Redis at start: wait for them with capped backoff, saying once what is awaited,
where, and which setting sets the address; or, for one-shot commands, fail at once with
that same line. Never a traceback for a service that is not up yet."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from aiokafka.client import AIOKafkaClient
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from streamrec.kernel.clients import aiokafka_options, redis_client
from streamrec.kernel.errors import StreamrecError
from streamrec.kernel.settings import Settings

Need = Literal["kafka", "redis"]
PROBE_TIMEOUT_S = 5.0
MAX_BACKOFF_S = 1.0


class ServiceUnreachable(StreamrecError):
    """A service was not reachable within the connect timeout (names address and setting)."""


class ServiceRefused(StreamrecError):
    """A service answered but refused us (credentials): waiting would not help."""


@dataclass(frozen=True, slots=True)
class Service:
    name: str  # Kafka, Redis
    address: str  # shown to people: never credentials
    setting: str  # the environment variable that sets the address
    probe: Callable[[], Awaitable[None]]  # returns when reachable, raises otherwise

    def line(self, reason: str) -> str:
        return f"{self.name} at {self.address} ({self.setting}) is not reachable: {reason}"


def redis_address(url: str) -> str:
    """The Redis URL without user name or password."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def kafka_service(settings: Settings) -> Service:
    async def probe() -> None:
        client = AIOKafkaClient(**aiokafka_options(settings.kafka),
                                request_timeout_ms=int(PROBE_TIMEOUT_S * 1000))
        quiet = logging.getLogger("aiokafka")  # it logs an ERROR per failed connection
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)
        try:
            await client.bootstrap()
        finally:
            quiet.setLevel(level)
            await client.close()

    return Service("Kafka", settings.kafka.bootstrap, "STREAMREC_KAFKA__BOOTSTRAP", probe)


def redis_service(settings: Settings) -> Service:
    async def probe() -> None:
        redis = redis_client(settings.redis)
        try:
            await redis.ping()
            try:
                cluster = await redis.info("cluster")
            except ResponseError:  # INFO not allowed for this ACL user, or renamed (managed
                cluster = {}  # services): cannot tell
        except AuthenticationError as exc:
            raise ServiceRefused(f"Redis at {redis_address(settings.redis.url)} refused the "
                                 "credentials (STREAMREC_REDIS__USERNAME, "
                                 f"STREAMREC_REDIS__PASSWORD): {exc}") from None
        except ResponseError as exc:
            if isinstance(exc, NoPermissionError) or "NOAUTH" in str(exc) \
                    or "WRONGPASS" in str(exc):
                raise ServiceRefused(f"Redis at {redis_address(settings.redis.url)} refused "
                                     "us (STREAMREC_REDIS__USERNAME, STREAMREC_REDIS__PASSWORD)"
                                     f": {exc}") from None
            raise
        finally:
            await redis.aclose()
        if cluster.get("cluster_enabled") in (1, "1"):
            raise ServiceRefused(
                f"Redis at {redis_address(settings.redis.url)} (STREAMREC_REDIS__URL) is a "
                "Redis Cluster node: the state step is one script over keys of several hash "
                "slots, so it needs a single Redis primary (with replicas if you like), not "
                "Redis Cluster; see docs/scaling.md")

    return Service("Redis", redis_address(settings.redis.url), "STREAMREC_REDIS__URL", probe)


def services(settings: Settings, needs: Sequence[Need]) -> list[Service]:
    made = {"kafka": kafka_service, "redis": redis_service}
    return [made[need](settings) for need in needs]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {PROBE_TIMEOUT_S:.0f} s"
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text.removeprefix(f"{name}: ")  # aiokafka's errors start with their own name
    return f"{name}: {text}" if text else name


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def wait_for(needed: Sequence[Service], timeout_s: float,
                   say: Callable[[str], None] = _say,
                   clock: Callable[[], float] = time.monotonic) -> None:
    """Return once every service answers. While one does not, say one line (once per
    service), retry with backoff doubling up to 1 s, and raise
    :class:`ServiceUnreachable` after ``timeout_s`` (0: one try, no waiting)."""
    started = clock()
    for service in needed:
        backoff, waiting_since = 0.25, None
        while True:
            try:
                await asyncio.wait_for(service.probe(), PROBE_TIMEOUT_S)
                break
            except ServiceRefused:
                raise
            except Exception as exc:  # every way of not being there yet
                reason = _reason(exc)
                left = timeout_s - (clock() - started)
                if left <= 0:
                    waited = f"; gave up after {timeout_s:.0f} s (--connect-timeout)" \
                        if timeout_s > 0 else ""
                    raise ServiceUnreachable(service.line(reason) + waited) from None
                if waiting_since is None:
                    waiting_since = clock()
                    say(f"waiting: {service.line(reason)}; retrying for up to "
                        f"{left:.0f} s (--connect-timeout)")
                await asyncio.sleep(min(backoff, left))
                backoff = min(backoff * 2, MAX_BACKOFF_S)
        if waiting_since is not None:
            say(f"{service.name} at {service.address} is up "
                f"(waited {clock() - waiting_since:.1f} s)")


def require(settings: Settings, needs: Sequence[Need], timeout_s: float = 0.0) -> None:
    """:func:`wait_for` the services a command needs, from synchronous code."""
    asyncio.run(wait_for(services(settings, needs), timeout_s))
