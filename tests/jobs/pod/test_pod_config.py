"""The config a pod trains (jobs/pod/config.py), without training: rendered and published as `jobs launch`
does it, onto a local directory standing in for the pod's volume, then taken up as the pod's
`python -m jobs run-config` takes it up. Byte for byte, or refused as bad input (exit 2) with the reason."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, SPACED_OVERRIDE, SPACED_VALUE, TINY_MODEL_DIR, jobs_cli, jobs_env

from brightrun.errors import ConfigError
from jobs import registry
from jobs.pod import config as pod_config
from jobs.pod import volume as vol
from jobs.runfolder import sha256_file

OVERRIDES = ["max_steps=3", SPACED_OVERRIDE, f"base_model={TINY_MODEL_DIR}"]


@pytest.fixture
def published(tmp_path, sample_out):
    """What the launcher leaves behind for run-1 on a local volume: the data, configs/run-1/ (config and
    job.json), and its own runs/run-1/config.yaml. Returns (volume root, the pod's config, the launcher's)."""
    return publish(tmp_path, sample_out, "smoke", OVERRIDES)


def publish(tmp_path: Path, sample_out: Path, model: str, overrides: list[str]) -> tuple[Path, Path, Path]:
    volume = vol.LocalVolume(tmp_path / "volume")
    vol.put_dir(volume, sample_out, "datasets/sample", say=lambda _: None)
    pod_data = f"{volume.pod_root}/datasets/sample"
    rendered = pod_config.render(
        "balanced",
        model,
        str(sample_out),
        "h100-pcie",
        overrides,
        False,
        volume.pod_root,
        pod_data,
        "run-1",
    )
    lineage = {
        "run_id": "run-1",
        "preset": "balanced",
        "model": model,
        "hardware": "h100-pcie",
        "overrides": overrides,
        "data": {"pod_dir": pod_data, "manifest_sha256": sha256_file(sample_out / "manifest.json")},
        "lines_dropped_for_length": 0,
        "estimate": {"hours": 0.01, "cost_on_demand": 0.02, "peak_memory_gb": 1.0},
    }
    ours = tmp_path / "launcher" / "run-1" / "config.yaml"
    ours.parent.mkdir(parents=True)
    sha = pod_config.publish(volume, rendered, ours, lineage, "run-1")
    assert sha == sha256_file(ours)
    return volume.root, Path(pod_config.pod_path(volume.pod_root, "run-1")), ours


def test_the_pods_run_folder_gets_the_launchers_config_byte_for_byte(published):
    root, config, ours = published
    run_id = pod_config.prepare(str(config), str(root / "runs"), hardware="cpu")
    run_dir = root / "runs" / run_id
    assert run_id == "run-1"
    assert (run_dir / "config.yaml").read_bytes() == config.read_bytes() == ours.read_bytes()
    lineage = json.loads((run_dir / "run.json").read_text())
    assert lineage["config"] == {"path": str(run_dir / "config.yaml"), "sha256": sha256_file(ours)}
    assert (lineage["hardware"], lineage["rendered_for_hardware"]) == ("cpu", "h100-pcie")
    assert lineage["overrides"] == OVERRIDES and lineage["estimate"]["cost_on_demand"] == 0.02
    assert lineage["data"]["dir"] == str(root / "datasets" / "sample")
    assert (run_dir / "data-manifest.json").read_bytes() == (
        root / "datasets/sample/manifest.json"
    ).read_bytes()
    assert (run_dir / "env.json").is_file() and (run_dir / "logs").is_dir()
    # What a local run's config gets, with the pod's paths; the spaced override as it was given.
    got = yaml.safe_load(config.read_text())
    assert got["wandb_name"] == SPACED_VALUE
    assert got["datasets"][0]["path"] == f"{root}/datasets/sample/train.jsonl"
    assert got["output_dir"] == f"{run_dir}/output" and got["brightrun_run_dir"] == str(run_dir)
    assert got["brightrun_run_id"] == "run-1" and got["plugins"][-1] == "jobs.axolotl_plugin.RegistryPlugin"
    assert f"Run:      axolotl train {run_dir}/config.yaml" in config.read_text()


def spoil_config(root: Path, config: Path) -> dict:
    with config.open("a") as f:
        f.write("learning_rate: 0.1\n")
    return {}


def drop_job(root: Path, config: Path) -> dict:
    config.with_name("job.json").unlink()
    return {}


def job_without_sha(root: Path, config: Path) -> dict:
    job = json.loads(config.with_name("job.json").read_text())
    del job["config_sha256"]
    config.with_name("job.json").write_text(json.dumps(job))
    return {}


def drop_data(root: Path, config: Path) -> dict:
    shutil.rmtree(root / "datasets")
    return {}


def run_exists(root: Path, config: Path) -> dict:
    (root / "runs" / "run-1").mkdir(parents=True)
    return {}


@pytest.mark.parametrize(
    ("spoil", "args", "message"),
    [
        (spoil_config, {}, "that `jobs launch` rendered"),
        (drop_job, {}, "job.json: missing. A config run as it is comes with the job.json"),
        (job_without_sha, {}, "job.json: missing config_sha256"),
        (drop_data, {}, "not the data the config was rendered for"),
        (run_exists, {}, "runs/run-1 exists: `jobs resume run-1` continues it"),
        (None, {"run_id": "run-2"}, "brightrun_run_id: 'run-1', expected 'run-2'"),
        (None, {"runs_dir": "elsewhere"}, "was rendered for another run folder (brightrun_run_dir: "),
        (None, {"run_id": "../up"}, "--run-id '../up': 1-64 characters"),
        (None, {"hardware": "tpu"}, "unknown hardware 'tpu'"),
    ],
)
def test_a_config_that_is_not_the_launchers_is_refused(published, spoil, args, message):
    root, config, _ = published
    if spoil:
        spoil(root, config)
    runs_dir = args.pop("runs_dir", str(root / "runs"))
    before = sorted((root / "runs").rglob("*")) if (root / "runs").exists() else []
    with pytest.raises(ConfigError) as err:
        pod_config.prepare(str(config), runs_dir, **args)
    assert message in str(err.value)
    after = sorted((root / "runs").rglob("*")) if (root / "runs").exists() else []
    assert after == before  # nothing written


def test_run_config_exits_2_and_creates_nothing(published, tmp_path):
    root, config, _ = published
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    runs = ["--runs-dir", str(root / "runs")]
    missing = jobs_cli(*runs, "run-config", str(root / "configs/nope/config.yaml"), env={"DATABASE_URL": url})
    assert missing.returncode == 2 and "no such config" in missing.stderr, missing.stderr
    spoil_config(root, config)
    edited = jobs_cli(*runs, "run-config", str(config), "--hardware", "cpu", env={"DATABASE_URL": url})
    assert edited.returncode == 2 and "launch again rather than edit it" in edited.stderr, edited.stderr
    assert "Traceback" not in missing.stderr + edited.stderr
    assert not (root / "runs").exists()
    assert not (tmp_path / "registry.db").exists() or registry.list_jobs(url) == []


def test_a_pod_without_the_gpu_its_config_needs_is_refused_and_a_followed_one_ends_failed(
    tmp_path, sample_out
):
    """The pod's own start runs preflight on what it finds (jobs/preflight.py): the 70B's config on a host
    with no CUDA GPU and no way to the weights is refused in one line, the volume left as it was."""
    root, config, _ = publish(tmp_path, sample_out, "70b-qlora", ["max_steps=1"])
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    env = {"DATABASE_URL": url, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_CACHE": str(tmp_path / "hub")}
    done = jobs_cli("--runs-dir", str(root / "runs"), "run-config", str(config), env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: preflight: hardware: no CUDA GPU here: 70b-qlora needs one")
    assert "Meta-Llama-3-70B-Instruct is not in the Hub cache" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (root / "runs").exists()

    # On a pod its launcher follows (BRIGHTRUN_FOLLOWED=1, launch.py) the pod exists already: the refusal
    # is the run's end on the volume, failed with preflight's line, which the launcher reads and ends.
    followed = jobs_cli(
        "--runs-dir", str(root / "runs"), "run-config", str(config), env=env | {"BRIGHTRUN_FOLLOWED": "1"}
    )
    assert followed.returncode == 2, followed.stderr
    row = registry.get_job("run-1", url)
    assert row.status == "failed" and row.error_message.startswith("preflight: hardware: no CUDA GPU here")
    assert row.completed_at is not None
    # ...and a restarted container finds the run over (the entrypoint's question) instead of refusing again.
    assert jobs_cli("--runs-dir", str(root / "runs"), "run-config", str(config), env=env).returncode == 2
    finished = subprocess.run(
        [sys.executable, "-m", "jobs.runfolder", "finished", str(root / "runs" / "run-1")],
        env=jobs_env() | {"DATABASE_URL": url},
        cwd=ROOT,
    )
    assert finished.returncode == 0
