#!/usr/bin/env bash
# End-to-end: start `janus serve` on the tiny model (loopback, random free port) and drive it with
# the official `openai` Python package (installed into .venv-e2e). Needs the release binary
# (cargo build --release) and Python 3 with venv/pip.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${JANUS_BIN:-target/release/janus}"
VENV="${E2E_VENV:-.venv-e2e}"
[ -x "$BIN" ] || cargo build --release --locked -p janus-server
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -c "import openai" 2>/dev/null || "$VENV/bin/pip" install -q "openai>=1.40"
PORT=$("$VENV/bin/python" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
# shellcheck source=scripts/tiny-server.sh
source scripts/tiny-server.sh
start_tiny_server --api-key e2e-key
"$VENV/bin/python" scripts/e2e_openai.py "http://127.0.0.1:$PORT/v1" assets/tiny/images/wide.png
# SIGTERM drains and exits 0.
stop_tiny_server && echo "janus serve exited 0 on SIGTERM"
