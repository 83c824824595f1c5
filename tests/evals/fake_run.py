"""A finished run folder with only what the checks before any model read, for the evaluation's CLI tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

RENDERED = ROOT / "axolotl_configs" / "rendered"


def rendered(name: str) -> dict:
    """A config as the renderer writes it for a preset and model profile (axolotl_configs/rendered/)."""
    return yaml.safe_load((RENDERED / name).read_text())


def make_run(runs: Path, config: dict, base_model: str = "meta-llama/Meta-Llama-3-70B-Instruct") -> str:
    """The least of a finished run folder the checks before any model read: run.json, config.yaml, the
    adapter's config; its data is gone, which is the first thing checked after them."""
    run = runs / "r1"
    (run / "output").mkdir(parents=True)
    lineage = {"data": {"dir": str(runs / "no-data"), "manifest_sha256": "0"}}
    (run / "run.json").write_text(json.dumps(lineage))
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "base_model": base_model}))
    (run / "output" / "adapter_config.json").write_text(json.dumps({"r": 16, "target_modules": ["q_proj"]}))
    return run.name


@pytest.fixture
def runs(tmp_path, monkeypatch):
    from jobs import registry

    monkeypatch.setattr(registry, "DEFAULT_DB", registry.DEFAULT_DB)  # main() points it at runs/
    return tmp_path
