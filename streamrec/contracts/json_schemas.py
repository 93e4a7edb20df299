"""The published contracts as machine-readable documents, shipped in the package: JSON Schema
(2020-12) of the input event, the dead-letter record, the user update and the recommendation
message (``schemas/*.v1.json``), and an AsyncAPI 3.0 description of every topic
(``asyncapi.yaml``). Served by workers at ``GET /schemas/{name}``."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

SCHEMAS = ("event.v1.json", "dlq.v1.json", "user_update.v1.json", "recommendation.v1.json")
ASYNCAPI = "asyncapi.yaml"
OPENAPI = "openapi.yaml"  # the workers' HTTP API
DOCUMENTS = (*SCHEMAS, ASYNCAPI, OPENAPI)


@cache
def document_text(name: str) -> str:
    """The text of a shipped document (read once); KeyError for any other name."""
    if name not in DOCUMENTS:
        raise KeyError(name)
    folder = resources.files("streamrec.contracts")
    path = folder.joinpath(name) if name in (ASYNCAPI, OPENAPI) else \
        folder.joinpath("schemas", name)
    return path.read_text(encoding="utf-8")


@cache
def schema(name: str) -> dict[str, Any]:
    """A JSON Schema, parsed (``event.v1.json``, ...)."""
    if name not in SCHEMAS:
        raise KeyError(name)
    loaded: dict[str, Any] = json.loads(document_text(name))
    return loaded
