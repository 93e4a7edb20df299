"""A team's own Faust agent and table on the worker app: purchases per user.

Run it with the worker (``worker.consumer = faust``; the batch consumer does not run
Faust agents)::

    STREAMREC_WORKER__CONSUMER=faust \
    STREAMREC_WORKER__EXTENSIONS='["examples.purchase_counter:install"]' streamrec worker

and ask ``GET /examples/purchases/{user_id}`` on the worker's HTTP port. The agent reads the
purchase topic beside the event path; Faust commits an offset once both have acknowledged
it. The table is keyed by user id, the topic's key, so it needs no repartitioning.
"""

from __future__ import annotations

from typing import Any

import faust
import orjson
from faust.web import Request, Response, View

from streamrec.kernel.settings import Settings


def install(app: faust.App, settings: Settings) -> None:
    purchases = app.Table("purchases-by-user", default=int,
                          partitions=settings.kafka.partitions)
    topic = app.topic(settings.topics.purchase, key_serializer="raw",
                      value_serializer="raw")

    @app.agent(topic, name="purchase-counter")
    async def count(stream: faust.StreamT[Any]) -> None:
        async for value in stream:
            try:
                event = orjson.loads(value)
            except orjson.JSONDecodeError:
                continue  # the event path dead-letters it
            if isinstance(event, dict) and isinstance(event.get("user_id"), str):
                purchases[event["user_id"]] += 1

    @app.page("/examples/purchases/{user_id}")
    class PurchasesView(View):
        async def get(self, request: Request, user_id: str) -> Response:
            return self.json({"user_id": user_id, "purchases": purchases[user_id]})
