"""A default launch (no --image): the pod runs Axolotl's own cloud image, whose start command installs our
code from the network volume (jobs/pod/bundle.py), then runs docker/entrypoint.sh. Through the real
launcher, the fake RunPod (its DOCKERARGS behaviour) and the real entrypoint, on this machine's CPU.

The stand-in for Axolotl's image is a venv on this machine whose Python sees this venv's packages
(Axolotl's stack) but not our code: this venv's site-packages is on its path as a plain folder, so the .pth
files there, our editable install among them, are not run. Its PATH has its python, `axolotl` and `uv`,
as Axolotl's image has (/workspace/axolotl-venv/bin, /root/.local/bin)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import ROOT

from brightrun import offline
from jobs.pod import bundle
from tests.fake_runpod import VolumeSync
from tests.jobs.pod.test_launch import BIN, launch, setup, the_run  # noqa: F401
from tests.s3_server import DATACENTER, s3_server

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


@pytest.mark.slow(110)
def test_a_default_launch_installs_our_code_on_axolotls_image_and_completes(tmp_path, sample_out, setup):  # noqa: F811
    """On a network volume, as on a real account: the bundle goes up through the S3 API with the data, the
    pod (Axolotl's image, no registry credentials) installs it at start and trains; the adapter comes home."""
    image = official_image(tmp_path / "image")
    with s3_server() as s3:
        bucket = "imagevolume"
        s3.volume(bucket)
        fake, env = setup(
            command=image_pod(image),
            network_volumes=[{"id": bucket, "name": "b", "size": 50, "dataCenterId": DATACENTER}],
            volume_sync=VolumeSync(s3.client(), bucket, every=0.3),
        )
        # No image of ours: neither --image nor BRIGHTRUN_IMAGE. The stand-in image already has what EXTRA
        # adds to Axolotl's stack, so no wheel of it is sent (setup's BRIGHTRUN_POD_WHEELS: an empty folder).
        drop = ("BRIGHTRUN_IMAGE", "BRIGHTRUN_VOLUME_DIR")
        env = {k: v for k, v in env.items() if k not in drop} | s3.env
        runs, log = tmp_path / "runs", tmp_path / "launch.log"
        mount = str(fake.workspace)  # the fake's pods are this machine: the volume is mounted there
        args = (
            "--network-volume",
            bucket,
            "--volume-path",
            mount,
            "max_steps=2",
            "brightrun_heldout_eval=false",
        )
        proc = launch(runs, sample_out, env, *args, log=log)
        assert proc.wait(600) == 0, log.read_text()[-4000:]
        job = the_run(env["DATABASE_URL"])
        assert (job.status, job.step) == ("completed", 2)
        assert (runs / job.id / "output" / "adapter_model.safetensors").is_file()

        [create] = fake.created  # either API, in GraphQL's input names (fake_runpod.py)
        assert create["imageName"] == HARDWARE_IMAGE and create["dockerArgs"] == bundle.START_COMMAND
        assert create["allowedCudaVersions"] == ["13.0"] and "containerRegistryAuthId" not in create
        pod_env = {p["key"]: p["value"] for p in create["env"]}
        key = pod_env["BRIGHTRUN_BUNDLE"].removeprefix(f"{mount}/")
        assert key.startswith("brightrun/")
        sent = {o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket, Prefix=key)["Contents"]}
        wheel = f"{key}/wheels/brightrun_lora-0.1.0-py3-none-any.whl"
        assert sent == {f"{key}/done", f"{key}/entrypoint.sh", wheel}
        entry = s3.client().get_object(Bucket=bucket, Key=f"{key}/entrypoint.sh")["Body"].read()
        assert entry == (ROOT / "docker" / "entrypoint.sh").read_bytes()
        assert "bundle: our code and 0 wheel(s)" in log.read_text()
    # The pod's Python is the image's, and our code in it is the wheel from the volume.
    site = Path(sysconfig.get_paths(vars={"base": str(image), "platbase": str(image)})["purelib"])
    assert (site / "jobs" / "__init__.py").is_file() and list(site.glob("brightrun_lora-0.1.0.dist-info"))
    train_log = (runs / job.id / "logs" / "train.log").read_text().splitlines()  # fetched from the volume
    [started] = [line for line in train_log if line.startswith("$ ")]
    assert started.startswith(f"$ {image / 'bin' / 'axolotl'} train "), started
    lineage = json.loads((runs / job.id / "run.json").read_text())
    assert lineage["launch"]["pod"]["dockerArgs"] == bundle.START_COMMAND  # a relaunch starts the same way
