"""Axolotl's own cloud image, which a default launch (no --image) runs: its start command installs our code
from the network volume (jobs/pod/bundle.py), then runs docker/entrypoint.sh. The stand-in for that image
is made here; the default launch on it, through the real launcher, the fake RunPod (its DOCKERARGS
behaviour) and the real entrypoint, on this machine's CPU, is test_launch's network-volume preemption test:
one pod run proves both, as a full run through Axolotl on CPU takes minutes.

The stand-in for Axolotl's image is a venv on this machine whose Python sees this venv's packages
(Axolotl's stack) but not our code: this venv's site-packages is on its path as a plain folder, so the .pth
files there, our editable install among them, are not run. Its PATH has its python, `axolotl` and `uv`,
as Axolotl's image has (/workspace/axolotl-venv/bin, /root/.local/bin)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from brightrun import offline

BIN = Path(sys.executable).parent
HARDWARE_IMAGE = "axolotlai/axolotl-cloud:0.19.0-py3.12-cu130-2.12.0"


def uv_binary() -> str:
    found = shutil.which("uv") or (str(BIN / "uv") if (BIN / "uv").is_file() else None)
    assert found, "uv is not installed: `bash setup.sh` installs the dev dependencies (pyproject.toml)"
    return found


def official_image(root: Path) -> Path:
    """The image stand-in (see above); returns its root. Made with the base interpreter, no pip."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    site = Path(sysconfig.get_paths(vars={"base": str(root), "platbase": str(root)})["purelib"])
    (site / "axolotl-stack.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", "utf-8")
    # `axolotl` as the image's venv has it: the same console script, run by the image's python.
    script = (BIN / "axolotl").read_text("utf-8").split("\n", 1)[1]
    (root / "bin" / "axolotl").write_text(f"#!{root / 'bin' / 'python'}\n{script}", "utf-8")
    (root / "bin" / "axolotl").chmod(0o755)
    (root / "bin" / "uv").symlink_to(uv_binary())
    return root


def image_pod(image: Path):
    """The image's environment and CMD (`sleep infinity`, Axolotl's Dockerfile-cloud-uv); a pod created
    with a start command (dockerArgs) runs that instead (tests/fake_runpod.py)."""

    def command(env: dict, volume: Path) -> list[str]:
        env.update(
            offline.ALL, PATH=f"{image / 'bin'}{os.pathsep}{env.get('PATH', '')}", BRIGHTRUN_HARDWARE="cpu"
        )
        return ["sleep", "infinity"]

    return command


def test_the_image_stand_in_has_axolotls_stack_and_not_our_code(tmp_path):
    image = official_image(tmp_path / "image")
    python = str(image / "bin" / "python")
    check = "import importlib.util as u; print(bool(u.find_spec('axolotl')), bool(u.find_spec('jobs')))"
    out = subprocess.run([python, "-c", check], capture_output=True, text=True, cwd=tmp_path, env={})
    assert out.stdout.split() == ["True", "False"], out.stderr
