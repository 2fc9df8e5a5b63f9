# shellcheck shell=bash
# Source this ON THE GPU MACHINE before running the CUDA `janus` binary:
#
#   source scripts/gpu-env.sh [path/to/janus]
#
# That machine has the NVIDIA driver (libcuda.so.1) but no CUDA toolkit and no network; its PyTorch
# installation carries the CUDA 13 runtime libraries in site-packages/nvidia/... . This finds the
# libraries the binary needs (its NEEDED entries when readelf is there, else the known list),
# prepends their folders to LD_LIBRARY_PATH, and, for any NEEDED name that the wheels ship only under
# another file name, makes a private folder of symlinks ($JANUS_GPU_LIBDIR, default
# $HOME/.cache/janus-cuda/gpu-libs). Prints what it found, warns about anything missing.
#
# Env: JANUS_BIN (binary to inspect), JANUS_PYTHON (default python3), JANUS_GPU_LIBDIR.

_janus_gpu_env() {
  local here bin py site nvdirs libdir name f dir missing=0 dirs="" found_any
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  bin="${1:-${JANUS_BIN:-}}"
  if [[ -z "$bin" ]]; then
    for f in "$here/../target/cuda/release/janus" "./janus" "$here/janus"; do
      [[ -x "$f" ]] && { bin="$f"; break; }
    done
  fi
  py="${JANUS_PYTHON:-python3}"
  libdir="${JANUS_GPU_LIBDIR:-$HOME/.cache/janus-cuda/gpu-libs}"

  # ---- which sonames: from the binary, else the list the cuda build is known to need
  # known list: libcublasLt is NEEDED by libcublas (not by the binary), libnvrtc only if used
  local known="libcuda.so.1 libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13"
  local needed="" n
  if [[ -n "$bin" && -f "$bin" ]] && command -v readelf >/dev/null 2>&1; then
    needed="$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')"
    echo "[gpu-env] NEEDED by $bin: $(echo $needed)"
  else
    echo "[gpu-env] ${bin:-no binary found}: readelf unavailable or no binary; using the known list"
  fi
  for n in $known; do case " $(echo $needed) " in *" $n "*) ;; *) needed="$needed $n" ;; esac; done

  # ---- where the pip wheels are: site-packages/nvidia/... of the Python that has PyTorch
  site="$("$py" -c 'import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]))' 2>/dev/null)"
  nvdirs=""
  [[ -n "$site" && -d "$site/nvidia" ]] && nvdirs="$site/nvidia"
  if [[ -z "$nvdirs" ]]; then
    echo "[gpu-env] '$py -c import nvidia' failed; searching the disk for site-packages/nvidia"
    nvdirs="$(find /usr /opt /root /home "${CONDA_PREFIX:-/nonexistent}" "${VIRTUAL_ENV:-/nonexistent}" \
               -maxdepth 7 -type d -path '*-packages/nvidia' 2>/dev/null | sort -u)"
  fi
  # torch/lib as a last resort (some builds bundle libraries there)
  local torchlib
  torchlib="$("$py" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null)"
  [[ -n "$torchlib" && -d "$torchlib" ]] || torchlib=""
  if [[ -z "$nvdirs$torchlib" ]]; then
    echo "[gpu-env] WARNING: no site-packages/nvidia folder found: the CUDA 13 runtime libraries are missing" >&2
    return 1
  fi
  echo "[gpu-env] searching: $(echo $nvdirs $torchlib)"

  _jg_add_dir() { case ":$dirs:" in *":$1:"*) ;; *) dirs="${dirs:+$dirs:}$1" ;; esac; }

  for name in $needed; do
    case "$name" in
      libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|libgcc_s.so.*|libstdc++.so.*|ld-linux*) continue ;;
      libcuda.so.1)
        f="$( (ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 .*x86-64/{print $NF; exit}') )"
        [[ -z "$f" ]] && for d in /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/nvidia/lib64 /usr/lib; do
          [[ -e "$d/libcuda.so.1" ]] && { f="$d/libcuda.so.1"; break; }; done
        if [[ -n "$f" ]]; then echo "[gpu-env]   libcuda.so.1 -> $f (driver)"
        else echo "[gpu-env] WARNING: libcuda.so.1 (NVIDIA driver) not found" >&2; missing=$((missing + 1)); fi
        continue ;;
    esac
    # exact file name first
    f="$(find $nvdirs $torchlib -name "$name" \( -type f -o -type l \) 2>/dev/null | sort | head -n1)"
    if [[ -n "$f" ]]; then
      echo "[gpu-env]   $name -> $f"
      _jg_add_dir "$(dirname "$f")"
      continue
    fi
    # shipped under another name (e.g. libfoo.so.13.1.2 or libfoo.so): link it as $name
    local stem="${name%%.so*}"
    f="$(find $nvdirs $torchlib -name "$stem.so*" -type f 2>/dev/null | sort -V | tail -n1)"
    if [[ -n "$f" ]]; then
      mkdir -p "$libdir" && ln -sfn "$f" "$libdir/$name"
      echo "[gpu-env]   $name -> $libdir/$name -> $f (symlink made)"
      _jg_add_dir "$libdir"
    else
      echo "[gpu-env] WARNING: $name not found under $(echo $nvdirs $torchlib)" >&2
      missing=$((missing + 1))
    fi
  done
  unset -f _jg_add_dir

  # nvrtc dlopens its builtins library (same version) from its own folder / the loader path
  f="$(find $nvdirs $torchlib -name 'libnvrtc-builtins.so.13*' 2>/dev/null | head -n1)"
  [[ -n "$f" ]] && echo "[gpu-env]   (nvrtc builtins: $f)" \
                || echo "[gpu-env] WARNING: libnvrtc-builtins.so.13.* not found (runtime compilation would fail)" >&2

  if [[ ":${LD_LIBRARY_PATH:-}:" == *"/stubs"* ]]; then
    echo "[gpu-env] WARNING: LD_LIBRARY_PATH contains a 'stubs' folder; a stub libcuda.so.1 there would shadow the driver" >&2
  fi
  [[ -n "$dirs" ]] && export LD_LIBRARY_PATH="$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "[gpu-env] LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"

  if command -v nvidia-smi >/dev/null 2>&1; then
    echo "[gpu-env] $(nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader 2>/dev/null | head -n1)"
  fi
  if [[ -n "$bin" && -f "$bin" ]] && command -v ldd >/dev/null 2>&1; then
    local nf
    nf="$(ldd "$bin" 2>&1 | grep 'not found')"
    if [[ -n "$nf" ]]; then echo "[gpu-env] WARNING: ldd $bin still misses:" >&2; echo "$nf" >&2; missing=$((missing + 1))
    else echo "[gpu-env] ldd $bin: all libraries resolved"; fi
  fi
  [[ $missing -eq 0 ]] && echo "[gpu-env] ok" || echo "[gpu-env] $missing problem(s), see warnings above" >&2
  return 0
}
_janus_gpu_env "$@"
unset -f _janus_gpu_env
