"""`streamrec demo` (what `make demo` runs): live lists with titles, and nothing left behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, SHARED_DATA

pytestmark = pytest.mark.e2e


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if (SHARED_DATA / "ml-100k").is_dir():
        env["STREAMREC_DEMO_DATA"] = str(SHARED_DATA / "ml-100k")
    return env


def _processes_under(run_dir: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = str((proc / "cwd").readlink())
        except OSError:
            continue
        if run_dir in cmdline or cwd.startswith(run_dir):
            found.append(f"{proc.name}: {cmdline}")
    return found


def _run_dir(output: str) -> str:
    match = re.search(r"\(log: (/\S+)/worker\.log\)", output)
    assert match, output[-2000:]
    return match.group(1)


def test_demo_prints_titled_lists_for_many_users_and_stops_everything() -> None:
    result = subprocess.run([sys.executable, "-m", "streamrec.app.cli", "demo", "--users", "30",
                             "--timeout", "150", "--offline"], env=_env(), capture_output=True,
                            text=True, timeout=240, check=False)
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    users = set(re.findall(r"^user (\S+)  model=", out, flags=re.M))
    assert len(users) >= 30
    assert "recommendations shown for" in out
    if out.startswith("demo: data is MovieLens"):  # titles come with MovieLens only
        assert re.search(r"^\s+1\. .+ \(\d{4}\)  score=", out, flags=re.M), "titles shown"
    run_dir = _run_dir(out)
    time.sleep(0.5)
    assert _processes_under(run_dir) == []
    assert not Path(run_dir).exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_everything_it_started(signum: int) -> None:
    demo = subprocess.Popen([sys.executable, "-m", "streamrec.app.cli", "demo", "--users", "100000",
                             "--timeout", "200", "--offline"], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert demo.stdout is not None
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = demo.stdout.readline()
        lines.append(line)
        if line.startswith("user "):  # recommendations are flowing
            break
    run_dir = _run_dir("".join(lines))
    demo.send_signal(signum)
    rest, _ = demo.communicate(timeout=60)
    assert demo.returncode == 130, rest[-2000:]
    assert "stopped the worker, the broker and Redis" in rest
    assert "Task was destroyed" not in rest and "Traceback" not in rest, rest[-2000:]
    assert _processes_under(run_dir) == []
