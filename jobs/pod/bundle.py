"""Our code on the network volume, for a pod that runs Axolotl's own image (the default: no image of ours).

Axolotl's RunPod image, axolotlai/axolotl-cloud:{version}-py{python}-cu{cuda}-{torch}, holds Axolotl and
its whole stack, not this repo. So the launcher puts on the volume, under brightrun/<bundle id>/:
  wheels/       this repo as a wheel (`pip wheel --no-deps .`) and the wheels of what our pyproject.toml
                adds to Axolotl's stack (EXTRA), built for the image's Python (3.12, manylinux x86_64)
  entrypoint.sh docker/entrypoint.sh, as our Dockerfile's image runs it
  done          written last: its presence means the bundle is complete (a relaunch finds it there)
and the pod's start command (START_COMMAND, RunPod's `dockerArgs`) installs the wheels into the image's
Python, offline, from the volume, then runs the entrypoint. The bundle id is a hash of the wheels, so the
same code goes up once. Our Dockerfile's image (`jobs launch --image`) has all of it inside and starts faster.

The image's facts, from Axolotl's repo (github.com/axolotl-ai-cloud/axolotl @ 067b021c, 2026-07-24):
  * tags: .github/workflows/main.yml, job build-axolotl-cloud-uv, `tags:`
    axolotlai/axolotl-cloud:{version}-py{python_version}-cu{cuda}-{pytorch}; its matrix builds Python 3.12,
    cuda 130 (CUDA 13.0.0), torch 2.11.0 and 2.12.0 (is_latest): hence the hardware files' `image:` and
    `cuda: "13.0"`. Axolotl's RunPod hub template (.runpod/hub.json) filters hosts by allowedCudaVersions.
  * Python: docker/Dockerfile-uv-base makes the venv /workspace/axolotl-venv (`uv venv --relocatable`)
    and puts its bin first on PATH, with uv itself in /root/.local/bin (also on PATH). No VIRTUAL_ENV is
    set, so the install names the interpreter (`--python "$(command -v python)"`): `uv pip install
    --system` would skip a virtual environment and install into the interpreter the venv was made from.
  * start: docker/Dockerfile-cloud-uv keeps ENTRYPOINT /root/cloud-entrypoint.sh, whose last line is
    `exec "$@"` (scripts/cloud-entrypoint.sh): RunPod's dockerArgs ("container arguments", docs.runpod.io
    runpodctl create pod `--args`) become those arguments, as docker's CMD does.

uv installs a wheel given by path with --no-deps without checking its Requires-Python (uv 0.13.8, checked
here): our pyproject says <3.12 for the CPU venv, the image is 3.12.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from packaging.utils import canonicalize_name

from jobs.pod import lockfile
from jobs.runfolder import ROOT

# Axolotl's cloud image, the repo name: an image of it holds Axolotl, not our code (see above).
OFFICIAL = "axolotlai/axolotl-cloud"
# What our pyproject.toml's dependencies add to Axolotl 0.19.0's own requirements, at the versions uv.lock
# resolved: jobs/pod/extra-requirements.txt, which `just lock` derives from the lock (jobs/pod/lockfile.py
# says how; tests/jobs/pod/test_bundle.py checks it). Axolotl's image has the rest (torch, transformers,
# pydantic, fastapi, httpx, backoff, botocore, PyYAML, rich ...).
EXTRA = lockfile.read()
# The image's Python and platform for `pip download` (the image is Ubuntu 22.04 or newer: glibc >= 2.35).
PYTHON = lockfile.IMAGE["python_version"]
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in range(35, 16, -1)] + ["manylinux2014_x86_64"]
# Where the extra wheels are kept between launches (filled once from PyPI), unless BRIGHTRUN_POD_WHEELS
# names a folder of them (an offline launcher; the tests, whose stand-in image has them all already).
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "brightrun" / "pod-wheels"
PREFIX = "brightrun"
# What the wheel is built from (pyproject.toml's packages, and the README it names).
# versions: the artifact store, which the pod uploads a completed run to (jobs/pod/stored.py).
SOURCES = ("pyproject.toml", "README.md", "brightrun", "converters", "axolotl_configs", "jobs", "versions")
DONE = "done"
# The pod's start command (dockerArgs): the paths come from the pod's env (BRIGHTRUN_BUNDLE), so the same
# string works wherever the volume is mounted. No compile, no cache, no index: what is on the volume only.
START_COMMAND = (
    'bash -c \'set -e; uv pip install --python "$(command -v python)" --offline --no-index --no-deps '
    '--no-cache "$BRIGHTRUN_BUNDLE"/wheels/*.whl; exec bash "$BRIGHTRUN_BUNDLE"/entrypoint.sh\''
)


def installs_code(image: str) -> bool:
    """Whether a pod on `image` must install our code at start (Axolotl's own image) or has it (ours)."""
    return image.split("@")[0].rsplit(":", 1)[0] == OFFICIAL


def own_wheel(dest: Path) -> Path:
    """This repo as a wheel (no dependencies), built offline with the setuptools already here, from a
    copy of its packages: setuptools' build/ would otherwise carry files deleted since into the wheel.
    SOURCE_DATE_EPOCH fixes the zip's timestamps, so unchanged code hashes the same."""
    env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800"}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        for name in SOURCES:
            if (ROOT / name).is_dir():
                shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                src.mkdir(exist_ok=True)
                shutil.copyfile(ROOT / name, src / name)
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        out = subprocess.run([*cmd, "-w", str(dest), str(src)], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"building this repo's wheel failed:\n{out.stderr[-2000:]}")
    [wheel] = sorted(dest.glob("brightrun_lora-*.whl"))
    return wheel


def extra_wheels(say: Callable[[str], None]) -> list[Path]:
    """EXTRA's wheels for the image's Python, each at its pin: those in BRIGHTRUN_POD_WHEELS's folder (as
    given: an offline launcher, or the tests' empty one), or the cache's, downloaded once where missing.
    Other wheels in the folder (an older pin's) are left out."""
    given = os.environ.get("BRIGHTRUN_POD_WHEELS")
    folder = Path(given) if given else CACHE / f"py{PYTHON}"
    found, missing = pinned(folder)
    if missing and not given:
        say(f"bundle: downloading {len(missing)} wheel(s) for the image's Python {PYTHON} into {folder}")
        download(missing, folder)
        found, missing = pinned(folder)
    return found


def pinned(folder: Path) -> tuple[list[Path], list[str]]:
    """(the wheels in `folder` that are EXTRA's, at their pins; EXTRA's requirements without one)."""
    have = {}
    for path in folder.glob("*.whl"):
        name, version = path.name.split("-")[:2]
        have[(canonicalize_name(name), version)] = path
    found, missing = [], []
    for requirement in EXTRA:
        name, version = requirement.split("==")
        key = (canonicalize_name(name), version)
        if key in have:
            found.append(have[key])
        else:
            missing.append(requirement)
    return found, missing


def download(requirements: list[str] | tuple[str, ...], folder: Path, python: str = PYTHON) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--no-deps",
        "--only-binary=:all:",
        "-d",
        str(folder),
    ]
    cmd += ["--python-version", python, "--implementation", "cp", *platforms, *requirements]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"pip download of the pod's wheels failed:\n{out.stderr[-2000:]}")


def bundle_id(wheels: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(wheels, key=lambda p: p.name):
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def publish(volume, say: Callable[[str], None] = print) -> str:
    """Build (or reuse) the bundle and put it on the volume once; returns its key, brightrun/<id>."""
    with tempfile.TemporaryDirectory() as tmp:
        wheels = [own_wheel(Path(tmp)), *extra_wheels(say)]
        key = f"{PREFIX}/{bundle_id(wheels)}"
        if volume.has(f"{key}/{DONE}"):
            say(f"bundle: already on {volume} at {key}/")
            return key
        for wheel in wheels:
            volume.put(wheel, f"{key}/wheels/{wheel.name}")
        volume.put(ROOT / "docker" / "entrypoint.sh", f"{key}/entrypoint.sh")
        done = Path(tmp) / DONE
        done.write_text("\n".join(w.name for w in wheels) + "\n", "utf-8")
        volume.put(done, f"{key}/{DONE}")
        size = sum(w.stat().st_size for w in wheels) / 1e6
    say(f"bundle: our code and {len(wheels) - 1} wheel(s), {size:.1f} MB -> {volume} {key}/")
    return key


if __name__ == "__main__":  # python -m jobs.pod.bundle download DIR [PYTHON]: EXTRA's wheels, for offline use
    if len(sys.argv) < 3 or sys.argv[1] != "download":
        sys.exit("usage: python -m jobs.pod.bundle download DIR [PYTHON]  (then BRIGHTRUN_POD_WHEELS=DIR)")
    download(EXTRA, Path(sys.argv[2]), *(sys.argv[3:4] or [PYTHON]))
