"""The kernel: errors, settings, metrics, logging, retries, and the Kafka and Redis clients
(batch consumer, outbox). Depends on nothing else in the project."""
