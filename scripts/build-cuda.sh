#!/usr/bin/env bash
# Build the CUDA `janus` binary on a machine without a GPU:
#
#   scripts/build-cuda.sh [extra cargo args]      -> target/cuda/release/janus
#
# Sets up the PyPI CUDA 13.0 toolchain first if needed (scripts/cuda-toolchain.sh), builds into
# target/cuda (CARGO_TARGET_DIR) so the CPU build in target/ is never touched, then lists what the
# binary needs at run time. On the GPU machine: `source scripts/gpu-env.sh` before running it.
#
# Env: JANUS_CUDA_HOME / JANUS_CUDA_ROOT / JANUS_CUDA_VENV (see cuda-toolchain.sh),
#      JANUS_CUDA_TARGET_DIR (default <repo>/target/cuda), CUDA_COMPUTE_CAP (default 90).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
ROOT="${JANUS_CUDA_ROOT:-${JANUS_CUDA_HOME:-$HOME/.cache/janus-cuda}/root}"
log() { printf '[build-cuda] %s\n' "$*" >&2; }

if [[ ! -f "$ROOT/env.sh" || ! -x "$ROOT/bin/nvcc" || ! -f "$ROOT/lib64/stubs/libcuda.so" ]]; then
  log "CUDA toolchain missing in $ROOT: running scripts/cuda-toolchain.sh"
  bash "$REPO/scripts/cuda-toolchain.sh" >/dev/null
fi
# shellcheck disable=SC1091
source "$ROOT/env.sh"
export CARGO_TARGET_DIR="${JANUS_CUDA_TARGET_DIR:-$REPO/target/cuda}"
log "CUDA_ROOT=$CUDA_ROOT CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
log "nvcc: $(command -v nvcc) ($(nvcc --version | sed -n 's/.*\(release [0-9.]*\),.*/\1/p'))"

start=$(date +%s)
cargo build --release --locked --features cuda -p janus-server "$@"
end=$(date +%s)
BIN="$CARGO_TARGET_DIR/release/janus"
[[ -x "$BIN" ]] || { log "no binary at $BIN"; exit 1; }

echo
echo "== built $BIN in $((end - start)) s"
size=$(stat -c %s "$BIN")
echo "size: $size bytes ($((size / 1048576)) MiB)"
# A stripped copy to carry to the GPU machine (symbol tables only; about 4 MB smaller). Most of the
# binary is .nv_fatbin: candle-kernels' GGUF/MoE kernels compiled to sm_90 SASS (~33 MB).
strip -o "$BIN.stripped" "$BIN"
ssize=$(stat -c %s "$BIN.stripped")
echo "stripped copy: $BIN.stripped, $ssize bytes ($((ssize / 1048576)) MiB)"
echo
echo "== NEEDED (SONAMEs the dynamic loader must find on the GPU machine):"
readelf -d "$BIN" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/  \1/p'
readelf -d "$BIN" | grep -E 'RPATH|RUNPATH' || echo "  (no RPATH/RUNPATH: libraries come from LD_LIBRARY_PATH / ld.so.cache)"
echo
echo "== highest symbol versions required (the GPU machine's glibc / libstdc++ must provide them):"
objdump -T "$BIN" 2>/dev/null | grep -oE '(GLIBC|GLIBCXX|CXXABI|GCC)_[0-9.]+' | sort -u -V \
  | awk -F_ '{last[$1]=$0} END {for (k in last) print "  " last[k]}' | sort
echo
echo "== ldd here, with the wheels' libraries and the libcuda stub on LD_LIBRARY_PATH:"
LD_LIBRARY_PATH="$JANUS_CUDA_STUB_LD_LIBRARY_PATH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd "$BIN" | sed 's/^/ /'
echo
echo "(libcublas.so.13 itself needs libcublasLt.so.13: it has to be on the path too.)"
echo "On the GPU machine: source scripts/gpu-env.sh path/to/janus && path/to/janus --help"
