"""The HTTP API behind a bearer token and a bind address: without the token the API
answers 401 (health and metrics stay open; closing them too is tests/unit/test_http_access.py),
with it as before; the server listens where it is told."""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Pipeline

pytestmark = pytest.mark.integration

TOKEN = f"tok-{uuid.uuid4().hex}"


def _status(port: str, path: str, token: str | None = None, body: bytes | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                     headers=headers, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as err:
        return err.code


def _listening_on(port: str) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp writes them) listening on ``port``."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == int(port):
            found.add(address)
    return found


def test_the_api_asks_for_the_token_and_health_stays_open(
        make_pipeline: Callable[..., Pipeline]) -> None:
    pipeline = make_pipeline(metrics={"token": TOKEN, "bind": "127.0.0.1"},
                             serving={"console_try_it": True})
    port = pipeline.start_worker().env["STREAMREC_METRICS__PORT"]
    for path in ("/recommendations/alice", "/users/alice", "/schemas/event.v1.json"):
        assert _status(port, path) == 401, path
        assert _status(port, path, token="wrong") == 401, path
        assert _status(port, path, token=TOKEN) in (200, 404), path
    event = b'{"user_id": "alice", "item_id": "i1", "type": "click"}'
    assert _status(port, "/events", body=event) == 401
    assert _status(port, "/events", token=TOKEN, body=event) == 202
    assert _status(port, "/healthz") == 200
    assert _status(port, "/metrics") == 200
    assert _status(port, "/console") == 200  # a static page; its calls carry the token
    assert _listening_on(port) == {"0100007F"}  # 127.0.0.1 only
