#!/usr/bin/env bash
# Abuse test: `janus serve` on the tiny model, its context widened to Janus-Pro's 4096 positions
# (a copy of assets/tiny/janus-pro-tiny whose config says so; the weights do not depend on it),
# sent what an abusive or sloppy client sends (scripts/abuse_test.py):
#   1. a chat of 2,000 user/assistant pairs beside a one-word chat: the one-word chat is answered
#      in under 1 s, and the long one answered or refused within 5 s;
#   2. 16 concurrent requests of eight 8000x8000 PNGs each: peak resident memory (VmHWM, reset
#      once idle) stays under 1.5 GiB above idle, and every answer is 200, 400, 413 or 429;
#   3. a fuzzing pass of mutated chat bodies through the real model: no 5xx.
# Then the image scenario again with --prepare-workers 16, where the image memory budget, not
# the worker pool, is what bounds the decodes.
# Usage: scripts/abuse-test.sh [--quick]   (--quick: CI's short bounds: scenario 2 with 4 requests
# of two images, 300 fuzzed bodies, no second run). Env: JANUS_BIN, ABUSE_FUZZ (bodies).
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK="${1:-}"
BIN="${JANUS_BIN:-target/release/janus}"
[ -x "$BIN" ] || cargo build --release --locked -p janus-server
WORK=$(mktemp -d)
cp -r assets/tiny/janus-pro-tiny "$WORK/tiny-4k"
python3 - "$WORK/tiny-4k/config.json" <<'PY'
import json, sys
p = sys.argv[1]
cfg = json.load(open(p))
cfg["language_config"]["max_position_embeddings"] = 4096
json.dump(cfg, open(p, "w"), indent=2)
PY
export TINY_MODEL="$WORK/tiny-4k"
# shellcheck source=scripts/tiny-server.sh
source scripts/tiny-server.sh
run() {
  PORT=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
  start_tiny_server --log warn "$@"
  trap 'kill $JANUS_PID 2>/dev/null || true; rm -rf "$WORK" "$JANUS_LOG_FILE"' EXIT
  python3 scripts/abuse_test.py --url "http://127.0.0.1:$PORT" --pid "$JANUS_PID" --cache "$WORK" $QUICK \
    ${ABUSE_FUZZ:+--fuzz "$ABUSE_FUZZ"} ${SCENARIOS:+--only "$SCENARIOS"} || { echo "server log:"; tail -50 "$JANUS_LOG_FILE"; exit 1; }
  stop_tiny_server || { echo "janus serve did not exit 0"; exit 1; }
}
run
if [ "$QUICK" != "--quick" ]; then
  echo "== again with --prepare-workers 16: the image memory budget bounds the decodes"
  SCENARIOS=images run --prepare-workers 16
fi
echo "abuse test passed"
