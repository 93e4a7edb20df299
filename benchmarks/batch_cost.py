"""What one batch costs the worker's state and serving steps, in process, against a real
Redis (no Kafka): the cost of a batch as a function of its size and of the users' history
depth, which is what a paced worker (batches of tens to hundreds of events, deep
histories) pays more of than a backlogged one (batches of 2,000).

A redis-server of its own (no AOF) is filled with --warmup synthetic events (20,000 users,
5,000 items, sessions), then the next --events are applied in batches of each size: the
state step (RedisStateStore.apply), the user vectors (UserVectorWriter.compute, SASRec
with --hidden, untrained weights: the cost does not depend on them), and serving
(Recommender.lists + remember, with the vectors handed over as in role all) plus the
messages' encoding. Reported per size: µs per event, ms per batch of each step, users per
batch, Redis CPU per event; and the fit ms per batch = fixed + per_event x size.

    python benchmarks/batch_cost.py --sizes 16 64 256 2000 --warmup 200000 --out out/batch_cost
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: one BLAS thread
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import asyncio
import dataclasses
import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from load import cpu_seconds  # benchmarks/load.py
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from infra.stack import find_redis_server, free_port
from recmodels.datasets import synthetic_stream
from recmodels.online import OnlineModel, encoder_dtype
from recmodels.sasrec import SASRec, SASRecConfig
from recmodels.scoring.item_index import ItemIndex
from serving.recommender import Recommender
from streamrec.contracts.event import decode_event
from streamrec.contracts.user_update import UserUpdate
from streamrec.kernel.allocator import keep_freed_memory
from streamrec.kernel.settings import Settings
from streamrec.state.catalog import ItemCatalog
from streamrec.state.keys import Keys
from streamrec.state.reader import ServingStateReader
from streamrec.state.store import ApplyConfig, Positioned, RedisStateStore
from streamrec.state.user_writes import UserWriter
from streams.producer import event_payload
from streams.user_vectors import UserVectorWriter


class _NoStore:
    """A ModelHolder stand-in that only holds the model (no Redis polling)."""

    def __init__(self, model: OnlineModel | None) -> None:
        self.current = model


async def _one_size(redis_port: int, redis_pid: int, size: int, warmup: int, events: int,
                    hidden: int, with_model: bool, normalisation: str) -> dict[str, Any]:
    settings = Settings.model_validate({"redis": {"url": f"redis://127.0.0.1:{redis_port}/0"},
                                        "serving": {"normalisation": normalisation}})
    keys = Keys(settings.redis.prefix)
    redis = Redis(port=redis_port)
    await redis.flushall()
    store = RedisStateStore(redis, ApplyConfig.from_settings(keys.prefix, "bench",
                                                             settings.state))
    now = int(time.time() * 1000)
    stream = synthetic_stream(warmup + events, n_users=20_000, n_items=5_000, seed=99)
    positioned = [Positioned("events.view", 0, i, decode_event(
        event_payload(dataclasses.replace(e, ts=now - 3_600_000 + i)), e.type))
        for i, e in enumerate(stream)]
    for start in range(0, warmup, 2000):
        await store.apply(positioned[start:min(start + 2000, warmup)])
    holder = _NoStore(None)
    if with_model:
        n_items = int(await redis.llen(keys.item_ids))
        torch.manual_seed(0)
        model = SASRec(n_items, SASRecConfig(hidden=hidden)).eval()
        vectors = model.item_emb.weight.detach()[1:].numpy().astype(np.float32, copy=True)
        holder.current = OnlineModel(  # products in the worker's precision
            "bench", model, vectors, 0, None, index=ItemIndex.build(vectors),
            encoder_dtype=encoder_dtype(settings.worker.encoder_precision))
    sv = settings.serving
    reader = ServingStateReader(redis, keys, history=sv.markov_history,
                                row_size=settings.state.markov_row_size,
                                popular=4 * sv.top_n + sv.exclude_recent + 50)
    models: Any = holder  # the recommender and the writer only read .current
    recommender = Recommender(reader, ItemCatalog(redis, keys), sv,
                              clock_ms=lambda: int(time.time() * 1000), models=models)
    writer = UserVectorWriter(UserWriter(redis, keys), models)
    gc.collect()
    gc.freeze()  # as the worker does (streamrec.app.worker._tune_gc)
    gc.set_threshold(50_000, 20, 100)
    spent = {"apply": 0.0, "vectors": 0.0, "serving": 0.0}
    batches = users = 0
    redis_cpu = cpu_seconds(redis_pid)
    wall = time.perf_counter()
    for start in range(warmup, len(positioned), size):
        batch = positioned[start:start + size]
        t0 = time.perf_counter()
        result = await store.apply(batch)
        t1 = time.perf_counter()
        fresh = writer.compute(result.sequences)
        t2 = time.perf_counter()
        latest = {p.event.user_id: UserUpdate(user_id=p.event.user_id,
                                              event_id=p.event.event_id, ts=p.event.ts)
                  for p in batch}
        served = await recommender.lists(list(latest.values()), fresh=fresh)
        await recommender.remember(served)
        for message in served.messages:
            message.to_json()
        t3 = time.perf_counter()
        spent["apply"] += t1 - t0
        spent["vectors"] += t2 - t1
        spent["serving"] += t3 - t2
        batches += 1
        users += len(latest)
    wall = time.perf_counter() - wall
    redis_cpu = cpu_seconds(redis_pid) - redis_cpu
    gc.unfreeze()
    await redis.aclose()
    return {"batch_size": size, "batches": batches, "users_per_batch": users / batches,
            "us_per_event": 1e6 * wall / events, "ms_per_batch": 1000 * wall / batches,
            "ms_per_batch_by_step": {k: 1000 * v / batches for k, v in spent.items()},
            "redis_cpu_us_per_event": 1e6 * redis_cpu / events}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256, 2000])
    p.add_argument("--warmup", type=int, default=200_000,
                   help="events applied first (history depth: warmup / 20,000 users)")
    p.add_argument("--events", type=int, default=40_000, help="events timed per size")
    p.add_argument("--hidden", type=int, default=128, help="SASRec width (the default's)")
    p.add_argument("--markov-only", action="store_true", help="no SASRec model")
    p.add_argument("--normalisation", choices=("max", "probability", "rank"), default="max",
                   help="how serving normalises the sources (a trained model's fitted blend "
                        "brings its own, chosen on its holdout)")
    p.add_argument("--out", default="out/batch_cost")
    args = p.parse_args()
    keep_freed_memory(Settings().worker.malloc_keep_mb)  # as the worker does
    torch.set_num_threads(1)
    port = free_port()
    server = subprocess.Popen([find_redis_server(), "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no",
                               "--hash-max-ziplist-value", "512"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        for _ in range(100):  # until it answers
            try:
                SyncRedis(port=port).ping()
                break
            except Exception:
                time.sleep(0.05)
        for size in args.sizes:
            row = asyncio.run(_one_size(port, server.pid, size, args.warmup, args.events,
                                        args.hidden, not args.markov_only,
                                        args.normalisation))
            steps = " ".join(f"{k} {v:.2f}" for k, v in row["ms_per_batch_by_step"].items())
            print(f"batch {size:5d}: {row['us_per_event']:6.1f} us/event, "
                  f"{row['ms_per_batch']:7.2f} ms/batch ({steps}), "
                  f"{row['users_per_batch']:.1f} users/batch, "
                  f"Redis {row['redis_cpu_us_per_event']:.1f} CPU us/event")
            rows.append(row)
    finally:
        server.terminate()
        server.wait()
    # the fit over the paced sizes (up to 512 events) when there are two, else over all
    small = [r for r in rows if r["batch_size"] <= 512]
    fitted = small if len(small) >= 2 else rows
    sizes = np.array([r["batch_size"] for r in fitted], dtype=float)
    per_batch = np.array([r["ms_per_batch"] for r in fitted])
    fit = None
    if len(fitted) >= 2:
        slope, intercept = np.polyfit(sizes, per_batch, 1)
        fit = {"fixed_ms_per_batch": float(intercept), "us_per_event": float(1000 * slope)}
        print(f"fit over batches of {', '.join(str(int(x)) for x in sizes)}: "
              f"{intercept:.2f} ms per batch + {1000 * slope:.1f} us per event")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "batch_cost.json").write_text(json.dumps(
        {"warmup": args.warmup, "events": args.events, "hidden": args.hidden,
         "normalisation": args.normalisation,
         "model": "markov" if args.markov_only else "sasrec", "sizes": rows, "fit": fit},
        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
