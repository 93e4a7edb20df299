"""One small exception hierarchy. Messages name the field, key or step."""

from __future__ import annotations


class StreamrecError(Exception):
    """Base of every error streamrec raises on purpose."""


class StackError(StreamrecError):
    """The embedded local stack could not be started, inspected or stopped."""


class DataError(StreamrecError):
    """A data set file could not be read or is malformed (names file and line)."""


class InvalidEvent(StreamrecError):
    """An input message broke a rule of event schema v1.

    ``reason`` is a short stable code for metrics and the DLQ record; ``field`` the
    offending field (empty when the message as a whole is at fault).
    """

    def __init__(self, reason: str, field: str, detail: str) -> None:
        super().__init__(f"event field '{field}': {detail}" if field else detail)
        self.reason = reason
        self.field = field
        self.detail = detail
