"""Worker processes started by the demo, the chaos tool and the tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from streamrec.kernel.errors import StreamrecError


class WorkerProcess:
    """``streamrec worker`` as a child process in its own session, with a ready file."""

    def __init__(self, env: dict[str, str], run_dir: Path, role: str = "all",
                 name: str = "worker") -> None:
        self.env = env
        self.run_dir = Path(run_dir)
        self.role = role
        self.name = name
        self.ready_file = self.run_dir / f"{name}.ready"
        self.log_path = self.run_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ready_file.unlink(missing_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamrec.app.cli", "worker", "--role", self.role,
                 "--ready-file", str(self.ready_file)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, timeout_s: float = 120.0) -> float:
        """Seconds until the worker joined its group; raises with the log tail if it died."""
        start = time.monotonic()
        while not self.ready_file.exists():
            if self.proc is None or self.proc.poll() is not None:
                raise StreamrecError(f"{self.name} exited during start:\n{self.log_tail()}")
            if time.monotonic() - start > timeout_s:
                raise StreamrecError(f"{self.name} not ready within {timeout_s:.0f} s:\n"
                                     f"{self.log_tail()}")
            time.sleep(0.05)
        return time.monotonic() - start

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("worker not started")
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no commit, no flush."""
        if self.proc is not None and self.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP the worker for the block, SIGCONT after: it neither reads nor writes
        meanwhile, and carries on as if it had been slow."""
        if self.proc is None or not self.running:
            yield
            return
        os.killpg(self.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGCONT)

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``."""
        if self.proc is None or not self.running:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"
