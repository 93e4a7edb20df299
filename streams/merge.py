"""Event-time merge of the co-partitioned input topics (pure; no I/O).

Partition p of ``events.view``, ``events.click`` and ``events.purchase`` holds the same
users, and their events are applied by one worker. After an outage each of those
partitions holds a backlog, and a fetch may bring 2,000 purchases before the first view of
the same hours. As Kafka Streams does for a task's inputs (max.task.idle.ms, KIP-353 and
KIP-695), the event path buffers what it fetched per input partition and releases the
records of a partition group in event-time order, by the heads of the buffers, as long as
every partition of the group has a buffered record or is known to have nothing more to
give: it is caught up with its log (no lag) and has been empty for ``idle_ms``. A
partition whose log holds records not fetched yet (lag > 0, or not known yet) holds the
group back. The state step is itself independent of arrival order within its reorder
window, so live skew between topics costs no waiting (``idle_ms`` 0 by default).

Records leave each partition's buffer in offset order, so the offsets that are safe to
commit are those below the first record still held (:meth:`EventTimeMerge.commit_limits`).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from streamrec.state.store import TYPE_RANK, Positioned

Partition = tuple[str, int]  # (topic, partition)


def order_key(p: Positioned) -> tuple[int, int, str]:
    """Event time, then type: the state's own order up to its tie-break (the state step
    orders equal keys itself; this order only makes most of its updates appends)."""
    return p.event.ts, TYPE_RANK[p.event.type], p.event.event_id


@dataclass
class EventTimeMerge:
    idle_ms: float = 0.0
    _held: dict[Partition, deque[Positioned]] = field(default_factory=dict)
    _empty_since: dict[Partition, float] = field(default_factory=dict)

    def add(self, events: Iterable[Positioned]) -> None:
        """Buffer valid events, each partition's in offset order."""
        for p in events:
            self._held.setdefault((p.topic, p.partition), deque()).append(p)

    def clear(self) -> None:
        """Forget everything held (the partitions were revoked: their new owner reads them
        again from the committed offsets, which are below anything held)."""
        self._held.clear()
        self._empty_since.clear()

    def held(self, partition: Partition) -> int:
        return len(self._held.get(partition, ()))

    def release(self, lags: Mapping[Partition, int | None], now_ms: float) -> list[Positioned]:
        """The events that can be applied now, in event-time order. ``lags``: every
        assigned input partition, with the records in its log not fetched yet (None when
        not known yet)."""
        groups: dict[int, list[Partition]] = {}
        for part in set(lags) | set(self._held):
            groups.setdefault(part[1], []).append(part)
        out: list[Positioned] = []
        for parts in groups.values():
            out += self._release_group(parts, lags, now_ms)
        out.sort(key=order_key)
        return out

    def _blocks(self, part: Partition, lags: Mapping[Partition, int | None],
                now_ms: float) -> bool:
        """An empty partition holds its group back unless it has nothing more to give."""
        lag = lags.get(part, 0)  # no longer assigned: nothing more will come from it
        if lag is None or lag > 0:
            self._empty_since.pop(part, None)
            return True
        since = self._empty_since.setdefault(part, now_ms)
        return now_ms - since < self.idle_ms

    def _release_group(self, parts: list[Partition], lags: Mapping[Partition, int | None],
                       now_ms: float) -> list[Positioned]:
        held = self._held
        for part in parts:
            if held.get(part):
                self._empty_since.pop(part, None)
        if not any(held.get(part) for part in parts):
            return []
        empty = [part for part in parts if not held.get(part)]
        if any(self._blocks(part, lags, now_ms) for part in empty):
            return []
        if self.idle_ms <= 0 and all(lags.get(part, 0) == 0 for part in parts):
            # caught up everywhere (live operation): nothing can hold the group back
            return [p for part in parts for p in held.pop(part, ())]
        # k-way merge by the heads until a partition that empties holds the group back
        out: list[Positioned] = []
        heap = [(order_key(held[part][0]), part) for part in parts if held.get(part)]
        heapq.heapify(heap)
        while heap:
            _, part = heapq.heappop(heap)
            queue = held[part]
            out.append(queue.popleft())
            if queue:
                heapq.heappush(heap, (order_key(queue[0]), part))
            elif self._blocks(part, lags, now_ms):
                break
        return out

    def commit_limits(self) -> dict[Partition, int]:
        """Per partition with held records, the offset of the first: nothing at or above
        it may be committed yet."""
        return {part: queue[0].offset for part, queue in self._held.items() if queue}
