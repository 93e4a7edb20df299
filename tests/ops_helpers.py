"""Helpers for the operations tests: Prometheus binaries, config files, a Prometheus server.

promtool and prometheus come from Debian's ``prometheus`` package, installed on demand
(only the binaries are used; the packaged service is never started).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_YML = ROOT / "infra" / "prometheus" / "prometheus.yml"
ALERTS_YML = ROOT / "infra" / "prometheus" / "alerts.yml"
GRAFANA = ROOT / "infra" / "grafana"
DASHBOARD_JSON = GRAFANA / "dashboards" / "streamrec.json"
DATASOURCES_YML = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDER_YML = GRAFANA / "provisioning" / "dashboards" / "streamrec.yml"
COMPOSE_YML = ROOT / "docker-compose.yml"
COMPOSE_ACL_YML = ROOT / "docker-compose.acl.yml"
DOCKERFILE = ROOT / "Dockerfile"

# What Grafana would put in for its built-in variables, for a 1 s scrape interval.
GRAFANA_BUILTINS = {
    "__rate_interval": "30s",
    "__interval": "5s",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}


class OpsToolError(RuntimeError):
    """A tool the operations tests need is missing and cannot be installed."""


# ---------------------------------------------------------------- tools


def _apt_install(*packages: str) -> None:
    """Install Debian's packages (as root), without starting their services."""
    package = " ".join(packages)
    if not shutil.which("apt-get"):
        raise OpsToolError(f"{package} is missing and there is no apt-get here: install "
                           f"Debian's {package!r} package (or its binaries on PATH)")
    if os.geteuid() != 0:
        raise OpsToolError(f"{package} is missing: run `sudo apt-get install -y {package}` "
                           "(Debian) once, then rerun the tests")
    # policy-rc.d exit 101 = "do not start services": the package's daemon must not start.
    policy = Path("/usr/sbin/policy-rc.d")
    added_policy = not policy.exists()
    if added_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        for argv in (["apt-get", "update", "-q"],
                     ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]):
            done = subprocess.run(argv, env=env, capture_output=True, text=True,
                                  timeout=900, check=False)
            if done.returncode != 0:
                raise OpsToolError(f"`{' '.join(argv)}` failed (exit {done.returncode}); "
                                   f"install Debian's {package!r} package by hand:\n"
                                   f"{(done.stdout + done.stderr)[-2000:]}")
    finally:
        if added_policy:
            policy.unlink(missing_ok=True)


def ensure_prometheus_binaries() -> tuple[str, str]:
    """Paths of (promtool, prometheus); installs Debian's ``prometheus`` package if missing."""
    promtool, prometheus = shutil.which("promtool"), shutil.which("prometheus")
    if promtool and prometheus:
        return promtool, prometheus
    _apt_install("prometheus")
    promtool, prometheus = shutil.which("promtool"), shutil.which("prometheus")
    if not (promtool and prometheus):
        raise OpsToolError("Debian's 'prometheus' package installed but promtool/prometheus "
                           "are not on PATH")
    return promtool, prometheus


def ensure_chromium() -> tuple[str, str]:
    """Paths of (chromium, chromedriver); installs Debian's ``chromium`` and
    ``chromium-driver`` if missing."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser and driver:
        return browser, driver
    _apt_install("chromium", "chromium-driver")
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        raise OpsToolError("Debian's chromium and chromium-driver installed but chromium/"
                           "chromedriver are not on PATH")
    return browser, driver


def ensure_redis7() -> str:
    """Path of a redis-server of version 7 or later built with TLS (Debian's); installs
    Debian's ``redis-server`` if missing."""
    def usable(path: str) -> bool:
        done = subprocess.run([path, "--version"], capture_output=True, text=True,
                              check=False)
        version = done.stdout.split("v=")[1].split()[0] if "v=" in done.stdout else "0"
        return int(version.split(".")[0]) >= 7
    for candidate in ("/usr/bin/redis-server", shutil.which("redis-server")):
        if candidate and Path(candidate).exists() and usable(candidate):
            return candidate
    _apt_install("redis-server")
    if Path("/usr/bin/redis-server").exists() and usable("/usr/bin/redis-server"):
        return "/usr/bin/redis-server"
    raise OpsToolError("Debian's redis-server installed but /usr/bin/redis-server is not 7+")


def ensure_redis_exporter() -> str:
    """Path of redis_exporter; installs Debian's ``prometheus-redis-exporter`` if missing."""
    for name in ("prometheus-redis-exporter", "redis_exporter"):
        if found := shutil.which(name):
            return found
    _apt_install("prometheus-redis-exporter")
    found = shutil.which("prometheus-redis-exporter")
    if not found:
        raise OpsToolError("Debian's 'prometheus-redis-exporter' installed but its binary is "
                           "not on PATH")
    return found


class RedisExporter:
    """redis_exporter on 127.0.0.1:port, reading the Redis at ``redis_url``."""

    def __init__(self, binary: str, redis_url: str, port: int, log_path: Path) -> None:
        self.argv = [binary, f"-redis.addr={redis_url}",
                     f"-web.listen-address=127.0.0.1:{port}", "-include-system-metrics"]
        self.port, self.log_path = port, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> RedisExporter:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics",
                                            timeout=2) as resp:
                    if b"redis_up 1" in resp.read():
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise OpsToolError(f"redis_exporter did not report redis_up 1:\n{tail}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def check_jsonschema_argv() -> list[str]:
    """The check-jsonschema command (PyPI package, dev extra) of this Python environment."""
    import sys

    try:
        import check_jsonschema  # noqa: F401
    except ImportError:
        raise OpsToolError("check-jsonschema is not installed: `pip install -e '.[dev]'` "
                           "(or `pip install check-jsonschema`)") from None
    return [sys.executable, "-m", "check_jsonschema"]


# ---------------------------------------------------------------- files


def load_yaml(path: Path) -> Any:
    """YAML as plain dicts and lists (ruamel.yaml comes with check-jsonschema)."""
    from ruamel.yaml import YAML

    data = YAML(typ="safe", pure=True).load(path.read_text())
    return json.loads(json.dumps(data))


def write_yaml(path: Path, data: Any) -> Path:
    """Write as JSON, which every YAML reader (Prometheus, promtool) accepts."""
    path.write_text(json.dumps(data, indent=2))
    return path


def alert_rules(rules_file: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for g in rules_file["groups"] for r in g["rules"] if "alert" in r]


def all_rules(rules_file: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for g in rules_file["groups"] for r in g["rules"]]


@dataclass(frozen=True)
class PanelQuery:
    panel_id: int
    panel: str
    ref_id: str
    expr: str

    def describe(self) -> str:
        return f"panel {self.panel_id} {self.panel!r} target {self.ref_id}: {self.expr}"


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def dashboard_queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    """All Prometheus expressions of all panels, template variables substituted."""
    values = dict(GRAFANA_BUILTINS)
    for var in dashboard.get("templating", {}).get("list", []):
        current = var.get("current", {}).get("value")
        if isinstance(current, list):
            current = "|".join(current)
        values[var["name"]] = ".*" if current in (None, "$__all") else str(current)
    out = []
    for panel in iter_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            expr = substitute_variables(target["expr"], values)
            out.append(PanelQuery(panel["id"], panel["title"], target["refId"], expr))
    return out


def substitute_variables(expr: str, values: dict[str, str]) -> str:
    def repl(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"unknown dashboard variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, expr)


# ---------------------------------------------------------------- a Prometheus server


class PrometheusServer:
    """The real ``prometheus`` binary on 127.0.0.1:port with the given config."""

    def __init__(self, binary: str, config: Path, port: int, data_dir: Path) -> None:
        self.binary = binary
        self.config = config
        self.port = port
        self.data_dir = data_dir
        self.log_path = data_dir.parent / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> PrometheusServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, f"--config.file={self.config}",
                 f"--storage.tsdb.path={self.data_dir}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not self._ready():
            if self.proc.poll() is not None:
                raise OpsToolError(f"prometheus exited during start:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise OpsToolError(f"prometheus not ready within {timeout_s:.0f} s:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.2)
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return "(no log)"

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET /api/v1/<path>; the decoded JSON, also for 4xx answers (which carry error)."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return dict(json.loads(resp.read()))
        except urllib.error.HTTPError as exc:
            return dict(json.loads(exc.read() or b'{"status": "error", "error": "empty"}'))

    def query(self, expr: str) -> dict[str, Any]:
        return self.api("query", query=expr)


def finite_series(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """Series of an instant-query answer whose value is a finite number (what a panel draws)."""
    if answer.get("status") != "success":
        return []
    data = answer["data"]
    if data["resultType"] == "scalar":
        return [{"metric": {}, "value": data["result"]}] \
            if math.isfinite(float(data["result"][1])) else []
    return [s for s in data["result"] if math.isfinite(float(s["value"][1]))]
