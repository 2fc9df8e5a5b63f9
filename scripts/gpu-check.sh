#!/usr/bin/env bash
# scripts/gpu-check.sh: the ONE prepared script for a (scarce, 15-minute) H200 lease.
#
#   bash scripts/gpu-check.sh            # on the GPU machine, from anywhere; $OUT must be set
#                                        # (defaults to ./gpu-check-out when not)
#
# What it does, in order (each step under a hard `timeout`, results written to $OUT as they come):
#   1. environment: source scripts/gpu-env.sh (CUDA 13 runtime libs from PyTorch's wheels; fatal if
#      it fails), nvidia-smi summary, python/torch/transformers versions, `janus --version`.   ~10 s
#   2. CUDA parity on the tiny checkpoints (assets/tiny/*, goldens assets/golden/t2i.*):
#      `janus generate --device cuda --dtype f32 --greedy` tokens must equal the goldens; VQ decode
#      of the golden vq_tokens within 1 of vq.pixels (and vs the CPU binary target/release/janus if
#      it was carried); bf16 token match fraction reported; sampled generation (device sampler and
#      top-k host rows) vs the CPU binary, same seed; the cuDNN build's VQ decode (report only).
#                                                                    -> $OUT/parity.json   ~30-90 s
#   3. Speed, random Janus-Pro-1B built on the GPU with transformers (no download), saved as
#      safetensors in $GPU_CHECK_WORK: ours (`janus generate --dtype bf16 -n 16`, warm-up + timed,
#      then n=1) vs transformers' generate(generation_mode="image") + decode_image_tokens (warm-up +
#      timed, then n=1), plus the HBM floor of docs/performance-and-users.md §7; `janus bench` of
#      both builds (the cuDNN one's VQ decode).                                  -> $OUT/bench.json
#                                                                                         ~90-200 s
#   3b. `janus bench --chat-requests 8` on that 1B (continuous batching, prefix caching; ours only)
#      if >= 200 s of the budget remain.                                 -> $OUT/chat-bench.txt ~40 s
#   4. The same for a random Janus-Pro-7B (n=16 only) if >= 150 s of the 420 s budget remain.
#                                                                                        ~120-200 s
#   Finally: $OUT/summary.md (parity verdict + markdown speed table), also printed.
#
# Duration: budget 420 s for the decisions (GPU_CHECK_BUDGET), hard stop for every step at 480 s
# after start (GPU_CHECK_HARD): expect 5-8 minutes. Everything goes to stdout and $OUT/gpu-check.log.
# Files in $OUT: gpu-check.log, env.json, nvidia-smi.txt, parity.json, bench.json, chat-bench.txt,
# summary.md.
#
# Env: OUT, JANUS_BIN (default target/cuda/release/janus), JANUS_CUDNN_BIN (default
# target/cudnn/release/janus: the `--features cudnn` build, optional), JANUS_CPU_BIN (default
# target/release/janus, optional), JANUS_PYTHON (default python3), GPU_CHECK_WORK (scratch for the
# saved random models, ~20 GB free needed for the 7B; default /tmp/janus-gpu-check),
# GPU_CHECK_BUDGET, GPU_CHECK_HARD, GPU_CHECK_SKIP_7B=1.
# CPU dry run of the whole flow (what was tested without a GPU; tiny random models instead of 1B/7B):
#   OUT=/tmp/gc JANUS_BIN=target/release/janus JANUS_PYTHON=/work/venv/bin/python GPU_CHECK_DEVICE=cpu \
#   GPU_CHECK_DTYPE=f32 GPU_CHECK_SIZE_A=tiny GPU_CHECK_SIZE_B=tiny bash scripts/gpu-check.sh
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 2
OUT="${OUT:-$REPO/gpu-check-out}"
mkdir -p "$OUT" || exit 2
PY="${JANUS_PYTHON:-python3}"
BIN="${JANUS_BIN:-target/cuda/release/janus}"
CPU_BIN="${JANUS_CPU_BIN:-target/release/janus}"
CUDNN_BIN="${JANUS_CUDNN_BIN:-target/cudnn/release/janus}"
WORK="${GPU_CHECK_WORK:-/tmp/janus-gpu-check}"
BUDGET="${GPU_CHECK_BUDGET:-420}"
HARD="${GPU_CHECK_HARD:-480}"
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
DTYPE="${GPU_CHECK_DTYPE:-bf16}"
SIZE_A="${GPU_CHECK_SIZE_A:-1b}"
SIZE_B="${GPU_CHECK_SIZE_B:-7b}"
T0=$(date +%s)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
       HF_HUB_DISABLE_PROGRESS_BARS=1
# keep every JIT-compiled kernel in the driver's cache between the many short janus processes
export CUDA_CACHE_MAXSIZE="${CUDA_CACHE_MAXSIZE:-2147483648}"

elapsed() { echo $(( $(date +%s) - T0 )); }
budget_left() { echo $(( BUDGET - $(elapsed) )); }
hard_left() { echo $(( HARD - $(elapsed) )); }
# seconds a step may run: at most $1, and never past the hard stop
cap() { local h; h=$(hard_left); (( h < $1 )) && echo $(( h > 1 ? h : 1 )) || echo "$1"; }
banner() { echo; echo "==== [$(elapsed)s / budget ${BUDGET}s] $*"; }
gpu_mem() { command -v nvidia-smi >/dev/null && timeout 10 nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader 2>/dev/null; }

main() {
  banner "gpu-check: repo $REPO, OUT=$OUT, binary $BIN, work $WORK"

  # ---------------------------------------------------------------- 1. environment
  banner "1. environment"
  if [[ ! -f scripts/gpu-env.sh ]]; then
    echo "FATAL: scripts/gpu-env.sh is missing from the working tree: cannot set up the CUDA runtime libraries"
    return 2
  fi
  [[ -f "$BIN" && ! -x "$BIN" ]] && chmod +x "$BIN" 2>/dev/null
  set +u
  # shellcheck disable=SC1091
  if ! source scripts/gpu-env.sh "$BIN"; then
    set -u
    echo "FATAL: 'source scripts/gpu-env.sh' failed: the CUDA 13 runtime libraries (PyTorch's site-packages/nvidia) were not found"
    return 2
  fi
  set -u
  if command -v nvidia-smi >/dev/null; then
    timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,compute_cap,clocks.max.sm,clocks.max.mem,power.limit \
      --format=csv 2>&1 | tee "$OUT/nvidia-smi.txt"
    timeout 20 nvidia-smi 2>&1 | head -n 25 | tee -a "$OUT/nvidia-smi.txt"
  else
    echo "WARNING: nvidia-smi not found"
  fi
  timeout 60 "$PY" scripts/gpu_bench.py env --out "$OUT" || echo "WARNING: python environment check failed"
  local bin_ok=0
  if [[ -x "$BIN" ]]; then
    if timeout 30 "$BIN" --version; then bin_ok=1; else echo "WARNING: $BIN --version failed (rc $?)"; fi
    command -v ldd >/dev/null && { ldd "$BIN" | grep -i 'not found' && echo "WARNING: unresolved libraries above"; }
  else
    echo "WARNING: no CUDA binary at $BIN: parity is skipped, the speed steps time only the reference"
  fi
  [[ -x "$CPU_BIN" ]] && echo "CPU binary present: $CPU_BIN" || echo "no CPU binary at $CPU_BIN (CPU comparison skipped)"
  if [[ -f "$CUDNN_BIN" ]]; then
    chmod +x "$CUDNN_BIN" 2>/dev/null
    set +u
    # shellcheck disable=SC1091
    source scripts/gpu-env.sh "$CUDNN_BIN" || echo "WARNING: gpu-env.sh found no libraries for $CUDNN_BIN"
    set -u
    timeout 30 "$CUDNN_BIN" --version || echo "WARNING: $CUDNN_BIN --version failed"
  else
    echo "no cuDNN binary at $CUDNN_BIN (its VQ decode check and bench are skipped)"
  fi
  mkdir -p "$WORK"
  df -h "$WORK" 2>/dev/null | tail -n 1
  echo "free memory: $(free -g 2>/dev/null | awk '/Mem:/{print $7 " GiB available of " $2}')"

  # ---------------------------------------------------------------- 2. CUDA parity (tiny)
  banner "2. CUDA parity on the tiny checkpoints"
  if [[ $bin_ok -eq 1 || -x "$BIN" ]]; then
    local t; t=$(cap 150)
    timeout -k 5 "$t" "$PY" scripts/gpu_bench.py parity --bin "$BIN" --cpu-bin "$CPU_BIN" --bin-cudnn "$CUDNN_BIN" --device "$DEVICE" \
      --out "$OUT" --workdir "$WORK/parity" --deadline $(( $(date +%s) + t - 5 )) --run-timeout 45
    echo "parity exit code: $? (0 pass, 1 fail, 2 no binary, 124/137 timeout)"
  else
    echo "skipped: no binary"
  fi
  echo "GPU memory now: $(gpu_mem)"

  # ---------------------------------------------------------------- 3. 1B speed
  banner "3. speed: random Janus-Pro-$SIZE_A ($DTYPE), n=16 and n=1"
  local t; t=$(cap 240)
  timeout -k 10 "$t" "$PY" scripts/gpu_bench.py bench --size "$SIZE_A" --device "$DEVICE" --dtype "$DTYPE" --n 16,1 --keep \
    --bin "$BIN" --bin-cudnn "$CUDNN_BIN" --out "$OUT" --workdir "$WORK" --deadline $(( $(date +%s) + t - 8 )) --ours-timeout 100
  echo "bench $SIZE_A exit code: $?"

  # ---------------------------------------------------------------- 3b. continuous batching (issue 16)
  banner "3b. chat: 8 concurrent answers vs one by one, and beside 4 images, on $SIZE_A"
  local model_a; model_a=$(ls -d "$WORK"/janus-random-"$SIZE_A"* 2>/dev/null | head -n 1)
  if [[ -x "$BIN" && -n "$model_a" ]] && (( $(budget_left) > 200 )); then
    t=$(cap 90)
    timeout -k 5 "$t" "$BIN" bench --model "$model_a" --device "$DEVICE" --dtype "$DTYPE" --chat-requests 8 \
      --chat-tokens 64 -n 4 2>&1 | grep -v ' INFO ' | tee "$OUT/chat-bench.txt"
    echo "chat bench exit code: ${PIPESTATUS[0]}"
  else
    echo "skipped: no binary, no saved $SIZE_A model, or under 200 s of budget left"
  fi
  rm -rf "$WORK"/janus-random-"$SIZE_A"* "$WORK"/runs-"$SIZE_A"*
  echo "GPU memory now: $(gpu_mem)"

  # ---------------------------------------------------------------- 4. 7B speed (if time allows)
  banner "4. speed: random Janus-Pro-$SIZE_B ($DTYPE), n=16"
  local left; left=$(budget_left)
  if [[ "${GPU_CHECK_SKIP_7B:-0}" == 1 ]]; then
    echo "skipped: GPU_CHECK_SKIP_7B=1"
  elif (( left < 150 )); then
    echo "skipped: only ${left}s of the ${BUDGET}s budget left (needs >= 150 s)"
  else
    t=$(cap 300)
    local tag="$SIZE_B"; [[ "$SIZE_B" == "$SIZE_A" ]] && tag="${SIZE_B}-b"
    echo "${left}s of the budget left; running with a ${t}s hard limit"
    timeout -k 10 "$t" "$PY" scripts/gpu_bench.py bench --size "$SIZE_B" --device "$DEVICE" --dtype "$DTYPE" --n 16 --tag "$tag" \
      --bin "$BIN" --out "$OUT" --workdir "$WORK" --deadline $(( $(date +%s) + t - 10 )) --ours-timeout 150
    echo "bench $SIZE_B exit code: $?"
    rm -rf "$WORK"/janus-random-"$SIZE_B"* "$WORK"/runs-"$SIZE_B"*
  fi

  # ---------------------------------------------------------------- summary
  banner "summary"
  timeout 30 "$PY" scripts/gpu_bench.py report --out "$OUT"
  banner "done in $(elapsed)s; files in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
}

main 2>&1 | tee -a "$OUT/gpu-check.log"
exit "${PIPESTATUS[0]}"
