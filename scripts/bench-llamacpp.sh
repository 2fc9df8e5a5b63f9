#!/usr/bin/env bash
# Peer benchmark (not in CI; the first run builds llama.cpp, ~10 min on 2 cores, then ~30 min of
# benchmarks): llama.cpp on CPU against `janus bench`, on the same random Janus-Pro-1B weights.
#
#   1. llama.cpp from a pinned source release: the `llama-cpp-python` sdist on PyPI vendors it
#      (LLAMACPP_PY_VERSION; its CHANGELOG names the llama.cpp commit). Builds llama-bench,
#      llama-batched-bench and llama-quantize, CPU only (GGML_NATIVE, no CUDA/BLAS), nice'd, -j2.
#   2. Converts the checkpoint's language model to `llama` GGUFs (scripts/llamacpp_gguf.py):
#      F32/BF16/F16, then llama-quantize to Q8_0 and Q4_K_M, twice: with the LM head (102,400
#      rows; for llama-bench) and with the 16,384-row image-token head as `output` (for
#      llama-batched-bench, so that a 2-sequence step does the work of our 2-row CFG step).
#   3. Times llama-bench (pp512, tg64, 1 sequence) and llama-batched-bench (2 parallel
#      sequences, 32-token prompts, 64 steps), then `janus bench -n 1` (2 CFG rows per step) on
#      the default prompt for the step and on a long prompt (~2x256 rows) for the prompt rate.
#   4. Prints one markdown table (also written to $OUT/llamacpp-vs-janus.md) for docs/PERF.md.
#
# Usage: scripts/bench-llamacpp.sh [MODEL_DIR]   (default /tmp/w1/janus-random-1b; made with
# scripts/gpu_bench.py when absent and named janus-random-1b). Env:
#   LLAMACPP_DIR         cache of downloads, build and GGUFs (/tmp/llamacpp); reruns skip what is there
#   LLAMACPP_PY_VERSION  the pinned llama-cpp-python sdist (0.3.36 = llama.cpp 0c1e57098)
#   LLAMACPP_TYPES       llama.cpp types to bench ("f32 bf16 f16 q8_0 q4_k_m")
#   LLAMACPP_REPS        llama-bench repetitions (3)
#   THREADS              threads for llama.cpp (2; janus uses all cores)
#   OUT                  results ($LLAMACPP_DIR/out)
#   JANUS_BIN            (target/release/janus); PYTHON for making the model (/tmp/gold-venv/bin/python)
#   JANUS_PROMPT_REPEAT  copies of janus bench's default prompt in the long prompt (10)
#   LLAMACPP_AMX         1: keep llama.cpp's AMX kernels (0: build with -mno-amx-*; the default,
#                        as its AMX mul_mat faults on `ldtilecfg` here, cf. llama.cpp issue #20824)
# Each llama.cpp type is paired with our quant: f32/bf16/f16 with `none` (exact: bf16 weights,
# f32 compute on CPU), q8_0 with q8_0, q4_k_m with q4k.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "bench-llamacpp.sh: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
STAGES=()
stage_start() { STAGE_NAME=$1; STAGE_T0=$(date +%s); log "$1"; }
stage_end() { STAGES+=("$STAGE_NAME: $(($(date +%s) - STAGE_T0)) s"); }

case "${1:-}" in -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;; esac
[ $# -le 1 ] || die "usage: scripts/bench-llamacpp.sh [MODEL_DIR]"

MODEL="${1:-${MODEL_DIR:-/tmp/w1/janus-random-1b}}"
DIR="${LLAMACPP_DIR:-/tmp/llamacpp}"
PYVER="${LLAMACPP_PY_VERSION:-0.3.36}"
read -r -a TYPES <<<"${LLAMACPP_TYPES:-f32 bf16 f16 q8_0 q4_k_m}"
REPS="${LLAMACPP_REPS:-3}"
THREADS="${THREADS:-2}"
OUT="${OUT:-$DIR/out}"
BIN="${JANUS_BIN:-target/release/janus}"
PYTHON="${PYTHON:-/tmp/gold-venv/bin/python}"
REPEAT="${JANUS_PROMPT_REPEAT:-10}"
PP=512 TG=64 NPP=32

SDIST="llama_cpp_python-$PYVER"
SRC="$DIR/$SDIST/vendor/llama.cpp"
AMX="${LLAMACPP_AMX:-0}"
BUILD="$DIR/build-$PYVER$([ "$AMX" = 1 ] || echo -noamx)"
NOAMX=""
[ "$AMX" = 1 ] || NOAMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
VENV="$DIR/venv"
GGUF="$DIR/gguf"
for t in "${TYPES[@]}"; do
    case $t in f32 | bf16 | f16 | q8_0 | q4_k_m) ;; *) die "LLAMACPP_TYPES: unknown type $t (f32 bf16 f16 q8_0 q4_k_m)" ;; esac
done
mkdir -p "$DIR" "$GGUF" "$OUT"
for tool in python3 g++ lscpu; do command -v "$tool" >/dev/null || die "needs $tool"; done

wait_for_bin() { # the binary may be briefly missing while it is rebuilt
    local i
    for i in $(seq 60); do [ -x "$BIN" ] && return 0; [ "$i" = 1 ] && log "waiting for $BIN"; sleep 10; done
    die "$BIN is missing (cargo build --release -p janus-server)"
}

# --- 0. the model ------------------------------------------------------------------------------
if [ ! -f "$MODEL/config.json" ]; then
    [ "$(basename "$MODEL")" = janus-random-1b ] || die "$MODEL has no config.json (only janus-random-1b can be made here)"
    [ -x "$PYTHON" ] || die "making $MODEL needs PYTHON with torch+transformers ($PYTHON is missing)"
    wait_for_bin
    stage_start "making the random 1B in $MODEL"
    "$PYTHON" scripts/gpu_bench.py bench --size 1b --device cpu --no-ref --keep --out "$DIR/make-model" \
        --workdir "$(dirname "$MODEL")" --bin "$BIN" >&2 || die "scripts/gpu_bench.py failed to make $MODEL"
    [ -f "$MODEL/config.json" ] || die "scripts/gpu_bench.py did not leave $MODEL"
    stage_end
fi

# --- 1. tools: venv (cmake, ninja, gguf), sdist, build -----------------------------------------
stage_start "tools: venv, llama-cpp-python $PYVER sdist, llama.cpp build"
if [ ! -x "$VENV/bin/cmake" ]; then
    python3 -m venv "$VENV" || die "python3 -m venv failed"
    "$VENV/bin/pip" install -q cmake ninja numpy || die "pip install cmake ninja numpy failed"
fi
if [ ! -d "$SRC" ]; then
    # --no-binary for this package only: its build requirements (cmake, ninja) come as wheels.
    [ -f "$DIR/$SDIST.tar.gz" ] || "$VENV/bin/pip" download -q --no-deps --no-binary llama-cpp-python \
        -d "$DIR" "llama-cpp-python==$PYVER" || die "pip download llama-cpp-python==$PYVER failed"
    tar -xzf "$DIR/$SDIST.tar.gz" -C "$DIR" || die "cannot unpack $DIR/$SDIST.tar.gz"
    [ -f "$SRC/CMakeLists.txt" ] || die "$SDIST has no vendor/llama.cpp"
fi
"$VENV/bin/python" -c 'import gguf' 2>/dev/null || "$VENV/bin/pip" install -q "$SRC/gguf-py" ||
    die "pip install of llama.cpp's gguf-py failed"
COMMIT=$(sed -n "/^## \[$PYVER\]/,/^## \[/p" "$SRC/../../CHANGELOG.md" | grep -o 'llama.cpp@[0-9a-f]*' | head -1 || true)
COMMIT="${COMMIT#llama.cpp@}"
LB="$BUILD/bin/llama-bench" LBB="$BUILD/bin/llama-batched-bench" LQ="$BUILD/bin/llama-quantize"
if [ ! -x "$LB" ] || [ ! -x "$LBB" ] || [ ! -x "$LQ" ]; then
    nice -n 10 "$VENV/bin/cmake" -S "$SRC" -B "$BUILD" -G Ninja -DCMAKE_MAKE_PROGRAM="$VENV/bin/ninja" \
        -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_BLAS=OFF -DGGML_VULKAN=OFF \
        -DGGML_METAL=OFF -DGGML_CCACHE=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_OPENSSL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
        -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_UI=OFF -DCMAKE_C_FLAGS="$NOAMX" -DCMAKE_CXX_FLAGS="$NOAMX" >"$BUILD.configure.log" 2>&1 ||
        die "cmake configure failed (see $BUILD.configure.log)"
    nice -n 10 "$VENV/bin/cmake" --build "$BUILD" -j2 --target llama-bench llama-batched-bench llama-quantize \
        >"$BUILD.log" 2>&1 || die "llama.cpp build failed (see $BUILD.log)"
fi
stage_end

# --- 2. GGUFs ----------------------------------------------------------------------------------
stage_start "GGUFs (convert, quantize)"
need_bf16=0
for t in "${TYPES[@]}"; do case $t in q*) need_bf16=1 ;; esac; done
gguf_of() { echo "$GGUF/janus-$1-$2.gguf"; } # head type
for head in lm gen; do
    for t in f32 bf16 f16; do
        f=$(gguf_of "$head" "$t")
        [[ " ${TYPES[*]} " == *" $t "* ]] || { [ "$t" = bf16 ] && [ $need_bf16 = 1 ]; } || continue
        [ -f "$f" ] && continue
        nice -n 10 "$VENV/bin/python" scripts/llamacpp_gguf.py "$MODEL" "$f" --type "$t" --head "$head" ||
            die "scripts/llamacpp_gguf.py failed for $f"
    done
    for t in q8_0 q4_k_m; do
        f=$(gguf_of "$head" "$t")
        if [[ " ${TYPES[*]} " != *" $t "* ]] || [ -f "$f" ]; then continue; fi
        log "llama-quantize $(basename "$f")"
        nice -n 10 "$LQ" "$(gguf_of "$head" bf16)" "$f.part" "${t^^}" "$THREADS" >"$f.log" 2>&1 ||
            die "llama-quantize to $t failed (see $f.log)"
        mv "$f.part" "$f"
    done
done
stage_end

# --- 3. benchmarks -----------------------------------------------------------------------------
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
stage_start "llama.cpp: llama-bench and llama-batched-bench"
for t in "${TYPES[@]}"; do
    log "  $t"
    "$LB" -m "$(gguf_of lm "$t")" -t "$THREADS" -p "$PP" -n "$TG" -r "$REPS" -o json \
        >"$OUT/llama-bench-$t.json" 2>"$OUT/llama-bench-$t.log" || die "llama-bench failed for $t (see $OUT/llama-bench-$t.log)"
    "$LBB" -m "$(gguf_of gen "$t")" -t "$THREADS" -c 2048 -b 2048 -ub 512 -npp "$NPP" -ntg "$TG" -npl 1,2 \
        --output-format jsonl >"$OUT/batched-bench-$t.out" 2>"$OUT/batched-bench-$t.log" ||
        die "llama-batched-bench failed for $t (see $OUT/batched-bench-$t.log)"
    grep '^{"n_kv_max"' "$OUT/batched-bench-$t.out" >"$OUT/batched-bench-$t.jsonl" ||
        die "no results from llama-batched-bench for $t (see $OUT/batched-bench-$t.out)"
done
stage_end

ours_quants=()
for t in "${TYPES[@]}"; do
    case $t in f32 | bf16 | f16) q=none ;; q8_0) q=q8_0 ;; q4_k_m) q=q4k ;; esac
    [[ " ${ours_quants[*]} " == *" $q "* ]] || ours_quants+=("$q")
done
QUANTS=$(IFS=,; echo "${ours_quants[*]}")
LONG_PROMPT=$(for _ in $(seq "$REPEAT"); do printf 'a photo of a red bicycle leaning against a brick wall '; done)
JANUS_ARGS=(bench --model "$MODEL" --device cpu -n 1 --quants "$QUANTS" --json)
JANUS_STEP="$BIN ${JANUS_ARGS[*]} --steps $TG"
JANUS_PREFILL="$BIN ${JANUS_ARGS[*]} --steps 1 --warmup 1 --prompt <the default prompt x$REPEAT>"
stage_start "janus bench: step (default prompt)"
wait_for_bin
"$BIN" "${JANUS_ARGS[@]}" --steps "$TG" >"$OUT/janus-step.json" 2>"$OUT/janus-step.log" ||
    die "janus bench failed (see $OUT/janus-step.log)"
stage_end
stage_start "janus bench: prompt rate (long prompt)"
wait_for_bin
"$BIN" "${JANUS_ARGS[@]}" --steps 1 --warmup 1 --prompt "$LONG_PROMPT" >"$OUT/janus-prefill.json" 2>"$OUT/janus-prefill.log" ||
    die "janus bench failed (see $OUT/janus-prefill.log)"
stage_end
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

# --- 4. the table ------------------------------------------------------------------------------
CPU=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
AMX_NOTE=$([ "$AMX" = 1 ] || echo ' without AMX (-mno-amx-*: its AMX mul_mat faults here)')
export AMX_NOTE OUT PP TG NPP REPS THREADS COMMIT PYVER CPU LOAD0 LOAD1 JANUS_STEP JANUS_PREFILL MODEL
TYPES_STR="${TYPES[*]}"
NPROC=$(nproc)
MEM_GIB=$(awk '/MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)
export TYPES_STR NPROC MEM_GIB
export LB_CMD="llama-bench -m janus-lm-TYPE.gguf -t $THREADS -p $PP -n $TG -r $REPS"
export LBB_CMD="llama-batched-bench -m janus-gen-TYPE.gguf -t $THREADS -c 2048 -b 2048 -ub 512 -npp $NPP -ntg $TG -npl 1,2"
"$VENV/bin/python" - >"$OUT/llamacpp-vs-janus.md" <<'EOF' || die "could not build the table from $OUT"
import json, os, datetime
E = os.environ
out = E["OUT"]
ours_q = {"f32": "none", "bf16": "none", "f16": "none", "q8_0": "q8_0", "q4_k_m": "q4k"}
step = {r["quant"]: r for r in json.load(open(f"{out}/janus-step.json"))}
pre = {r["quant"]: r for r in json.load(open(f"{out}/janus-prefill.json"))}
first = next(iter(step.values()))
rows, build = [], ""
for t in E["TYPES_STR"].split():
    lb = json.load(open(f"{out}/llama-bench-{t}.json"))
    build = f'{lb[0]["build_commit"]} (build {lb[0]["build_number"]})'
    pp = next(r["avg_ts"] for r in lb if r["n_prompt"] > 0 and r["n_gen"] == 0)
    tg = next(r["avg_ts"] for r in lb if r["n_gen"] > 0 and r["n_prompt"] == 0)
    bb = {r["pl"]: r for r in map(json.loads, open(f"{out}/batched-bench-{t}.jsonl"))}
    g1 = bb[1]["t_tg"] / bb[1]["tg"] * 1e3
    g2 = bb[2]["t_tg"] / bb[2]["tg"] * 1e3
    s, p = step[ours_q[t]], pre[ours_q[t]]
    ours_step = s["step_ms_median"]
    ours_pp = 2 * p["n"] * p["prompt_tokens"] / (p["prefill_ms"] / 1e3)
    rows.append(f'| {t.upper()} | {ours_q[t]} | {1e3 / tg:.1f} | {g1:.1f} | {g2:.1f} | {ours_step:.1f} '
                f'| {ours_step / g2:.2f} | {pp:.1f} | {ours_pp:.1f} | {ours_pp / pp:.2f} |')
date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
print(f"""### llama.cpp vs janus on CPU (random Janus-Pro-1B LM, `scripts/bench-llamacpp.sh`)

{date}; {E["CPU"]}, {E["NPROC"]} cores, {E["MEM_GIB"]} GiB; load average {E["LOAD0"]} before, {E["LOAD1"]} after.
llama.cpp {build} from the llama-cpp-python {E["PYVER"]} sdist (llama.cpp@{E["COMMIT"]}), CPU backend, GGML_NATIVE{E["AMX_NOTE"]}, {E["THREADS"]} threads.

| llama.cpp type | ours | llama.cpp tg{E["TG"]} ms/token (1 seq, LM head) | llama.cpp ms/step (1 seq, gen head) | llama.cpp ms/step (2 seqs, gen head) | ours ms/step (2 rows) | ours / llama.cpp 2-seq step | llama.cpp pp{E["PP"]} tokens/s | ours prompt rows/s | ours / llama.cpp prompt |
|---|---|---|---|---|---|---|---|---|---|
""" + "\n".join(rows) + f"""

- llama.cpp: `{E["LB_CMD"]}` (pp{E["PP"]}, tg{E["TG"]}; 102,400-row LM head) and `{E["LBB_CMD"]}` (`output` = the 16,384-row `vision_head`, vocabulary cut to 16,384): S_TG as ms per step (T_TG / {E["TG"]}) at B = 1 and 2 parallel sequences.
- ours: `{E["JANUS_STEP"]}`: median of {first["timed_steps"] - 1} steps of 2 CFG rows (prompt {first["prompt_tokens"]} tokens), the LM plus `gen_head` (16,384 wide); prompt rate from `{E["JANUS_PREFILL"]}`: 2 rows x {next(iter(pre.values()))["prompt_tokens"]} tokens over the prefill step (which includes the first image-token step's head and sampling).
- ratios: > 1 means ours takes longer per step / processes more prompt rows per second.
- GGUFs from `scripts/llamacpp_gguf.py` (Q/K permuted to llama.cpp's RoPE layout, synthetic SPM vocabulary, norms F32); Q8_0 and Q4_K_M by `llama-quantize` from BF16 (Q4_K_M keeps some tensors in Q6_K; ours `q4k` is Q4_K throughout). The gen-head variant has no `proj_out` (2048x2048) + GELU before `vision_head` and no image-token embedding MLP (~0.6% of our step's weights).""")
EOF
cat "$OUT/llamacpp-vs-janus.md"
echo
printf 'stage times: %s\n' "${STAGES[@]}" >&2
