"""The GPU benchmark's harness on CPU (smoke profile, tiny model, real Axolotl), and its arithmetic."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

from bench.gpu import models, run


@pytest.mark.slow(100)
def test_the_harness_runs_the_smoke_profile_on_cpu(tmp_path, assets):
    proc = subprocess.run(
        [
            sys.executable,
            "bench/gpu/run.py",
            "--smoke",
            "--steps",
            "2",  # 1 warm-up + 1 timed: enough to check the harness's arithmetic (each CPU step ~15 s)
            "--work",
            str(tmp_path),
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [result] = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    timing = json.loads((tmp_path / "smoke" / "timing.json").read_text())
    assert [s["step"] for s in timing["steps"]] == [1, 2]
    assert result["steps_timed"] == 1  # the first step is warm-up
    rows = result["micro_batch_size"] * result["gradient_accumulation_steps"]
    # Real tokens only: more than the trained ones, never more than the packed rows can hold.
    for step in timing["steps"]:
        assert 0 < step["trained"] < step["tokens"] <= rows * result["sequence_len"]
    assert result["tokens_per_s"] == pytest.approx(
        sum(s["tokens"] for s in timing["steps"][1:]) / sum(s["seconds"] for s in timing["steps"][1:])
    )
    assert 0.5 < result["packing_efficiency"] <= 1.0 and result["hours_3_epochs"] > 0
    assert proc.stdout.splitlines()[-1].startswith("device cpu")  # the table is printed last
    assert proc.stdout.splitlines()[-2].startswith("smoke")


def test_extrapolation_is_the_line_through_two_depths():
    base = {"profile": "70b-qlora", "tokens_per_step": 4096.0, "trained_per_s": 100.0}
    two = base | {"seconds_per_step": 1.0, "peak_allocated_gb": 10.0, "peak_smi_gb": 11.0}
    four = base | {"seconds_per_step": 1.5, "peak_allocated_gb": 11.0, "peak_smi_gb": 12.0}
    full = run.extrapolate([(2, two), (4, four)], 80)
    assert full["seconds_per_step"] == pytest.approx(1.0 + 0.25 * 78)
    assert full["peak_allocated_gb"] == pytest.approx(10.0 + 0.5 * 78)
    assert full["tokens_per_s"] == pytest.approx(4096 / 20.5)
    assert full["extrapolated_from"] == [2, 4]


def test_costs_follow_tokens_throughput_and_prices():
    result = {
        "data_tokens_per_epoch": 720_000,
        "rows_per_epoch": 200,
        "sequence_len": 4096,
        "tokens_per_s": 1000.0,
    }
    hardware = {"price_per_hour": {"on_demand": 2.0, "spot": 0.5}, "gpu_count": 1}
    out = run.costs(result, hardware, params=8_000_000_000, tflops=800.0)
    assert out["hours_3_epochs"] == pytest.approx(3 * 720_000 / 1000 / 3600)
    assert out["cost_spot"] == pytest.approx(out["hours_3_epochs"] * 0.5)
    assert out["packing_efficiency"] == pytest.approx(720_000 / (200 * 4096))
    assert out["mfu"] == pytest.approx(6 * 8e9 * 1000 / 800e12)


def test_model_shapes_have_llama3_parameter_counts():
    import torch
    from transformers import LlamaForCausalLM

    # Meta's published sizes: Llama 3 8B = 8,030,261,248 and 70B = 70,553,706,496 parameters.
    assert models.parameters("8b") == 8_030_261_248
    assert models.parameters("70b") == 70_553_706_496
    with torch.device("meta"):  # shapes only, no memory
        truncated = LlamaForCausalLM(models.config("70b", layers=2))
    assert sum(p.numel() for p in truncated.parameters()) == models.parameters("70b", layers=2)


def test_measured_throughput_is_written_into_the_hardware_file(tmp_path):
    path = tmp_path / "h100-pcie.yaml"
    shutil.copyfile(ROOT / "axolotl_configs" / "hardware" / "h100-pcie.yaml", path)
    results = [
        {
            "profile": "8b",
            "name": "8b",
            "tokens_per_s": 5123.4,
            "device": "NVIDIA H100 PCIe",
            "attention": "sdpa",
        },
        {
            "profile": "70b-qlora",
            "name": "70b-qlora (2 layers)",
            "tokens_per_s": 9999.0,
            "device": "x",
            "attention": "sdpa",
        },
        {
            "profile": "70b-qlora",
            "name": "70b-qlora (80 layers, extrapolated from 2 and 4)",
            "tokens_per_s": 612.7,
            "device": "NVIDIA H100 PCIe",
            "attention": "sdpa",
            "extrapolated_from": [2, 4],
        },
    ]
    run.write_hardware(path, results, "2026-12-01")
    import yaml

    throughput = yaml.safe_load(path.read_text())["throughput"]
    assert throughput["8b"]["tokens_per_s"] == 5123
    assert throughput["70b-qlora"]["tokens_per_s"] == 613
    assert "measured 2026-12-01 on NVIDIA H100 PCIe" in throughput["70b-qlora"]["source"]
    assert (
        throughput["smoke"]
        == yaml.safe_load((ROOT / "axolotl_configs/hardware/h100-pcie.yaml").read_text())["throughput"][
            "smoke"
        ]
    )
