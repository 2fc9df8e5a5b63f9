#!/usr/bin/env bash
# Set up a CUDA 13.0 build toolchain from PyPI wheels, so that `--features cuda` compiles on a machine
# without a GPU, a driver or a CUDA installation (only Rust, Python >= 3.9 with venv, gcc are needed).
#
#   scripts/cuda-toolchain.sh            # idempotent; re-running only repairs what is missing
#   source "$HOME/.cache/janus-cuda/root/env.sh"
#
# What it makes (see shared docs/cuda-build-notes.md):
#   $JANUS_CUDA_VENV  (default $HOME/.cache/janus-cuda/venv)  virtualenv with the pinned nvidia-* wheels
#   $JANUS_CUDA_ROOT  (default $HOME/.cache/janus-cuda/root)  a CUDA root folder of symlinks:
#       include/ bin/ nvvm/        -> site-packages/nvidia/cu13/{include,bin,nvvm}
#       lib64/lib*.so{,.13,.10}    -> links to the wheels' .so.13 / .so.10 files (unversioned for -l)
#       lib64/stubs/libcuda.so     a link-time stub of the driver library (SONAME libcuda.so.1) that
#                                  defines every cu* function cudarc declares; every one returns
#                                  CUDA_ERROR_STUB_LIBRARY (34). Never ship it or put it on the GPU
#                                  machine's LD_LIBRARY_PATH: there the real driver's libcuda.so.1 is used.
#       lib64/stubs/libcudnn.so    the same for cuDNN (SONAME libcudnn.so.9), for `--features cudnn`
#       env.sh                     the exports for the build (CUDA_ROOT, PATH, CUDA_COMPUTE_CAP, ...)
#
# Everything is pinned to CUDA 13.0: the GPU machine has driver 580 (CUDA 13.0), which cannot JIT PTX
# newer than ISA 9.0. Unpinned nvidia-nvvm/nvidia-cuda-crt would pull 13.5 and ptxas 13.0 then fails
# with "Unsupported .version 9.5".
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE="${JANUS_CUDA_HOME:-$HOME/.cache/janus-cuda}"
VENV="${JANUS_CUDA_VENV:-$BASE/venv}"
ROOT="${JANUS_CUDA_ROOT:-$BASE/root}"
PYTHON="${PYTHON:-python3}"
COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"

PKGS=(
  "nvidia-cuda-nvcc==13.0.*"
  "nvidia-nvvm==13.0.*"
  "nvidia-cuda-crt==13.0.*"
  "nvidia-cuda-runtime==13.0.*"
  "nvidia-cuda-cccl==13.0.*"
  "nvidia-cublas==13.0.*"
  "nvidia-cuda-nvrtc==13.0.*"
  "nvidia-curand==10.4.0.*"
)

log() { printf '[cuda-toolchain] %s\n' "$*" >&2; }
die() { printf '[cuda-toolchain] ERROR: %s\n' "$*" >&2; exit 1; }

command -v gcc >/dev/null || die "gcc is needed (host compiler for nvcc and for the libcuda stub)"
command -v cargo >/dev/null || die "cargo is needed"

# ---------------------------------------------------------------- 1. venv with the pinned wheels
stamp="$VENV/.janus-cuda-pkgs"
want="${PKGS[*]}"
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating virtualenv $VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV" || die "'$PYTHON -m venv' failed (Debian: apt-get install python3-venv)"
fi
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  log "installing ${PKGS[*]} (about 1.2 GB unpacked)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PKGS[@]}"
  printf '%s' "$want" >"$stamp"
else
  log "pinned wheels already installed in $VENV"
fi

NV="$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]))' 2>/dev/null)/nvidia" \
  || NV=""
if [[ -z "$NV" || ! -d "$NV/cu13" ]]; then
  NV="$(find "$VENV" -type d -path '*/site-packages/nvidia' -print -quit)"
fi
CU="$NV/cu13"
[[ -x "$CU/bin/nvcc" ]] || die "nvcc not found under $CU/bin (wheel layout changed?)"

# ---------------------------------------------------------------- 2. CUDA root folder of links
mkdir -p "$ROOT/lib64/stubs"
for d in include bin nvvm; do
  [[ -d "$CU/$d" ]] || die "$CU/$d missing"
  ln -sfn "$CU/$d" "$ROOT/$d"
done

# unversioned link names for the linker (-lcudart etc.); targets are the SONAME files of the wheels
link_lib() { # name (e.g. cublas)
  local name="$1" f
  f="$(find "$CU/lib" "$NV" -maxdepth 3 -name "lib$name.so.[0-9]*" \( -type f -o -type l \) 2>/dev/null \
       | grep -E "/lib$name\.so\.[0-9]+$" | sort -V | tail -n1)"
  [[ -n "$f" ]] || die "lib$name.so.* not found under $NV"
  ln -sfn "$f" "$ROOT/lib64/lib$name.so"
  ln -sfn "$f" "$ROOT/lib64/$(basename "$f")"   # the SONAME too, as in a real toolkit's lib64
  log "lib64/lib$name.so, lib64/$(basename "$f") -> $f"
}
for l in cudart cublas cublasLt nvrtc curand; do link_lib "$l"; done

# ---------------------------------------------------------------- 3. libcuda.so link-time stub
find_cudarc() {
  local v d
  v="$(awk '/^name = "cudarc"$/{getline; gsub(/[" ]/,""); sub(/version=/,""); print; exit}' "$REPO/Cargo.lock" 2>/dev/null || true)"
  [[ -n "$v" ]] || return 1
  for d in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-"$v"; do
    [[ -f "$d/src/driver/sys/mod.rs" ]] && { echo "$d"; return 0; }
  done
  return 1
}
CUDARC="$(find_cudarc || true)"
if [[ -z "$CUDARC" ]]; then
  log "cudarc sources not in the cargo registry yet: cargo fetch"
  (cd "$REPO" && cargo fetch --locked >/dev/null)
  CUDARC="$(find_cudarc)" || die "cudarc not found in Cargo.lock / ~/.cargo/registry/src"
fi
# A C file defining every `prefix*` function that cudarc's bindings in `sys_rs` declare, each
# returning `ret`, built as lib64/stubs/lib<name>.so with the real library's SONAME.
make_stub() { # name soname sys_rs prefix ret min_count
  local name="$1" soname="$2" sys_rs="$3" prefix="$4" ret="$5" min="$6" n tmp
  local src="$ROOT/lib64/stubs/lib${name}_stub.c"
  tmp="$(mktemp)"
  {
    echo "/* Generated by scripts/cuda-toolchain.sh from $sys_rs."
    echo "   Link-time stand-in for $soname; every function returns $ret. Not for run time. */"
    grep -oE "pub unsafe fn $prefix[A-Za-z0-9_]+\\(" "$sys_rs" \
      | sed -E "s/pub unsafe fn ($prefix[A-Za-z0-9_]+)\\(/\\1/" | sort -u \
      | awk -v r="$ret" '{ printf "int %s(void) { return %s; }\n", $1, r }'
  } >"$tmp"
  n="$(grep -c "^int $prefix" "$tmp")"
  [[ "$n" -gt "$min" ]] || die "only $n $prefix* names found in $sys_rs"
  if ! cmp -s "$tmp" "$src" || [[ ! -f "$ROOT/lib64/stubs/lib$name.so" ]]; then
    mv "$tmp" "$src"
    gcc -shared -fPIC -O0 -Wl,-soname,"$soname" -o "$ROOT/lib64/stubs/lib$name.so" "$src"
    log "built lib64/stubs/lib$name.so ($n symbols, SONAME $soname)"
  else
    rm -f "$tmp"
    log "lib$name stub up to date ($n symbols)"
  fi
}
# the driver: CUDA_ERROR_STUB_LIBRARY (34)
make_stub cuda libcuda.so.1 "$CUDARC/src/driver/sys/mod.rs" cu 34 400
# cuDNN, for `--features cudnn` only (the GPU machine has the real one in PyTorch's
# site-packages/nvidia/cudnn/lib): CUDNN_STATUS_NOT_INITIALIZED (1001)
make_stub cudnn libcudnn.so.9 "$CUDARC/src/cudnn/sys/mod.rs" cudnn 1001 200
ln -sfn libcuda.so "$ROOT/lib64/stubs/libcuda.so.1"   # only for trying the binary here

# ---------------------------------------------------------------- 4. env.sh and checks
cat >"$ROOT/env.sh" <<EOF
# Generated by scripts/cuda-toolchain.sh: source before \`cargo build --features cuda\`.
export CUDA_ROOT="$ROOT"
export CUDA_HOME="$ROOT"
export CUDA_PATH="$ROOT"
case ":\$PATH:" in *":$ROOT/bin:"*) ;; *) export PATH="$ROOT/bin:\$PATH" ;; esac
export CUDA_COMPUTE_CAP="$COMPUTE_CAP"
case ":\${LIBRARY_PATH:-}:" in *":$ROOT/lib64:"*) ;; *) export LIBRARY_PATH="$ROOT/lib64:$ROOT/lib64/stubs\${LIBRARY_PATH:+:\$LIBRARY_PATH}" ;; esac
# Only to start the binary on this GPU-less machine (the stub makes every CUDA call fail):
export JANUS_CUDA_STUB_LD_LIBRARY_PATH="$ROOT/lib64:$ROOT/lib64/stubs"
EOF

ver="$("$ROOT/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')"
[[ "$ver" == "13.0" ]] || die "nvcc reports release '$ver', expected 13.0"
log "nvcc release $ver, ptxas: $("$ROOT/bin/ptxas" --version | tail -n1)"
log "CUDA root ready: $ROOT"
echo "# source this (also written to $ROOT/env.sh):"
cat "$ROOT/env.sh"
