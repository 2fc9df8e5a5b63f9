#!/usr/bin/env bash
# Regenerate the tiny Janus-Pro checkpoints (assets/tiny/) and the golden reference outputs
# (assets/golden/) with transformers' JanusForConditionalGeneration on CPU.
#
#   scripts/make-goldens.sh [extra args for make_goldens.py, e.g. --assets /tmp/out]
#
# Environment:
#   GOLDENS_PYTHON  use this python (an environment that already has the pinned packages) instead
#                   of creating the venv
#   GOLDENS_VENV    where to create the venv (default: <repo>/.venv-goldens, git-ignored)
#
# The outputs are deterministic for the pinned versions below. Do NOT add torchvision: with it,
# transformers would switch the Janus image processor to its torchvision backend by default (the
# script pins the PIL backend anyway, but keep the environment identical to the recorded one).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

PINS=(
  "torch==2.15.0"
  "transformers==5.24.0"
  "tokenizers==0.23.3"
  "safetensors==0.8.0"
  "huggingface_hub==2.4.0"
  "numpy==2.4.6"
  "pillow==13.0.0"
  "jinja2==3.1.6"
)

if [[ -n "${GOLDENS_PYTHON:-}" ]]; then
  py="$GOLDENS_PYTHON"
else
  venv="${GOLDENS_VENV:-$repo/.venv-goldens}"
  if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --upgrade pip >/dev/null
  fi
  "$venv/bin/python" -m pip install --quiet "${PINS[@]}"
  py="$venv/bin/python"
fi

"$py" - <<'PY'
import importlib.util, sys
if importlib.util.find_spec("torchvision") is not None:
    print("warning: torchvision is installed in this environment (not part of the pinned set)", file=sys.stderr)
PY

export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "$py" "$here/make_goldens.py" "$@"
