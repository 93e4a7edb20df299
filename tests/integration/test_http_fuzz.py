"""Every HTTP surface of a worker fuzzed from its OpenAPI document (schemathesis, a real
worker on a real broker and Redis): no 5xx for any generated request, every status code
documented, and the worker still healthy after."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from streamrec.contracts.json_schemas import OPENAPI
from tests.conftest import ROOT, Pipeline

pytestmark = pytest.mark.integration

OPENAPI_PATH = ROOT / "streamrec" / "contracts" / OPENAPI
MIN_REQUESTS = 1000


def test_a_thousand_generated_requests_get_no_server_error(
        make_pipeline: Callable[..., Pipeline], tmp_path: Path) -> None:
    pipeline = make_pipeline(serving={"console_try_it": True})
    worker = pipeline.start_worker()
    port = worker.env["STREAMREC_METRICS__PORT"]
    done = subprocess.run(
        [str(Path(sys.executable).parent / "st"), "run", str(OPENAPI_PATH),
         "--url", f"http://127.0.0.1:{port}", "--checks",
         "not_a_server_error,status_code_conformance,content_type_conformance",
         "--max-examples", "250", "--seed", "7", "--workers", "2", "--no-shrink"],
        capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    cases = re.search(r"Test cases:\s+(\d+) generated, (\d+) passed", done.stdout)
    assert cases, done.stdout[-3000:]
    generated, passed = int(cases[1]), int(cases[2])
    assert generated == passed >= MIN_REQUESTS, done.stdout[-3000:]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
        assert json.loads(reply.read())["status"] == "ok"
    assert worker.running, worker.log_tail()
