#!/usr/bin/env bash
# Browser end-to-end tests of the playground at `/`: start `janus serve` on the tiny model
# (loopback, a free port, with an API key and --max-batch-images 4) and drive the page in headless
# Chromium with playwright-core (scripts/web_e2e.mjs). Idempotent; on a fresh machine it installs
# Debian's chromium with apt-get (as root, or through sudo) and playwright-core with `npm ci` into
# scripts/web-e2e/node_modules. Needs node >= 20 and npm.
#
#   WEB_E2E_SHOTS=assets scripts/web-e2e.sh   # also refresh the committed screenshots
#
# Environment: JANUS_BIN (default target/release/janus), CHROMIUM (default /usr/bin/chromium),
# WEB_E2E_SHOTS (where screenshots go; default target/web-e2e).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${JANUS_BIN:-target/release/janus}"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
NODE_DIR=scripts/web-e2e
KEY=web-e2e-key
MAX_BATCH=4

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else echo "web-e2e: need root to run: $*" >&2; return 1
  fi
}

[ -x "$BIN" ] || cargo build --release --locked -p janus-server

# Debian's chromium (a test tool's own browser download does not work on these machines).
if [ ! -x "$CHROMIUM" ]; then
  echo "web-e2e: installing Debian's chromium (apt-get)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium fonts-dejavu-core >/dev/null
fi
"$CHROMIUM" --version 2>/dev/null

command -v node >/dev/null && command -v npm >/dev/null || { echo "web-e2e: node (>= 20) and npm are required"; exit 1; }
# playwright-core at the locked version; `npm ci` only when it is missing or another version.
want=$(node -p "require('./$NODE_DIR/package-lock.json').packages['node_modules/playwright-core'].version")
have=$(node -p "try { require('./$NODE_DIR/node_modules/playwright-core/package.json').version } catch { '' }")
if [ "$want" != "$have" ]; then
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
fi

PORT=$(node -e "const s = require('net').createServer().listen(0, '127.0.0.1', () => { console.log(s.address().port); s.close(); })")
# shellcheck source=scripts/tiny-server.sh
source scripts/tiny-server.sh
start_tiny_server --api-key "$KEY" --max-batch-images "$MAX_BATCH"

status=0
WEB_E2E_URL="http://127.0.0.1:$PORT/" WEB_E2E_KEY="$KEY" WEB_E2E_MAX_BATCH="$MAX_BATCH" \
  WEB_E2E_IMAGE=assets/tiny/images/wide.png WEB_E2E_SHOTS="${WEB_E2E_SHOTS:-target/web-e2e}" \
  CHROMIUM="$CHROMIUM" node scripts/web_e2e.mjs || status=$?
if [ $status -ne 0 ]; then
  echo "--- janus serve log (last 40 lines)"
  tail -n 40 "$JANUS_LOG_FILE" | sed 's/\x1b\[[0-9;]*m//g'
fi
stop_tiny_server || true
exit $status
