"""Python client of streamrec: publish behaviour events, read recommendation lists.

    from streamrec.client import EventProducer, RecommendationReader

    with EventProducer("127.0.0.1:9092") as producer:
        producer.send("alice", "sku-1", "view")
        last = producer.send("alice", "sku-2", "purchase")
    with RecommendationReader("127.0.0.1:9092", from_beginning=True) as reader:
        print(reader.wait_for("alice", trigger=last, timeout_s=30).items)

Asyncio programs use :class:`AsyncEventProducer` and :class:`AsyncRecommendationReader`.
Workers with pseudonymous ids (``privacy.pseudonym_key``) publish lists under
``pseudonym(user_id, key)``; readers given ``pseudonym_key=`` take raw ids.
"""

from streamrec.client.producer import AsyncEventProducer, DeliveryFailed, EventProducer, event
from streamrec.client.reader import AsyncRecommendationReader, RecommendationReader
from streamrec.contracts.recommendation import ItemReason, Recommendation, RecommendedItem
from streamrec.kernel.errors import InvalidEvent
from streamrec.kernel.pseudonyms import pseudonym

__all__ = ["AsyncEventProducer", "AsyncRecommendationReader", "DeliveryFailed",
           "EventProducer", "InvalidEvent", "ItemReason", "Recommendation",
           "RecommendationReader", "RecommendedItem", "event", "pseudonym"]
