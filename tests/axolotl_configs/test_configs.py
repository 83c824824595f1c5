"""Rendered Axolotl configs: every combination valid, goldens current, overrides strict, no secrets."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from itertools import product

import pytest
import yaml
from conftest import ROOT

from axolotl_configs import data as data_mod
from axolotl_configs import estimate, render, sweep
from axolotl_configs.profiles import HERE, Profiles
from brightrun.errors import ConfigError


def found(folder: str, suffix: str = ".yaml") -> list[str]:
    # Recursive on purpose: a profile in a subfolder must not escape the checks.
    names = sorted(
        p.relative_to(HERE / folder).with_suffix("").as_posix() for p in (HERE / folder).rglob(f"*{suffix}")
    )
    assert names, f"no {suffix} files under axolotl_configs/{folder}"
    return names


PRESETS, MODELS, HARDWARE = found("presets"), found("models"), found("hardware")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "axolotl_configs", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_profiles_found():
    assert PRESETS == ["aggressive", "balanced", "conservative"]
    assert MODELS == ["70b-qlora", "8b", "smoke", "smollm2-cpu"]
    assert len(HARDWARE) >= 3
    assert {t.name for t in (HERE / "templates").rglob("*.j2")} >= {"axolotl.yaml.j2"}


@pytest.mark.parametrize(("preset", "model", "hardware"), list(product(PRESETS, MODELS, HARDWARE)))
def test_every_combination_renders_and_validates(sample_out, preset, model, hardware):
    # key check + Axolotl's validator; the sample's longest line is counted in Llama 3 tokens
    result = render.render(preset, model, str(sample_out), hardware, overrides=["sequence_len=2048"])
    cfg = result.config
    p = Profiles.load(preset, model, hardware)
    assert cfg["lora_r"] == p.preset["axolotl"]["lora_r"]
    assert cfg["learning_rate"] == p.preset["axolotl"]["learning_rate"]
    assert cfg["lora_target_modules"] == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    assert cfg["datasets"][0]["path"] == f"{sample_out}/train.jsonl"
    assert cfg["datasets"][0]["message_field_training"] == "train"
    assert cfg["test_datasets"][0]["path"] == f"{sample_out}/val.jsonl"
    assert "val_set_size" not in cfg
    assert result.text.splitlines()[1].startswith("# Run:      axolotl train ")
    assert result.text.splitlines()[2].startswith("# Override: python -m axolotl_configs render ")
    if p.hardware["gpu_count"] > 1:
        assert cfg["fsdp_version"] == 2


def test_committed_renders_are_current(demo_converted):
    for preset, model in product(PRESETS, MODELS):
        path = render.golden_path(preset, model)
        data = render.golden_data(model, "data/converted/demo")
        expected = render.render(preset, model, data, out_path=path, check=False).text
        assert (ROOT / path).read_text("utf-8") == expected, f"{path} is stale: run `just configs-regen`"


def test_70b_profile_choices(demo_converted):
    cfg = render.render("balanced", "70b-qlora", "data/converted/demo", check=False).config
    assert cfg["adapter"] == "qlora" and cfg["load_in_4bit"] is True
    assert cfg["attn_implementation"] == "flash_attention_2" and cfg["sample_packing"] is True
    assert cfg["optimizer"] == "paged_adamw_8bit" and cfg["bf16"] is True and cfg["gradient_checkpointing"]
    assert "axolotl.integrations.liger.LigerPlugin" in cfg["plugins"] and cfg["cut_cross_entropy"] is True
    manifest = json.loads((demo_converted / "manifest.json").read_text())
    assert cfg["sequence_len"] >= manifest["tokens"]["longest_line"]["tokens"]
    assert cfg["excess_length_strategy"] == "raise"


def test_cpu_profile_is_cpu_safe(sample_out):
    cfg = render.render("balanced", "smoke", str(sample_out), check=False).config
    assert cfg["bf16"] is False and cfg["fp16"] is False and cfg["tf32"] is False
    assert not any(
        cfg[k] for k in ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "lora_embedding_kernel")
    )
    assert cfg["attn_implementation"] == "sdpa"


def test_batch_keeps_the_seeds_targets_per_step(sample_out):
    info = data_mod.read(sample_out)
    for preset in PRESETS:
        result = render.render(preset, "smoke", str(sample_out), check=False)
        rows = data_mod.pack(info.train_lengths, result.config["sequence_len"])
        per_step = result.config["gradient_accumulation_steps"] * info.train_targets / rows
        want = Profiles.load(preset, "smoke").preset["targets_per_step"]
        # The nearest whole number of rows: within half a row's worth of targets of the seed's number.
        assert abs(per_step - want) <= 0.5 * info.train_targets / rows + 1e-9


def test_unknown_key_fails_naming_it(sample_out):
    result = cli("render", "balanced", "smoke", "--data", str(sample_out), "lora_rr=8")
    assert result.returncode == 2
    assert "lora_rr: unknown key (did you mean lora_r?)" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_dataset_key_fails_naming_it(sample_out):
    with pytest.raises(
        ConfigError, match=r"datasets\[0\]\.field_mesages: unknown key \(did you mean field_messages\?\)"
    ):
        render.render("balanced", "smoke", str(sample_out), overrides=["datasets.0.field_mesages=messages"])


def test_wrong_type_fails_naming_the_key(sample_out, tmp_path):
    out = tmp_path / "c.yaml"
    result = cli(
        "render", "balanced", "smoke", "--data", str(sample_out), "learning_rate=abc", "--out", str(out)
    )
    assert result.returncode == 2
    assert "learning_rate" in result.stderr and "abc" in result.stderr
    assert not out.exists()


def test_overrides_land_in_place_and_are_recorded(sample_out):
    result = render.render(
        "balanced",
        "8b",
        str(sample_out),
        "h100-sxm-x4",
        overrides=["learning_rate=1e-4", "fsdp_config.offload_params=true", "weight_decay=0.01"],
    )
    cfg = result.config
    assert cfg["learning_rate"] == 1e-4
    assert cfg["fsdp_config"]["offload_params"] is True
    assert cfg["fsdp_config"]["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"  # the rest of the block stays
    assert cfg["weight_decay"] == 0.01
    assert (
        "# Overrides: learning_rate=0.0001 fsdp_config.offload_params=true weight_decay=0.01" in result.text
    )
    assert result.text.index("weight_decay: 0.01") > result.text.index(
        "── Where it runs"
    )  # no place above: last
    assert result.text.count("learning_rate:") == 1  # replaced where it stands, not appended twice


def test_sequence_len_shorter_than_a_line_fails(sample_out):
    with pytest.raises(ConfigError, match=r"sequence_len 512 is shorter than the longest converted line"):
        render.render("balanced", "smoke", str(sample_out), overrides=["sequence_len=512"])


def test_unknown_names_and_missing_data_fail_clearly(tmp_path):
    assert (
        "unknown preset 'balnced'; choose one of: aggressive, balanced, conservative"
        in cli("render", "balnced", "smoke").stderr
    )
    result = cli("render", "balanced", "smoke", "--data", str(tmp_path))
    assert result.returncode == 2 and "no converter manifest here" in result.stderr


def test_no_secret_values_in_renders(sample_out, monkeypatch):
    secrets = {
        "HF_TOKEN": "hf_SECRET_VALUE_1",
        "WANDB_API_KEY": "wandb-SECRET-2",
        "RUNPOD_API_KEY": "rp-SECRET-3",
        "TRAINING_WEBHOOK_SECRET": "whsec-SECRET-4",
        "JOBS_API_TOKEN": "jobs-SECRET-5",
    }
    for k, val in secrets.items():
        monkeypatch.setenv(k, val)
    texts = [
        render.render(p, m, str(sample_out), h, check=False, overrides=["sequence_len=2048"]).text
        for p, m, h in product(PRESETS, MODELS, HARDWARE)
    ]
    texts += [(HERE / "rendered" / f).read_text() for f in (HERE / "rendered").iterdir()]
    for text in texts:
        assert "SECRET" not in text
    for hw in HARDWARE:
        names = Profiles.load("balanced", "smoke", hw).hardware["secrets"]
        assert all(n.isupper() and n.replace("_", "").isalnum() for n in names)  # names, not values


def test_sweep_expands_to_valid_runnable_configs(sample_out, tmp_path):
    out = tmp_path / "sweep"
    files = sweep.expand("balanced", "smoke", HERE / "sweeps" / "lr-x-rank.yaml", out, str(sample_out))
    assert len(files) == 3 * 2  # learning_rate × (r, alpha) pairs
    configs = [yaml.safe_load(f.read_text()) for f in files]
    assert {(c["learning_rate"], c["lora_r"], c["lora_alpha"]) for c in configs} == {
        (lr, r, 2 * r) for lr in (1e-4, 2e-4, 3e-4) for r in (8, 16)
    }
    assert len({c["output_dir"] for c in configs}) == 6
    index = json.loads((out / "sweep.json").read_text())
    assert [i["file"] for i in index] == [f.name for f in files]


def test_bad_sweep_writes_nothing(sample_out, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: [1.0e-4, abc]\n")
    with pytest.raises(ConfigError, match=r"trial \d .*learning_rate"):
        sweep.expand("balanced", "smoke", bad, tmp_path / "out", str(sample_out))
    assert not (tmp_path / "out").exists()


def test_estimate_agrees_with_manifest_and_render(sample_out):
    manifest = json.loads((sample_out / "manifest.json").read_text())
    est = estimate.estimate("balanced", "70b-qlora", str(sample_out))
    result = render.render("balanced", "70b-qlora", str(sample_out), check=False)
    assert est.data.tokens_per_epoch == manifest["tokens"]["per_split"]["train"]["tokens"]
    rows = data_mod.pack(manifest["tokens"]["per_split"]["train"]["line_lengths"], 4096)
    assert est.numbers["rows_per_epoch"] == rows
    accum = result.config["gradient_accumulation_steps"]
    assert est.numbers["steps_per_epoch"] == math.ceil(rows / accum)
    assert est.numbers["total_steps"] == est.numbers["steps_per_epoch"] * 3
    assert est.fits and 35 < est.memory["weights"] < 40  # 70B at ~4.1 bits plus bf16 embeddings
    hours = sum(est.hours.values())
    assert est.costs["spot"] == pytest.approx(hours * 0.72)
    assert est.costs["on_demand"] == pytest.approx(hours * 1.99)


def test_estimate_warns_when_memory_exceeds_the_gpu(sample_out):
    result = cli("estimate", "balanced", "70b-qlora", "--data", str(sample_out), "--hardware", "cpu")
    assert result.returncode == 0, result.stderr
    assert "WARNING: the modelled peak" in result.stdout


def test_allow_drop_counts_the_lines_and_tells_axolotl_to_drop(sample_out):
    info = data_mod.read(sample_out)
    over = sum(n > 1024 for n in info.train_lengths)
    assert over > 0
    result = render.render(
        "balanced", "smoke", str(sample_out), overrides=["sequence_len=1024"], allow_drop=True
    )
    assert result.config["excess_length_strategy"] == "drop"
    assert result.derived["lines_dropped"] == over
    assert f"Axolotl drops the {over} line(s) that do not fit" in result.text
    plain = render.render("balanced", "smoke", str(sample_out), check=False)
    assert plain.config["excess_length_strategy"] == "raise" and plain.derived["lines_dropped"] == 0
