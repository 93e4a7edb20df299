"""Clients built from settings: Redis and the Kafka connection options."""

from __future__ import annotations

import ssl
from typing import Any

from redis.asyncio import Redis

from streamrec.kernel.settings import KafkaSettings, RedisSettings


def redis_client(settings: RedisSettings) -> Redis:
    """The async client of these settings (TLS when the URL is ``rediss://``)."""
    password = settings.password.get_secret_value() if settings.password else None
    tls: dict[str, Any] = {}
    if settings.url.startswith("rediss://"):
        tls = {"ssl_ca_certs": settings.ssl_ca_certs, "ssl_certfile": settings.ssl_certfile,
               "ssl_keyfile": settings.ssl_keyfile, "ssl_cert_reqs": "required"}
    return Redis.from_url(settings.url, username=settings.username, password=password,
                          decode_responses=False, health_check_interval=30, **tls)


def kafka_ssl_context(settings: KafkaSettings) -> ssl.SSLContext | None:
    if settings.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(cafile=settings.ssl_cafile)
    if settings.ssl_certfile:
        context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
    return context


def aiokafka_options(settings: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for aiokafka clients (bootstrap, security)."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap,
        "security_protocol": settings.security_protocol,
    }
    context = kafka_ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.sasl_mechanism:
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = (
            settings.sasl_password.get_secret_value() if settings.sasl_password else None
        )
    return options
