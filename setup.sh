#!/usr/bin/env bash
# Set up everything this repo needs on a fresh machine (Python 3.11 and pip; no GPU, no model hub):
# .venv in the repo root holding exactly uv.lock (the whole stack at one version each, with hashes: torch's
# CPU build, the pinned Axolotl stack, `just` from PyPI's rust-just), compiled to bytecode, and the local
# assets (Llama 3 tokenizer, tiny Llama, SmolLM2 for the demo). Safe to run again: the venv is brought back to
# exactly the lock (a package installed by hand is removed), the assets are only filled in where missing.
set -euo pipefail
cd "$(dirname "$0")"

py=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    py=$candidate; break
  fi
done
[ -n "$py" ] || { echo "setup.sh: Python 3.11 is required (axolotl 0.19 is the stack pinned for it)" >&2; exit 2; }

[ -f uv.lock ] || { echo "setup.sh: uv.lock is missing: it comes with the repo (git checkout uv.lock), or \`uv lock\` makes it" >&2; exit 2; }
# The lock names torch's CPU build as a file on this machine (pyproject.toml's [tool.uv.sources] says why).
torch_wheel=$("$py" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["tool"]["uv"]["sources"]["torch"]["path"])')
[ -f "$torch_wheel" ] || { echo "setup.sh: $torch_wheel is missing: uv.lock installs torch's CPU build from that file (get it with \`pip download torch==2.13.0+cpu --no-deps --index-url https://download.pytorch.org/whl/cpu -d $(dirname "$torch_wheel")\`)" >&2; exit 2; }

# uv installs the lock. It comes first, at the version and sha256 the lock holds, through the venv's own pip
# (--require-hashes: nothing else can come in that way).
[ -x .venv/bin/python ] || "$py" -m venv .venv
uv_wanted=$("$py" -c 'import tomllib; print(*[p["version"] for p in tomllib.load(open("uv.lock", "rb"))["package"] if p["name"] == "uv"])')
[ -n "$uv_wanted" ] || { echo "setup.sh: uv.lock holds no uv (pyproject.toml's dev extra pins it): run \`uv lock\`" >&2; exit 2; }
if [ "$(.venv/bin/uv --version 2>/dev/null | cut -d' ' -f2)" != "$uv_wanted" ]; then
  "$py" - > .venv/uv-requirement.txt <<'EOF'
import tomllib
[uv] = [p for p in tomllib.load(open("uv.lock", "rb"))["package"] if p["name"] == "uv"]
print(f"uv=={uv['version']} " + " ".join(f"--hash={w['hash']}" for w in uv["wheels"]))
EOF
  # This machine's pip config lists local wheel folders that may not exist; pip warns for each one.
  .venv/bin/python -m pip install --quiet --no-compile --no-deps --require-hashes -r .venv/uv-requirement.txt 2>&1 \
    | sed '/^WARNING: Location .* is ignored/d'
fi

# A lock that no longer matches pyproject.toml is refused: nothing would say which side is right. Checked
# offline against the lock itself, so an upstream release can never fail it.
if ! check=$(.venv/bin/uv lock --check --offline --quiet 2>&1); then
  echo "setup.sh: \`uv lock --check\` failed: uv.lock is missing, unreadable, or does not match pyproject.toml (a dependency changed without a new lock). uv said:" >&2
  echo "$check" | sed 's/^/  /' >&2
  echo "To lock again: .venv/bin/uv lock && .venv/bin/uv sync --frozen --extra dev && .venv/bin/python -m jobs.pod.lockfile (what \`just lock\` runs); then commit uv.lock and jobs/pod/extra-requirements.txt" >&2
  exit 2
fi

# Exactly the lock: missing packages added, others removed, every file's hash checked; the dev extra
# holds the tools tests and CI use. --compile-bytecode: these machines run with PYTHONDONTWRITEBYTECODE=1,
# so without .pyc files every process would compile transformers, torch and Axolotl from source again;
# uv compiles the whole venv once, in parallel.
.venv/bin/uv sync --frozen --extra dev --compile-bytecode --quiet
.venv/bin/python assets/build.py --demo-model
echo "setup.sh: ready (.venv/bin/just --list shows the menu)"
