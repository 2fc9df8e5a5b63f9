#!/usr/bin/env bash
# Regenerate the tiny scorer checkpoints (DETR + CLIP) and their golden outputs in
# assets/tiny-eval/ with transformers on CPU (see scripts/make_eval_fixtures.py).
#
#   scripts/make_eval_fixtures.sh [--assets DIR]
#
# Environment:
#   EVAL_FIXTURES_PYTHON  use this python (default: /work/venv/bin/python if present, else the
#                         venv of scripts/make-goldens.sh, GOLDENS_VENV or <repo>/.venv-goldens)
#
# Needs torch, transformers, tokenizers, safetensors, numpy and pillow: the pinned set of
# scripts/make-goldens.sh (transformers 5.24.0, torch 2.15.0, tokenizers 0.23.3). No hub access:
# the configs are written by hand. No torchvision and no timm: the timm ResNet modules DETR
# needs are defined in the script with timm's names.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

py="${EVAL_FIXTURES_PYTHON:-}"
if [[ -z "$py" ]]; then
  if [[ -x /work/venv/bin/python ]]; then
    py=/work/venv/bin/python
  else
    venv="${GOLDENS_VENV:-$repo/.venv-goldens}"
    if [[ ! -x "$venv/bin/python" ]]; then
      echo "no python environment: run scripts/make-goldens.sh once (it creates $venv) or set EVAL_FIXTURES_PYTHON" >&2
      exit 1
    fi
    py="$venv/bin/python"
  fi
fi

export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "$py" "$here/make_eval_fixtures.py" "$@"
