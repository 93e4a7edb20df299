"""A Faust app whose consumers wait at most ``fetch_max_wait_ms`` for data.

Faust's aiokafka driver fixes the fetch wait at 1500 ms. Brokers that hold a fetch for
its whole max wait (the embedded Tansu does) then add up to 1.5 s per hop; a short wait
keeps event-to-recommendation latency in milliseconds.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as driver
from faust.types import TransportT


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = getattr(self.app, "fetch_max_wait_ms", 20)
        return consumer


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(driver.Transport):
    Consumer = _Consumer


class App(faust.App):
    fetch_max_wait_ms: int = 20

    def _new_transport(self) -> TransportT:
        return _Transport(self.conf.broker_consumer, self)
