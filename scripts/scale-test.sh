#!/usr/bin/env bash
# Scale-out test (CI; about a minute on two cores, loopback only): three `janus serve` replicas on
# the tiny model behind nginx configured like a Kubernetes Service (least connections, passive
# health checks: a replica that refuses or drops a connection is skipped for a while), and
# `janus-eval geneval generate` through it with concurrency 6, all 553 GenEval prompts × 4
# samples. Mid-run one replica is SIGKILLed and another is drained as Kubernetes does it: taken
# out of the balancer first (the Service's endpoints; nginx reload), then, after a preStop pause,
# SIGTERM. Checks:
#   - the run finishes (janus-eval exits 0) with every image present;
#   - every image is byte-identical to a single-server run with the same seed (made first, by
#     one replica alone, at another concurrency, so in other batches);
#   - the drained replica failed no request: every request it accepted was answered 200, some
#     of them after SIGTERM, and it exited 0;
#   - the killed replica's lost requests were retried (run.json's traffic) and nothing is missing.
# Prints the figures (requests, retries, per-replica counts, times) as a Markdown table.
#
# Installs nginx with apt-get when missing (as root, or through sudo). Needs the release binaries
# (built when missing) and python3.
# Environment: JANUS_BIN, JANUS_EVAL_BIN (default target/release/...), SCALE_LIMIT (prompts,
# default all 553), SCALE_SAMPLES (4), SCALE_KEEP=1 keeps the work folder.
# SCALE_CONTAINER=1 runs the replicas as containers of the from-scratch CPU image
# (server/deploy/scratch-image.sh builds it; needs podman).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${JANUS_BIN:-target/release/janus}"
EVAL="${JANUS_EVAL_BIN:-target/release/janus-eval}"
LIMIT="${SCALE_LIMIT:-553}"
SAMPLES="${SCALE_SAMPLES:-4}"
SEED=7
CONTAINER="${SCALE_CONTAINER:-0}"
IMAGE="${SCALE_IMAGE:-localhost/janus-rs:cpu-scratch}"
T0=$(date +%s.%N)

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else echo "scale-test: need root to run: $*" >&2; return 1
  fi
}
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(date +%s.%N)"; }

[ -x "$BIN" ] || cargo build --release --locked -p janus-server
[ -x "$EVAL" ] || cargo build --release --locked -p janus-evals
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [ ! -x "$NGINX" ]; then
  echo "scale-test: installing Debian's nginx (apt-get)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null
  NGINX=/usr/sbin/nginx
fi
if [ "$CONTAINER" = 1 ]; then
  command -v podman >/dev/null || { echo "scale-test: SCALE_CONTAINER=1 needs podman"; exit 1; }
  podman image exists "$IMAGE" || server/deploy/scratch-image.sh
  # runc (crun refuses hybrid cgroups here); limits lowered, since this sandbox cannot raise them.
  PODMAN=(podman --runtime runc)
  ULIMITS=(--ulimit "nofile=4096:4096" --ulimit "nproc=4096:4096")
fi

WORK=$(mktemp -d)
chmod 755 "$WORK"
free_port() { python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }
NAMES=(a b c)
declare -A PORT PID
for r in "${NAMES[@]}"; do PORT[$r]=$(free_port); done
LB_PORT=$(free_port)
NGINX_PID=
cleanup() {
  for r in "${NAMES[@]}"; do
    if [ "$CONTAINER" = 1 ]; then "${PODMAN[@]}" rm -f "janus-scale-$r" >/dev/null 2>&1 || true
    elif [ -n "${PID[$r]:-}" ]; then kill -KILL "${PID[$r]}" 2>/dev/null || true; fi
  done
  [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null || true
  [ -n "${EVAL_PID:-}" ] && kill "$EVAL_PID" 2>/dev/null || true
  if [ "${SCALE_KEEP:-0}" = 1 ]; then echo "work folder kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# --- replicas ---------------------------------------------------------------------------------
start_replica() { # name
  local r=$1 p=${PORT[$1]}
  if [ "$CONTAINER" = 1 ]; then
    "${PODMAN[@]}" rm -f "janus-scale-$r" >/dev/null 2>&1 || true
    "${PODMAN[@]}" run -d --name "janus-scale-$r" --network host "${ULIMITS[@]}" \
      -v "$PWD/assets/tiny/janus-pro-tiny:/models/tiny:ro" "$IMAGE" \
      serve --model /models/tiny --device cpu --host 127.0.0.1 --port "$p" --log-format json >/dev/null
  else
    "$BIN" serve --model assets/tiny/janus-pro-tiny --device cpu --host 127.0.0.1 --port "$p" \
      --log-format json --shutdown-grace-secs 30 >"$WORK/$r.log" 2>&1 &
    PID[$r]=$!
  fi
}
replica_log() { # name -> file with its JSON log lines
  if [ "$CONTAINER" = 1 ]; then "${PODMAN[@]}" logs "janus-scale-$1" >"$WORK/$1.log" 2>&1 || true; fi
  echo "$WORK/$1.log"
}
signal_replica() { # name SIGNAL
  if [ "$CONTAINER" = 1 ]; then "${PODMAN[@]}" kill -s "$2" "janus-scale-$1" >/dev/null
  else kill -s "$2" "${PID[$1]}"; fi
}
wait_replica() { # name -> exit status
  if [ "$CONTAINER" = 1 ]; then "${PODMAN[@]}" wait "janus-scale-$1"
  else local rc=0; wait "${PID[$1]}" || rc=$?; echo "$rc"; fi
}
for r in "${NAMES[@]}"; do start_replica "$r"; done
for r in "${NAMES[@]}"; do
  for _ in $(seq 1 600); do
    curl -fsS "http://127.0.0.1:${PORT[$r]}/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS "http://127.0.0.1:${PORT[$r]}/ready" >/dev/null || { echo "replica $r never got ready:"; cat "$(replica_log "$r")"; exit 1; }
done
echo "replicas ready: a :${PORT[a]}, b :${PORT[b]}, c :${PORT[c]} ($( [ "$CONTAINER" = 1 ] && echo "containers of $IMAGE" || echo processes))"

# --- the reference: one replica alone, another concurrency (so other batches) ----------------
t=$(date +%s.%N)
"$EVAL" geneval generate --endpoint "http://127.0.0.1:${PORT[a]}" --concurrency 3 --limit "$LIMIT" \
  --samples "$SAMPLES" --seed "$SEED" --out "$WORK/single" --quiet
SINGLE_S=$(elapsed "$t")

# --- the balancer: a Service stand-in -------------------------------------------------------
write_nginx() { # replicas that are endpoints of the "Service"
  {
    echo "worker_processes 1; daemon off; pid $WORK/nginx.pid; error_log $WORK/nginx-error.log warn;"
    echo "events { worker_connections 256; }"
    echo "http {"
    echo "  log_format lb escape=json '\$status \$upstream_addr \$upstream_status \$request_time \$request_body';"
    echo "  access_log $WORK/nginx-access.log lb;"
    echo "  client_body_temp_path $WORK/tmp-body; proxy_temp_path $WORK/tmp-proxy;"
    echo "  fastcgi_temp_path $WORK/tmp-fcgi; uwsgi_temp_path $WORK/tmp-uwsgi; scgi_temp_path $WORK/tmp-scgi;"
    echo "  upstream janus {"
    echo "    least_conn;"
    for r in "$@"; do echo "    server 127.0.0.1:${PORT[$r]} max_fails=1 fail_timeout=10s;"; done
    echo "  }"
    echo "  server {"
    echo "    listen 127.0.0.1:$LB_PORT;"
    echo "    client_max_body_size 16m; client_body_buffer_size 1m;"
    echo "    proxy_buffers 64 16k; proxy_max_temp_file_size 0;"
    echo "    proxy_read_timeout 120s;"
    # a refused or failed connection goes to the next replica (POSTs are not re-sent once sent:
    # the client retries those)
    echo "    proxy_next_upstream error timeout http_502 http_503 http_504;"
    echo "    location / { proxy_pass http://janus; }"
    echo "  }"
    echo "}"
  } >"$WORK/nginx.conf"
}
write_nginx a b c
"$NGINX" -p "$WORK" -c "$WORK/nginx.conf" -t 2>/dev/null || "$NGINX" -p "$WORK" -c "$WORK/nginx.conf" -t
"$NGINX" -p "$WORK" -c "$WORK/nginx.conf" &
NGINX_PID=$!
for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$LB_PORT/ready" >/dev/null 2>&1 && break; sleep 0.1; done

# --- the run through the balancer, with a replica killed and another drained ------------------
t=$(date +%s.%N)
"$EVAL" geneval generate --endpoint "http://127.0.0.1:$LB_PORT" --concurrency 6 --limit "$LIMIT" \
  --samples "$SAMPLES" --seed "$SEED" --out "$WORK/lb" --retry-backoff-ms 250 --quiet 2>"$WORK/eval.err" &
EVAL_PID=$!
done_prompts() { find "$WORK/lb" -name "$(printf '%04d' $((SAMPLES - 1))).png" 2>/dev/null | wc -l; }
wait_for() { # fraction of prompts done
  local want
  want=$(python3 -c "import math,sys; print(math.ceil(int(sys.argv[1]) * float(sys.argv[2])))" "$LIMIT" "$1")
  while [ "$(done_prompts)" -lt "$want" ]; do
    kill -0 "$EVAL_PID" 2>/dev/null || { echo "janus-eval ended early:"; cat "$WORK/eval.err"; exit 1; }
    sleep 0.05
  done
}
if [ "${SCALE_FAULTS:-1}" = 0 ]; then wait "$EVAL_PID"; echo "no faults (SCALE_FAULTS=0)"; exit 0; fi
wait_for 0.25
KILLED_AT=$(done_prompts)
signal_replica b KILL
echo "SIGKILL replica b at $KILLED_AT/$LIMIT prompts"
wait_for 0.5
# SIGTERM c while the balancer still sends it requests (the harder case: Kubernetes' preStop
# pause would have taken it out of the Service first): its in-flight requests must finish with
# 200, and new connections find its listener closed, so nginx passes them to another replica.
DRAIN_AT=$(done_prompts)
signal_replica c TERM
echo "SIGTERM replica c (still in the balancer) at $DRAIN_AT/$LIMIT prompts"
EVAL_RC=0
wait "$EVAL_PID" || EVAL_RC=$?
EVAL_PID=
LB_S=$(elapsed "$t")
C_RC=$(wait_replica c)
B_RC=$(wait_replica b || true)
if [ "$EVAL_RC" != 0 ]; then echo "janus-eval failed ($EVAL_RC):"; tail -20 "$WORK/eval.err"; exit 1; fi
curl -fsS "http://127.0.0.1:${PORT[a]}/ready" >/dev/null || { echo "replica a is not ready after the run"; exit 1; }

# --- checks and figures ------------------------------------------------------------------------
python3 - "$WORK" "$LIMIT" "$SAMPLES" "$C_RC" "$B_RC" "$SINGLE_S" "$LB_S" "$(elapsed "$T0")" \
  "$(replica_log a)" "$(replica_log b)" "$(replica_log c)" "${PORT[a]}" "${PORT[b]}" "${PORT[c]}" <<'PY'
import json, os, sys, filecmp, collections
work, limit, samples, c_rc, b_rc, single_s, lb_s, total_s = sys.argv[1:9]
logs = dict(zip("abc", sys.argv[9:12])); ports = dict(zip("abc", sys.argv[12:15]))
limit, samples = int(limit), int(samples)
fails = []
single, lb = f"{work}/single", f"{work}/lb"
folders = sorted(d for d in os.listdir(lb) if d.isdigit())
missing = [f"{d}/samples/{i:04d}.png" for d in (f"{k:05d}" for k in range(limit)) for i in range(samples)
           if not os.path.isfile(f"{lb}/{d}/samples/{i:04d}.png")]
# the prompts selected are the first `limit` GenEval prompts, in folders named by their index
if len(folders) != limit: fails.append(f"{len(folders)} prompt folders, {limit} expected")
if missing: fails.append(f"{len(missing)} image(s) missing, e.g. {missing[:3]}")
differ = 0
for d in folders:
    for f in ["metadata.jsonl"] + [f"samples/{i:04d}.png" for i in range(samples)]:
        a, b = f"{single}/{d}/{f}", f"{lb}/{d}/{f}"
        if not (os.path.isfile(a) and os.path.isfile(b) and filecmp.cmp(a, b, shallow=False)): differ += 1
if differ: fails.append(f"{differ} file(s) differ from the single-server run")
leftovers = [os.path.join(r, f) for r, _, fs in os.walk(lb) for f in fs if f.endswith(".partial")]
if leftovers: fails.append(f"partial files left: {leftovers[:3]}")

def served(path):
    st, after = collections.Counter(), 0
    term = False
    for line in open(path, errors="replace"):
        try: j = json.loads(line)
        except ValueError: continue
        msg = j.get("fields", {}).get("message", "")
        if msg.startswith("shutting down"): term = True
        if msg == "served" and j.get("span", {}).get("route") == "/v1/images/generations":
            st[j["fields"]["status"]] += 1
            after += term
    return st, after
per = {r: served(logs[r]) for r in "abc"}
c_status, c_after = per["c"]
if not c_status: fails.append("the drained replica served no image request")
if set(c_status) - {200}: fails.append(f"the drained replica answered {dict(c_status)}")
if c_after == 0: fails.append("the drained replica had no request in flight at SIGTERM (the test proves nothing)")
if c_rc != "0": fails.append(f"the drained replica exited {c_rc}")

m = json.load(open(f"{lb}/run.json"))
sess = m["sessions"][-1]
tr = sess.get("traffic", {})
failed = collections.Counter()
for e in tr.get("endpoints", {}).values():
    failed.update(e.get("failed", {}))
if not m.get("finished"): fails.append("run.json is not marked finished")
if tr.get("retries", 0) == 0: fails.append("no request was retried: the SIGKILL lost nothing in flight? (the test proves nothing)")
nginx = collections.Counter()
up = collections.Counter()
for line in open(f"{work}/nginx-access.log"):
    parts = line.split(" ", 1)
    nginx[parts[0]] += 1
for r in "abc":
    up[r] = sum(per[r][0].values()) - (limit if r == "a" else 0)  # a also made the single-server run

print()
print("| scale test (tiny model, 3 replicas behind nginx least_conn, 2 cores) | value |")
print("| --- | --- |")
print(f"| prompts × samples | {limit} × {samples} = {limit * samples} images |")
print(f"| single replica, concurrency 3 | {single_s} s |")
print(f"| through nginx, concurrency 6, b SIGKILLed at 25 %, c SIGTERMed at 50 % | {lb_s} s |")
print(f"| client requests (janus-eval) | {tr.get('requests')} ({tr.get('retries')} retries; failures seen: {dict(failed) or 'none'}) |")
print(f"| nginx answers by status | {dict(nginx)} |")
print(f"| image requests answered by replica a / b / c | {up['a']} / {up['b']} (log lost at SIGKILL for processes: {dict(per['b'][0])}) / {up['c']} |")
print(f"| drained replica c: statuses, answered after SIGTERM, exit | {dict(c_status)}, {c_after}, {c_rc} |")
print(f"| files differing from the single-server run | {differ} of {limit * (samples + 1)} (PNGs + metadata) |")
print(f"| whole script | {total_s} s |")
if fails:
    print("SCALE TEST FAILED: " + "; ".join(fails)); sys.exit(1)
print("scale test passed")
PY
