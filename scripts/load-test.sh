#!/usr/bin/env bash
# Load test (not in CI; takes minutes): `janus serve` on the tiny model, flooded by wrk with far
# more concurrency than it can serve, then checked:
#   - only 200 and 429 come back (wrk's non-2xx count equals the 429 count; no socket errors);
#   - every 200 is correct: the same fixed-seed PNG as a reference fetched before the load;
#   - the queue stays bounded: /metrics janus_queue_depth never exceeds --queue-capacity;
#   - memory stays bounded: RSS after the run ≤ RSS before it (after a warm-up) + margin
#     (LOAD_RSS_MARGIN_MB, default 32 MiB), with at least LOAD_MIN_REQUESTS (10,000) requests;
#   - the server still answers correctly afterwards and exits 0 on SIGTERM.
# Prints wrk's latency percentiles (all responses) and per-status percentiles from the server's
# own histogram. Usage: scripts/load-test.sh [SECONDS] (default 180); env: LOAD_CONNECTIONS (256),
# LOAD_THREADS (2), LOAD_QUEUE (32), LOAD_BATCH (8), JANUS_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-180}"
CONNS="${LOAD_CONNECTIONS:-256}"
THREADS="${LOAD_THREADS:-2}"
QUEUE="${LOAD_QUEUE:-32}"
BATCH="${LOAD_BATCH:-8}"
MARGIN_MB="${LOAD_RSS_MARGIN_MB:-32}"
MIN_REQUESTS="${LOAD_MIN_REQUESTS:-10000}"
BIN="${JANUS_BIN:-target/release/janus}"
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
[ -x "$BIN" ] || cargo build --release --locked -p janus-server
PORT=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
WORK=$(mktemp -d)
# shellcheck source=scripts/tiny-server.sh
source scripts/tiny-server.sh
start_tiny_server --queue-capacity "$QUEUE" --max-batch-images "$BATCH" --log warn
trap 'kill $JANUS_PID 2>/dev/null || true; [ -n "${SAMPLER:-}" ] && kill $SAMPLER 2>/dev/null; rm -rf "$WORK" "$JANUS_LOG_FILE"' EXIT
URL="http://127.0.0.1:$PORT"
BODY='{"prompt":"a lighthouse at dusk","n":1,"seed":42}'

b64_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["b64_json"])'; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$JANUS_PID/status"; }

curl -fsS "$URL/v1/images/generations" -H 'content-type: application/json' -d "$BODY" | b64_of >"$WORK/ref.b64"
python3 - "$WORK/ref.b64" <<'PY'
import base64, struct, sys
png = base64.b64decode(open(sys.argv[1]).read().strip())
assert png[:8] == b"\x89PNG\r\n\x1a\n", "reference is not a PNG"
w, h = struct.unpack(">II", png[16:24])
print(f"reference image: {w}x{h} PNG, {len(png)} bytes")
PY

cat >"$WORK/load.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("LOAD_BODY")
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  local f = assert(io.open(args[1], "r"))
  ref = f:read("*l")
  f:close()
  ok, busy, other, wrong = 0, 0, 0, 0
end
function response(status, headers, body)
  if status == 200 then
    local b64 = string.match(body, '"b64_json":"([^"]+)"')
    if b64 == ref then ok = ok + 1 else wrong = wrong + 1 end
  elseif status == 429 then
    busy = busy + 1
  else
    other = other + 1
  end
end
function done(summary, latency, requests)
  local t = {ok = 0, busy = 0, other = 0, wrong = 0}
  for _, th in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + th:get(k) end
  end
  io.write(string.format("STATUS ok200=%d wrong200=%d s429=%d other=%d\n", t.ok, t.wrong, t.busy, t.other))
  io.write(string.format("TOTAL requests=%d socket_errors=%d\n", summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
  for _, p in ipairs({50, 90, 99, 99.9}) do
    io.write(string.format("LATENCY p%s=%.1fms\n", p, latency:percentile(p) / 1000))
  end
end
LUA
export LOAD_BODY="$BODY"

echo "warm-up: 15 s at $CONNS connections"
wrk -t "$THREADS" -c "$CONNS" -d 15s --timeout 60s -s "$WORK/load.lua" "$URL/v1/images/generations" -- "$WORK/ref.b64" \
  | grep -E "^(STATUS|TOTAL)" | sed 's/^/  warm-up /'
sleep 3
RSS_BEFORE=$(rss_kb)

# Sample queue depth and RSS once a second while the load runs.
( while kill -0 "$JANUS_PID" 2>/dev/null; do
    q=$(curl -fsS --max-time 2 "$URL/metrics" 2>/dev/null | awk '/^janus_queue_depth / {print $2}')
    echo "${q:-NA} $(rss_kb)"
    sleep 1
  done ) >"$WORK/samples" &
SAMPLER=$!

echo "load: $DURATION s, $THREADS threads, $CONNS connections (queue capacity $QUEUE, batch $BATCH)"
wrk -t "$THREADS" -c "$CONNS" -d "${DURATION}s" --timeout 60s --latency -s "$WORK/load.lua" \
  "$URL/v1/images/generations" -- "$WORK/ref.b64" | tee "$WORK/wrk.out"
kill "$SAMPLER" 2>/dev/null || true
SAMPLER=
sleep 3
RSS_AFTER=$(rss_kb)

after=$(curl -fsS "$URL/v1/images/generations" -H 'content-type: application/json' -d "$BODY" | b64_of)
curl -fsS "$URL/metrics" >"$WORK/metrics"

python3 - "$WORK" "$RSS_BEFORE" "$RSS_AFTER" "$QUEUE" "$MARGIN_MB" "$MIN_REQUESTS" "$after" <<'PY'
import re, sys
work, rss_before, rss_after, queue, margin_mb, min_requests, after = sys.argv[1:8]
rss_before, rss_after, queue, margin_mb, min_requests = int(rss_before), int(rss_after), int(queue), int(margin_mb), int(min_requests)
out = open(f"{work}/wrk.out").read()
st = dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", re.search(r"^STATUS (.*)$", out, re.M).group(1)))
total = dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", re.search(r"^TOTAL (.*)$", out, re.M).group(1)))
samples = [l.split() for l in open(f"{work}/samples") if l.strip()]
depths = [float(q) for q, _ in samples if q != "NA"]
rss = [int(r) for _, r in samples if r.isdigit()]
ref = open(f"{work}/ref.b64").read().strip()
# Per-status latency from the server's histogram (bucket upper bounds).
m = open(f"{work}/metrics").read()
def pct(status, q):
    pat = rf'janus_http_request_duration_seconds_bucket\{{[^}}]*route="/v1/images/generations"[^}}]*status="{status}"[^}}]*le="([^"]+)"\}} (\d+)'
    b = sorted(((float("inf") if le == "+Inf" else float(le)), int(c)) for le, c in re.findall(pat, m))
    if not b or b[-1][1] == 0: return "n/a"
    n = b[-1][1]
    for le, c in b:
        if c >= q * n: return f"<= {le * 1000:g} ms"
print()
print(f"responses: {total['requests']} ({st['ok200']} x 200 correct, {st['wrong200']} x 200 wrong, "
      f"{st['s429']} x 429, {st['other']} other), socket errors {total['socket_errors']}")
for s in ("200", "429"):
    print(f"server-side latency {s}: p50 {pct(s, .5)}, p90 {pct(s, .9)}, p99 {pct(s, .99)}")
print(f"queue depth: max {max(depths) if depths else 'n/a'} of capacity {queue} ({len(depths)} samples)")
print(f"RSS: before {rss_before/1024:.1f} MiB, peak {max(rss)/1024 if rss else 0:.1f} MiB, after {rss_after/1024:.1f} MiB "
      f"(margin {margin_mb} MiB)")
fails = []
if st["other"] or total["socket_errors"]: fails.append("statuses other than 200/429 or socket errors")
if st["wrong200"]: fails.append("200s with a wrong image")
if st["ok200"] == 0: fails.append("no 200 at all")
if total["requests"] < min_requests: fails.append(f"fewer than {min_requests} requests")
if depths and max(depths) > queue: fails.append("queue depth over capacity")
if rss_after > rss_before + margin_mb * 1024: fails.append("RSS grew beyond the margin")
if after != ref: fails.append("the image after the load differs from the reference")
if fails:
    print("LOAD TEST FAILED: " + "; ".join(fails)); sys.exit(1)
print("load test passed")
PY
stop_tiny_server && echo "janus serve exited 0 on SIGTERM"
