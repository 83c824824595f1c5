"""The smoke render through real `axolotl train` on CPU: 2 steps, a PEFT adapter at the end."""

from __future__ import annotations

import json

import yaml
from conftest import ROOT, run_axolotl


def test_smoke_config_trains_two_steps(smoke_config, smoke_prepared):
    proc = run_axolotl("train", str(smoke_config), "--launcher", "python", cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cfg = yaml.safe_load(smoke_config.read_text())
    out = smoke_config.parent / "out"
    assert (out / "adapter_model.safetensors").stat().st_size > 0
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == cfg["lora_r"] == 16
    assert set(adapter["target_modules"]) == set(cfg["lora_target_modules"])
    state = json.loads(next(out.glob("checkpoint-*/trainer_state.json")).read_text())
    assert state["global_step"] == 2
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert len(losses) == 2 and all(loss > 0 for loss in losses)
