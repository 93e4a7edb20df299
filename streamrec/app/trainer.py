"""The trainer process: periodically retrains SASRec on the live sequences in Redis and
publishes a new version when it is not worse than the current one.

One round: read every user's sequence from Redis -> leave-one-out split (the last item of
each user is the holdout) -> warm start from the current version (new items get new
rows) -> train within the time budget (validation picks the epoch) -> evaluate the new and
the current version on the same holdout -> publish only when the new one's NDCG@10 is at
least the current one's minus a tolerance -> fit the serving blend (weights and
normalisation) on the same holdout (:mod:`recmodels.blend_holdout`) and store it with the
version -> make it the current version (:class:`ModelStore`) and announce.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
import torch
from aiokafka import AIOKafkaProducer

from recmodels.blend_holdout import fit_serving_blend
from recmodels.checkpoint import warm_start
from recmodels.evaluation import EvalConfig, Evaluator
from recmodels.sasrec import SASRecConfig, SASRecRecommender
from recmodels.split import ItemVocab, leave_one_out
from recmodels.training import train
from streamrec.kernel import metrics
from streamrec.kernel.clients import aiokafka_options, redis_client
from streamrec.kernel.retry import probe_redis
from streamrec.kernel.settings import Settings
from streamrec.state.keys import Keys
from streamrec.state.model_store import ModelStore
from streamrec.state.users import read_sequences

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundResult:
    outcome: str  # published | rejected | skipped
    version: str | None
    new: dict[str, float]
    current: dict[str, float] | None
    seconds: float
    users: int
    items: int
    blend: dict[str, Any] | None = None  # fitted on the holdout (model metadata "blend")


def _holdout_metrics(evaluator: Evaluator, model: SASRecRecommender) -> dict[str, float]:
    found = evaluator.evaluate(model, "test", "sampled")
    return {"ndcg@10": float(found["ndcg@10"]), "hr@10": float(found["hr@10"])}


class Trainer:
    def __init__(self, settings: Settings, config: SASRecConfig | None = None) -> None:
        self.settings = settings
        self.config = config or SASRecConfig()
        self.keys = Keys(settings.redis.prefix)

    async def run_once(self) -> RoundResult:
        t = self.settings.trainer
        if t.threads is not None:
            torch.set_num_threads(t.threads)
        started = time.monotonic()
        redis = redis_client(self.settings.redis)
        try:
            store = ModelStore(redis, self.keys)
            ids, sequences = await read_sequences(redis, self.keys)
            n_eval = sum(len(s) >= 3 for s in sequences.values())
            if n_eval < t.min_users:
                log.info("trainer skipped: %d users with >= 3 items (need %d)", n_eval,
                         t.min_users)
                return RoundResult("skipped", None, {}, None, 0.0, len(sequences), len(ids))
            vocab = ItemVocab(ids)
            split = leave_one_out(sequences, vocab)
            current = await store.load_current()
            evaluator = Evaluator(split, EvalConfig(ks=(10,), n_negatives=min(
                100, max(1, vocab.n_items - 60)), max_users=t.eval_users))
            init = warm_start(current.checkpoint, vocab) if current else None
            checkpoint = await asyncio.to_thread(
                train, split, self.config, time_budget_s=t.time_budget_s, init=init,
                evaluator=evaluator)
            new = await asyncio.to_thread(_holdout_metrics, evaluator,
                                          checkpoint.recommender())
            old = None
            if current is not None:
                mapped = SASRecRecommender(warm_start(current.checkpoint, vocab))
                old = await asyncio.to_thread(_holdout_metrics, evaluator, mapped)
            seconds = time.monotonic() - started
            if old is not None and new["ndcg@10"] < old["ndcg@10"] - t.tolerance:
                log.warning("trainer: new model rejected ndcg@10=%.4f current=%.4f",
                            new["ndcg@10"], old["ndcg@10"])
                metrics.TRAINER_RUNS.labels(outcome="rejected").inc()
                return RoundResult("rejected", None, new, old, seconds, len(sequences),
                                   len(ids))
            blend = None
            if t.fit_blend:
                fit = await asyncio.to_thread(
                    fit_serving_blend, split, checkpoint, self.settings.serving,
                    self.settings.state.markov_row_size, t.blend_users)
                blend = fit.to_meta()
            seconds = time.monotonic() - started
            version = await store.publish(checkpoint, new, keep=t.keep_versions, blend=blend)
            await self._announce(version, new, len(ids))
            metrics.TRAINER_RUNS.labels(outcome="published").inc()
            metrics.MODEL_NDCG.set(new["ndcg@10"])
            metrics.MODEL_VERSION.clear()
            metrics.MODEL_VERSION.labels(version=version).set(1)
            metrics.TRAINER_SECONDS.observe(seconds)
            return RoundResult("published", version, new, old, seconds, len(sequences),
                               len(ids), blend)
        finally:
            await redis.aclose()

    async def _announce(self, version: str, found: dict[str, float], n_items: int) -> None:
        producer = AIOKafkaProducer(**aiokafka_options(self.settings.kafka))
        await producer.start()
        try:
            await producer.send_and_wait(self.settings.topics.model_updates, orjson.dumps(
                {"version": version, "published_at": int(time.time() * 1000),
                 "items": n_items, "metrics": found}), key=version.encode())
        finally:
            await producer.stop()

    async def _probe(self) -> None:
        redis = redis_client(self.settings.redis)
        try:
            while True:
                await probe_redis(redis)
                await asyncio.sleep(5)
        finally:
            await redis.aclose()

    async def run_forever(self, interval_s: float) -> None:
        probe = asyncio.create_task(self._probe())
        while not probe.done():
            try:
                result = await self.run_once()
                log.info("trainer round outcome=%s version=%s new=%s current=%s "
                         "seconds=%.0f", result.outcome, result.version, result.new,
                         result.current, result.seconds)
            except Exception:
                metrics.TRAINER_RUNS.labels(outcome="failed").inc()
                log.exception("trainer round failed; next round in %.0f s", interval_s)
            await asyncio.sleep(interval_s)
