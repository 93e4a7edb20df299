"""Creates the topics streamrec uses when they are missing."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streamrec.kernel.clients import aiokafka_options
from streamrec.kernel.settings import Settings

log = logging.getLogger(__name__)


def input_topics(settings: Settings) -> dict[str, str]:
    """Event type -> the input topic that carries it."""
    t = settings.topics
    return {"view": t.view, "click": t.click, "purchase": t.purchase}


def topic_names(settings: Settings) -> list[str]:
    t = settings.topics
    return [*input_topics(settings).values(), t.dlq, t.user_updates, t.recommendations,
            t.model_updates, t.erasure]


async def ensure_topics(settings: Settings,
                        before_create: Callable[[list[str]], Awaitable[None]] | None = None
                        ) -> list[str]:
    """Create missing topics; return the names created. ``before_create`` runs first with
    the missing names (the worker resets watermarks of a topic that is about to be a new,
    empty log: a broker that lost its data, like the in-memory embedded one)."""
    admin = AIOKafkaAdminClient(**aiokafka_options(settings.kafka))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in topic_names(settings) if name not in existing]
        if missing and before_create is not None:
            await before_create(missing)
        created = []
        for name in missing:
            config = {"cleanup.policy": "compact"} if name == settings.topics.recommendations \
                else {}
            try:
                await admin.create_topics([NewTopic(name, settings.kafka.partitions, 1,
                                                    topic_configs=config)])
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        if created:
            log.info("topics created names=%s partitions=%d", ",".join(created),
                     settings.kafka.partitions)
        return created
    finally:
        await admin.close()
