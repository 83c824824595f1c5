"""Preflight (jobs/preflight.py): each refusal offline, in one line, with nothing left behind. The launch's
own refusals (a 100 GB volume for the 70B) are in tests/jobs/pod/test_launch.py, the service's in
tests/jobs/service/test_customer_flow.py (a start for a model this machine cannot train)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from axolotl_configs.profiles import Profiles
from jobs import preflight
from jobs.service import pods
from tests.conftest import jobs_cli
from tests.fake_hub import FakeHub

GATED = "meta-llama/Meta-Llama-3-70B-Instruct"
EIGHT_B = "meta-llama/Meta-Llama-3-8B-Instruct"
REVISION = "0123456789abcdef0123456789abcdef01234567"


def here(tmp_path: Path, **extra: str) -> dict:
    """A machine with no GPU (whatever this one has), an empty Hub cache, its own registry; wide tables."""
    hf = tmp_path / "hf"
    return {
        "HF_HOME": str(hf),
        "HF_HUB_CACHE": str(hf / "hub"),
        "CUDA_VISIBLE_DEVICES": "",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'registry.db'}",
        "COLUMNS": "400",
    } | extra


def row(table: str, check: str, status: str) -> str:
    """The table's row for one check (rich draws "│" between cells); its text, or '' when absent."""
    found = re.search(rf"│ {re.escape(check)}\s+│ {status}\s+│ (.*?)\s*│\n", table)
    return found.group(1) if found else ""


def cache_model(cache: Path, repo: str, files: dict[str, bytes]) -> None:
    """huggingface_hub's cache layout: models--ORG--NAME/refs/main names a snapshot holding the files."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(REVISION)
    snapshot = folder / "snapshots" / REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)


def test_the_70b_on_a_machine_without_a_gpu_is_refused_in_one_line_and_nothing_is_made(tmp_path):
    """The issue's case: `just train balanced 70b-qlora max_steps=1` on a laptop. One line naming the
    missing GPU, the offline Hub and the way forward; no run folder, no row, nothing on stdout."""
    runs = tmp_path / "runs"
    done = jobs_cli(
        "--runs-dir", str(runs), "train", "balanced", "70b-qlora", "max_steps=1", env=here(tmp_path)
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    line = lines[0]
    assert line.startswith("error: preflight: hardware: no CUDA GPU here: 70b-qlora needs one"), line
    assert "4-bit weights" in line and "flash attention" in line
    assert f"base model: {GATED} is not in the Hub cache and the Hub is off (HF_HUB_OFFLINE=1" in line
    assert line.endswith(
        "(nothing was created); train it on a pod: "
        "`just launch balanced 70b-qlora --network-volume ID --max-cost USD` (README: RunPod)"
    ), line
    assert done.stdout == ""
    assert not runs.exists() or not any(runs.iterdir())
    assert not (tmp_path / "registry.db").exists()


def test_jobs_preflight_prints_every_check_and_exits_2_on_a_failure(tmp_path):
    failing = jobs_cli(
        "--runs-dir", str(tmp_path / "runs"), "preflight", "balanced", "70b-qlora", env=here(tmp_path)
    )
    assert failing.returncode == 2, failing.stderr
    assert "no CUDA GPU here" in row(failing.stdout, "hardware", "fail")
    assert "the Hub is off" in row(failing.stdout, "base model", "fail")
    assert "the base model 141.1 GB" in failing.stdout  # the profile's download_gb, the Hub being off
    assert failing.stderr.startswith("error: preflight: ") and len(failing.stderr.splitlines()) == 1

    passing = jobs_cli(
        "--runs-dir", str(tmp_path / "runs"), "preflight", "balanced", "smoke", env=here(tmp_path)
    )
    assert passing.returncode == 0, passing.stdout + passing.stderr
    assert "needs no GPU" in row(passing.stdout, "hardware", "pass")
    assert row(passing.stdout, "base model", "pass") == "a local model: assets/tiny-llama"
    assert "checkpoints" in row(passing.stdout, "disk", "pass")
    assert not (tmp_path / "runs").exists()


def test_a_model_counts_as_cached_only_with_every_weights_shard(tmp_path):
    cache = tmp_path / "hub"
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    cache_model(
        cache, EIGHT_B, {"config.json": b"{}", "model.safetensors.index.json": json.dumps(index).encode()}
    )
    assert not preflight.in_cache(EIGHT_B, cache)
    cache_model(cache, EIGHT_B, {"model-00001-of-00002.safetensors": b"1"})
    assert not preflight.in_cache(EIGHT_B, cache)  # a download cut short
    cache_model(cache, EIGHT_B, {"model-00002-of-00002.safetensors": b"2"})
    assert preflight.in_cache(EIGHT_B, cache)
    assert not preflight.in_cache(GATED, cache)

    # Through the CLI: the same cache is this machine's, so the base model passes offline (the GPU does not).
    done = jobs_cli(
        "--runs-dir",
        str(tmp_path / "runs"),
        "preflight",
        "balanced",
        "8b",
        env=here(tmp_path, HF_HUB_CACHE=str(cache)),
    )
    assert done.returncode == 2 and f"{EIGHT_B} is in the Hub cache" == row(done.stdout, "base model", "pass")
    assert "no CUDA GPU here: 8b needs one (flash attention)" in row(done.stdout, "hardware", "fail")


def test_a_gated_repo_without_access_is_refused_with_its_licence_page_and_with_access_passes(tmp_path):
    """A fake Hub (tests/fake_hub.py) answering as huggingface.co does: 403 GatedRepo for a token whose
    account has not been granted the model; the file list's sizes are what the disk check counts."""
    shards = [3_000_000_000, 2_000_000_000]
    with FakeHub(GATED, shards, granted={"hf_granted_token"}) as hub:
        online = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.url}
        refused = jobs_cli(
            "--runs-dir",
            str(tmp_path / "runs"),
            "preflight",
            "balanced",
            "70b-qlora",
            env=here(tmp_path, HF_TOKEN="hf_no_access_token", **online),
        )
        assert refused.returncode == 2
        said = row(refused.stdout, "base model", "fail")
        assert f"{GATED} is gated and HF_TOKEN's account has no access" in said, refused.stdout
        assert f"accept the licence at https://huggingface.co/{GATED}" in said
        assert "hf_no_access_token" not in refused.stdout + refused.stderr
        assert ("/api/models/" + GATED + "/auth-check", "Bearer hf_no_access_token") in hub.asked

        granted = jobs_cli(
            "--runs-dir",
            str(tmp_path / "runs"),
            "preflight",
            "balanced",
            "70b-qlora",
            env=here(tmp_path, HF_TOKEN="hf_granted_token", **online),
        )
        said = row(granted.stdout, "base model", "pass")
        assert f"{GATED}: on the Hub, HF_TOKEN's account has access" in said, granted.stdout
        assert "~5.0 GB" in said and "the base model 5.0 GB" in granted.stdout  # the shards, not the .pth
        assert granted.returncode == 2 and row(granted.stdout, "hardware", "fail")  # still no GPU here


def test_the_hardware_check_weighs_each_gpu_against_the_modelled_peak():
    values = preflight.planned_values(Profiles.load("balanced", "70b-qlora"))
    profiles = Profiles.load("balanced", "70b-qlora")
    small = preflight.hardware(profiles, values, gpus=[("NVIDIA A10G", 22.0)])
    assert small.status == "fail" and "exceeds this NVIDIA A10G's 22.0 GB" in small.detail
    big = preflight.hardware(profiles, values, gpus=[("NVIDIA H100 80GB HBM3", 79.1)])
    assert big.status == "pass" and big.detail.startswith("1 × NVIDIA H100 80GB HBM3 (79 GB)")
    # A longer sequence_len grows the activations: an override counts as the render would count it.
    longer = preflight.planned_values(profiles, ["sequence_len=65536"])
    assert preflight.peak_gb(profiles, longer) > preflight.peak_gb(profiles, values)
    four = Profiles.load("balanced", "70b-qlora", "h100-sxm-x4")
    one = preflight.hardware(four, preflight.planned_values(four), gpus=[("NVIDIA H100 80GB HBM3", 79.1)])
    assert one.status == "fail" and "trains on 4 GPUs; this process sees 1" in one.detail


def test_a_pod_job_whose_estimate_passes_its_deadline_is_refused_at_its_start():
    profiles = Profiles.load("balanced", "smoke", "h100-pcie")
    values = preflight.planned_values(profiles)
    fine = pods.pod_checks(profiles, values, 0.5, {"max_duration_hours": 1})
    assert [c.status for c in fine] == ["pass", "pass"]
    late = pods.pod_checks(profiles, values, 2.0, {"max_duration_hours": 1})
    assert late[-1].status == "fail" and "over runpod_config.max_duration_hours 1" in late[-1].detail
    assert "2.00 h" in late[-1].detail
