"""Prometheus metrics of the worker process (contract: ``streamrec_`` prefix, units in names).

No user or item ids in labels.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from streamrec.kernel.errors import StreamrecError

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0)

EVENTS = Counter("streamrec_events_total", "Events by type and outcome "
                 "(accepted, invalid at ingest; applied, duplicate, below_watermark, late at "
                 "state)", ["type", "outcome"])
DLQ = Counter("streamrec_dlq_total", "Messages sent to the dead-letter topic", ["reason"])
LATE = Counter("streamrec_late_events_total",
               "Events beyond the reorder bound (reorder window or allowed lateness): counted "
               "in popularity, not in sequences or transitions")
ERASED_USERS = Counter("streamrec_erased_users_total",
                       "Users forgotten on request (their keys deleted, a tombstone published)")
ERASED_EVENTS = Counter("streamrec_erased_events_total",
                        "Events of forgotten users from before their erasure, skipped")
CORRUPTED_USERS = Counter("streamrec_corrupted_user_state_total",
                          "User hashes the state step found corrupted (not written by it) "
                          "and started anew")
STATE_REWINDS = Counter("streamrec_state_rewinds_total",
                        "Times the state was found behind what was applied (Redis lost "
                        "writes) and its partitions were read again from its watermarks")
DUPLICATES = Counter("streamrec_duplicate_events_total",
                     "Events skipped as duplicates (event_id seen or offset below watermark)")
STATE_BATCH_SECONDS = Histogram("streamrec_state_batch_seconds",
                                "Time to apply one state batch", buckets=_LATENCY_BUCKETS)
STATE_BATCH_EVENTS = Histogram("streamrec_state_batch_events", "Events per state batch",
                               buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000))
REDIS_SECONDS = Histogram("streamrec_redis_seconds", "Redis round trips by operation", ["op"],
                          buckets=_LATENCY_BUCKETS)
REDIS_UP = Gauge("streamrec_redis_up", "1 when the last Redis call succeeded")
FRESHNESS_SECONDS = Histogram(
    "streamrec_event_to_recommendation_seconds",
    "Input event published (its Kafka timestamp) to recommendation published",
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0))
RECOMMEND_SECONDS = Histogram("streamrec_recommend_seconds",
                              "Time to compute one batch of recommendations",
                              buckets=_LATENCY_BUCKETS)
PULL_SECONDS = Histogram("streamrec_pull_seconds", "GET /recommendations handling time",
                         buckets=_LATENCY_BUCKETS)
RECOMMENDATIONS = Counter("streamrec_recommendations_total", "Recommendation lists published")
STAGE_SECONDS = Histogram("streamrec_stage_seconds", "Time per batch in each stage",
                          ["stage"], buckets=_LATENCY_BUCKETS)
CONSUMER_LAG = Gauge("streamrec_consumer_lag_messages",
                     "Messages not yet read on each assigned partition", ["topic", "partition"])
ONLINE_HITS = Counter("streamrec_online_hits_total",
                      "Events whose item was in the list served to the user just before")
ONLINE_EVALUATIONS = Counter("streamrec_online_evaluations_total",
                             "Events that moved a user to a new item after a list was served")
SERVED_COVERAGE = Gauge("streamrec_served_coverage_ratio",
                        "Share of the catalogue in the lists served over the last window")
MODEL_VERSION = Gauge("streamrec_model_version_info", "Model version in use (value 1)",
                      ["version"])
MODEL_AGE = Gauge("streamrec_model_age_seconds", "Age of the model version in use")
MODEL_NDCG = Gauge("streamrec_model_ndcg_at_10",
                   "Offline NDCG@10 of the model version in use, on its holdout")
TRAINER_RUNS = Counter("streamrec_trainer_runs_total", "Trainer rounds by outcome",
                       ["outcome"])
TRAINER_SECONDS = Histogram("streamrec_trainer_seconds", "Duration of a trainer round",
                            buckets=(10, 30, 60, 120, 300, 600, 1200, 3600))
WORKER_READY = Gauge("streamrec_worker_ready", "1 once the worker has joined its group")


class Readiness:
    """Whether the worker has joined its group: read by /healthz, exported as a gauge."""

    def __init__(self) -> None:
        self.ready = False

    def mark_ready(self) -> None:
        self.ready = True
        WORKER_READY.set(1)


READINESS = Readiness()


def serve_metrics(port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104
    """Start the /metrics endpoint unless port is 0."""
    if not port:
        return
    try:
        start_http_server(port, addr=addr)
    except OSError as exc:
        raise StreamrecError(f"metrics: cannot serve /metrics on port {port} ({exc.strerror}); "
                             "set STREAMREC_METRICS__PORT to a free port or 0") from None
