"""The worker's consumer: which partitions a worker gets, and which offsets it commits."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition

from streamrec.kernel.consumer import ASSIGNORS, DoneOffsets, FetchedBatch

Subscription = namedtuple("Subscription", "subscription")
TOPICS = ("events.view", "events.click", "events.purchase")


class Cluster:
    def __init__(self, partitions: int) -> None:
        self.partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.partitions))


def _rec(topic: str, offset: int, partition: int = 0) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic, partition, offset, 1, 0, None, b"", None, 0, 0, ())


@pytest.mark.parametrize("workers,partitions", [(2, 4), (3, 16), (5, 16), (4, 3)])
def test_each_worker_gets_the_same_partitions_of_every_input_topic(workers: int,
                                                                   partitions: int) -> None:
    """A user's view, click and purchase (same key, same partition number) land on one
    worker, which applies them in event-time order."""
    members: dict[str, Any] = {f"member-{i}": Subscription(TOPICS) for i in range(workers)}
    assignment = ASSIGNORS[0].assign(Cluster(partitions), members)
    owners: dict[int, set[str]] = {}
    assigned_pairs = set()
    for member, assigned in assignment.items():
        for topic, parts in assigned.assignment:
            for p in parts:
                owners.setdefault(p, set()).add(member)
                assigned_pairs.add((topic, p))
    assert assigned_pairs == {(t, p) for t in TOPICS for p in range(partitions)}
    assert all(len(members_of_p) == 1 for members_of_p in owners.values())


def test_a_batch_from_before_a_rebalance_does_not_move_offsets() -> None:
    """Partition p went to another worker and came back: the old batch, finished late,
    must not commit an offset behind what the other worker committed."""
    done = DoneOffsets()
    tp = TopicPartition("events.view", 0)
    old = FetchedBatch([_rec("events.view", 200)], done.assignment)
    done.assignment += 2  # revoked, then assigned again
    done.acknowledge(old)
    assert done.take({tp}) == {}
    done.acknowledge(FetchedBatch([_rec("events.view", 700)], done.assignment))
    assert done.take({tp}) == {tp: 701}


def test_offsets_of_a_failed_commit_go_with_the_next_one() -> None:
    done = DoneOffsets()
    view, click = TopicPartition("events.view", 0), TopicPartition("events.click", 0)
    done.acknowledge([_rec("events.view", 5), _rec("events.click", 9)])
    failed = done.take({view, click})
    done.acknowledge([_rec("events.view", 8)])
    done.restore(failed)
    assert done.take({view, click}) == {view: 9, click: 10}
