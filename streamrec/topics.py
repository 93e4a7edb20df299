"""Creates the topics streamrec uses when they are missing."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streamrec.clients import aiokafka_options
from streamrec.settings import Settings

log = logging.getLogger(__name__)


def topic_names(settings: Settings) -> list[str]:
    t = settings.topics
    return [t.view, t.click, t.purchase, t.dlq, t.events, t.user_updates, t.recommendations,
            t.model_updates]


async def ensure_topics(settings: Settings) -> list[str]:
    """Create missing topics; return the names created."""
    admin = AIOKafkaAdminClient(**aiokafka_options(settings.kafka))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in topic_names(settings) if name not in existing]
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
