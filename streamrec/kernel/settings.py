"""The one settings class. Environment prefix ``STREAMREC_``, nesting with ``__``.

Example: ``STREAMREC_KAFKA__BOOTSTRAP=127.0.0.1:9092``, ``STREAMREC_REDIS__URL=redis://...``.
Secrets are ``SecretStr`` and never appear in ``repr`` or logs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamrec.kernel.pseudonyms import pseudonym


class KafkaSettings(BaseModel):
    bootstrap: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    partitions: int = Field(
        default=16, ge=1, description="partitions of topics created on start (up to this many "
                                      "workers share a topic; see README, Performance)")


class RedisSettings(BaseModel):
    url: str = Field(default="redis://127.0.0.1:6379/0",
                     description="rediss://... for TLS (with ssl_ca_certs)")
    username: str | None = Field(default=None, description="ACL user (see streamrec redis-acl)")
    password: SecretStr | None = None
    prefix: str = "sr:"
    ssl_ca_certs: str | None = Field(default=None, description="CA file that signed the "
                                     "server's certificate (TLS)")
    ssl_certfile: str | None = Field(default=None, description="client certificate, when "
                                     "the server asks for one (tls-auth-clients)")
    ssl_keyfile: str | None = None


class TopicSettings(BaseModel):
    view: str = "events.view"
    click: str = "events.click"
    purchase: str = "events.purchase"
    dlq: str = "events.dlq"
    user_updates: str = "streamrec.user-updates"
    recommendations: str = "recommendations"
    model_updates: str = "streamrec.model-updates"
    erasure: str = Field(default="privacy.erasure", description="erasure requests (key = "
                         "user_id): the stream workers forget each user")


class EventWeights(BaseModel):
    view: float = Field(default=1.0, gt=0)
    click: float = Field(default=2.0, gt=0)
    purchase: float = Field(default=4.0, gt=0)


class BatchSettings(BaseModel):
    batch_size: int = Field(default=2000, ge=1, description="most records in one batch")


class StateSettings(BatchSettings):
    weights: EventWeights = EventWeights()
    sequence_length: int = Field(default=50, ge=1, description="L: recent items kept per user")
    reorder_window: int = Field(
        default=30, ge=1, le=4096,
        description="W: a user's last events kept in event-time order (17 bytes each; 30 "
                    "keeps the user hash in Redis' compact encoding); an event that arrives "
                    "after W later events of its user is late (see docs/guarantees.md)")
    markov_row_size: int = Field(
        default=30, ge=1, description="K: successors read per Markov row (top K by count)")
    popularity_half_life_s: float = Field(
        default=7 * 86400.0, ge=0, description="event-time half-life of popularity; 0 = no decay"
    )
    dedupe_events: int = Field(
        default=128, ge=0, description="D: an event published again counts once while its "
        "original is among its user's last D events (8 bytes each beyond the reorder "
        "window; 0: no dedupe beyond the partitions' watermarks)")
    user_ttl_s: float = Field(
        default=0.0, ge=0, description="a user's state expires this long after their last "
        "event (0: never); popularity, Markov rows and the item index stay")
    allowed_lateness_s: float = Field(
        default=3600.0, description="older than the user's last event by more: late; <0 off"
    )
    bought_kept: int = Field(
        default=200, ge=0, description="items kept in a user's bought set (never "
        "recommended to them): those bought most recently, by event time (0: all)")


class ServingSettings(BatchSettings):
    top_n: int = Field(default=10, ge=1)
    markov_history: int = Field(default=3, ge=1, description="m: last items whose rows are read")
    markov_recency_decay: float = Field(default=0.5, gt=0, le=1)
    markov_smoothing: float = Field(default=0.1, ge=0, description="additive smoothing alpha")
    exclude_recent: int = Field(default=3, ge=0, description="last items seen never recommended")
    exclude_purchased: bool = True
    weight_markov: float = Field(default=1.0, ge=0, description="blend weight of Markov")
    weight_sequence: float = Field(default=1.0, ge=0, description="blend weight of SASRec")
    weight_trending: float = Field(default=0.1, ge=0, description="blend weight of trending")
    normalisation: Literal["max", "probability", "rank", "loglinear"] = Field(
        default="max", description="how source scores are normalised with the weights above "
        "(loglinear: SASRec's log-probability plus weight_markov times the log of the Markov "
        "counts smoothed towards it)")
    blend_strength: float = Field(
        default=1.0, gt=0, description="loglinear: weight of SASRec's probability in the "
        "smoothed Markov counts")
    blend: Literal["fitted", "settings"] = Field(
        default="fitted", description="fitted: the model's holdout-fitted blend when it has "
        "one, else the settings' weights and normalisation; settings: always the settings'")
    sequence_candidates: int = Field(default=100, ge=1, description="top-k by user vector")
    trending_candidates: int = Field(default=20, ge=0, description="trending items blended")
    diversity_lambda: float = Field(
        default=1.0, ge=0, le=1, description="MMR: 1 = relevance only, lower = more diverse")
    diversity_pool: int = Field(default=3, ge=1, description="MMR picks n from n * pool")
    model_poll_s: float = Field(default=1.0, gt=0, description="check for a new model so often")
    served_ttl_s: int = Field(default=7 * 86400, ge=1, description="keep served lists so long")
    coverage_window_s: float = Field(default=600.0, gt=0, description="served coverage window")
    batch_size: int = Field(default=500, ge=1)
    console: bool = Field(default=True, description="GET /console and /users/{id} on serving "
                          "workers (read-only, as open as /recommendations)")
    console_try_it: bool = Field(
        default=False, description="the console's 'try it' publishes a click (POST /events): "
        "anyone who reaches the port can then publish events")


class TrainerSettings(BaseModel):
    interval_s: float = Field(default=300.0, gt=0, description="time between rounds")
    time_budget_s: float = Field(default=120.0, gt=0, description="training time per round")
    tolerance: float = Field(default=0.005, ge=0,
                             description="publish unless NDCG@10 drops by more than this")
    min_users: int = Field(default=20, ge=1, description="users with >= 3 items to train")
    eval_users: int | None = Field(default=5000, ge=1, description="holdout users evaluated")
    keep_versions: int = Field(default=3, ge=1, description="model versions kept in Redis")
    fit_blend: bool = Field(default=True, description="fit blend weights on the holdout")
    blend_users: int = Field(default=10_000, ge=1,
                             description="holdout users the blend weights are fitted on")
    threads: int | None = Field(default=None, ge=1,
                                description="torch CPU threads while training (None: torch's)")


class PrivacySettings(BaseModel):
    pseudonym_key: SecretStr | None = Field(
        default=None, description="when set, user ids are replaced by HMAC-SHA256(key, id) "
        "(128 bits, hex) at ingestion: Redis and streamrec's topics hold pseudonyms only")

    def pseudonymizer(self) -> Callable[[str], str] | None:
        """The id -> pseudonym function, or None when pseudonyms are off."""
        if self.pseudonym_key is None:
            return None
        key = self.pseudonym_key.get_secret_value().encode()
        return lambda user_id: pseudonym(user_id, key)


class MetricsSettings(BaseModel):
    """The workers' HTTP server: /metrics, /healthz, the API and the console."""

    port: int = Field(default=9464, ge=0, le=65535, description="/metrics port; 0 disables")
    bind: str = Field(default="0.0.0.0", description="address the HTTP server listens on "  # noqa: S104
                      "(127.0.0.1: this host only)")
    token: SecretStr | None = Field(
        default=None, description="bearer token the API asks for (Authorization: Bearer "
        "...): /recommendations, /users, /events, /schemas; unset: open")
    open_health: bool = Field(default=True, description="/healthz and /metrics without the "
                              "token (for probes and Prometheus)")


class WorkerSettings(BaseModel):
    app_id: str = "streamrec"
    consumer: Literal["batch", "faust"] = Field(
        default="batch", description="how a worker consumes its topics: batch (aiokafka "
        "batches below Faust, the fastest) or faust (a Faust agent; add your own agents and "
        "tables with worker.extensions)")
    extensions: list[str] = Field(
        default_factory=list, description="'module:function' called with (app, settings) "
        "when the worker app is built: your own Faust agents, tables, timers, views")
    web_host: str = Field(default="127.0.0.1", description="host name this worker advertises")
    rebalance_timeout_s: float = 5.0
    session_timeout_s: float = 10.0
    data_dir: str = ".run/faust"
    fetch_max_wait_ms: int = Field(default=20, ge=1, le=1500,
                                   description="longest a fetch waits for data (latency)")
    commit_interval_s: float = Field(
        default=1.0, gt=0, description="how often the offsets of finished batches are committed")
    max_idle_ms: float = Field(
        default=0.0, ge=0, description="how long a caught-up input partition with nothing "
        "fetched holds back its partition group's later events (Kafka Streams' "
        "max.task.idle.ms); skew within the reorder window needs no waiting")
    hold_limit: int = Field(
        default=20_000, ge=1, description="records held per input partition for the "
        "event-time merge before its fetching pauses")
    offset_reset: Literal["earliest", "latest"] = Field(
        default="earliest", description="where a new consumer group starts reading")
    torch_threads: int = Field(
        default=1, ge=1, description="CPU threads of PyTorch (user embeddings) and of numpy's "
                                     "BLAS (scoring) in a worker (the event loop is "
                                     "single-threaded anyway)")
    encoder_precision: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto", description="matrix products of the user encoder (SASRec): bfloat16 "
                                    "halves their cost on CPUs with native bfloat16 (auto: "
                                    "those), with the same HR@10 / NDCG@10 on Games")
    malloc_keep_mb: int = Field(
        default=256, ge=0, le=2047,
        description="free memory (MiB) the C allocator keeps mapped for the next batches "
                    "instead of giving it back and faulting it in again (glibc; 0: its "
                    "defaults)")
    event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop", description="the worker's event loop (uvloop: less overhead per I/O)")
    lag_interval_s: float = Field(default=5.0, gt=0, description="consumer lag export period")
    topic_check_interval_s: float = Field(
        default=5.0, gt=0, description="how often the stream worker checks its topics exist")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="STREAMREC_", env_nested_delimiter="__", extra="ignore"
    )

    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    topics: TopicSettings = TopicSettings()
    state: StateSettings = StateSettings()
    serving: ServingSettings = ServingSettings()
    trainer: TrainerSettings = TrainerSettings()
    metrics: MetricsSettings = MetricsSettings()
    worker: WorkerSettings = WorkerSettings()
    privacy: PrivacySettings = PrivacySettings()
    log_level: str = "INFO"


def settings_env(values: dict[str, Any], prefix: str = "STREAMREC_") -> dict[str, str]:
    """Environment variables that give a child process these (nested) settings."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key.upper()}"
        if isinstance(value, dict):
            out.update(settings_env(value, name + "__"))
        elif isinstance(value, list):
            out[name] = json.dumps(value)
        else:
            out[name] = str(value)
    return out


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read once per process from the environment."""
    return Settings()
