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
LOG=$(mktemp)
"$BIN" serve --model assets/tiny/janus-pro-tiny --device cpu --host 127.0.0.1 --port "$PORT" \
  --api-key e2e-key >"$LOG" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -f "$LOG"' EXIT
for _ in $(seq 1 300); do
  if curl -fsS "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1; then break; fi
  if ! kill -0 $PID 2>/dev/null; then echo "janus serve exited:"; cat "$LOG"; exit 1; fi
  sleep 0.1
done
"$VENV/bin/python" scripts/e2e_openai.py "http://127.0.0.1:$PORT/v1" assets/tiny/images/wide.png
# SIGTERM drains and exits 0.
kill -TERM $PID
for _ in $(seq 1 100); do kill -0 $PID 2>/dev/null || break; sleep 0.1; done
wait $PID && echo "janus serve exited 0 on SIGTERM"
