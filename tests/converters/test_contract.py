"""The supervision contract, checked independently (tests/contract.py) on real files."""

from __future__ import annotations

import json
import shutil

import contract
import pytest
from conftest import DEMO, SAMPLE, run_cli


def test_sample_contract(sample_out):
    counts = contract.check(SAMPLE, sample_out)
    manifest = json.loads((sample_out / "manifest.json").read_text())
    assert counts["targets"] == manifest["counts"]["trained_targets"] == 60  # 63 pairs, 3 null targets
    assert counts["val_conversations"] == 1  # round(12 * 0.1)
    assert counts["heldout"] == manifest["counts"]["per_split"]["val"]["trained_targets"] > 0
    assert manifest["outputs"]["heldout.jsonl"]["lines"] == counts["heldout"]
    # Merging: one line per conversation, plus one for the pair whose history was edited.
    assert manifest["counts"]["lines"] == 13
    assert manifest["counts"]["own_context_lines"] == 1


def test_demo_contract(demo_out):
    counts = contract.check(DEMO, demo_out)
    manifest = json.loads((demo_out / "manifest.json").read_text())
    assert counts["targets"] == manifest["counts"]["trained_targets"]
    assert counts["heldout"] == manifest["counts"]["per_split"]["val"]["trained_targets"] > 0
    assert manifest["counts"]["own_context_lines"] >= 1
    assert manifest["counts"]["null_or_blank_targets"] >= 3
    assert manifest["repairs"]["by_field"]["target_response"] >= 1
    assert manifest["repairs"]["by_field"]["utf8_bom"] == 1


@pytest.mark.parametrize("min_quality", [3, 4.5])
def test_quality_filter_keeps_context(tmp_path, min_quality):
    out = tmp_path / "q"
    result = run_cli("convert", str(SAMPLE), "--out", str(out), "--min-quality", str(min_quality), "--quiet")
    assert result.returncode == 0, result.stderr
    counts = contract.check(SAMPLE, out, min_quality=min_quality)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["filtered_by_quality"] == 60 - counts["targets"] > 0
    # Filtered targets still appear as untrained context where later turns need them.
    lines = contract.read_lines(out)["train"] + contract.read_lines(out)["val"]
    untrained_assistant = sum(
        1 for ln in lines for m in ln["messages"] if m["role"] == "assistant" and not m["train"]
    )
    assert untrained_assistant > 0


def test_val_fraction_zero_keeps_everything(tmp_path):
    out = tmp_path / "all"
    assert (
        run_cli("convert", str(SAMPLE), "--out", str(out), "--val-fraction", "0", "--quiet").returncode == 0
    )
    counts = contract.check(SAMPLE, out)
    assert counts["val_conversations"] == 0 == counts["heldout"]
    assert (out / "val.jsonl").read_text() == "" == (out / "heldout.jsonl").read_text()


@pytest.mark.parametrize(
    "tamper",
    ["drop a record", "change the context", "change the reference", "change a label", "drop the profile"],
)
def test_heldout_check_fails_on_a_wrong_sidecar(sample_out, tmp_path, tamper):
    """The sidecar check can fail: each kind of damage to heldout.jsonl or the profile is caught."""
    out = tmp_path / "copy"
    shutil.copytree(sample_out, out)
    records = [json.loads(x) for x in (out / "heldout.jsonl").read_text("utf-8").splitlines()]
    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    if tamper == "drop a record":
        records.pop()
    elif tamper == "change the context":
        records[1]["messages"] = records[1]["messages"][1:]
    elif tamper == "change the reference":
        records[0]["reference"] += " "
    elif tamper == "change a label":
        records[0]["intensity"] = 0.0
    else:
        manifest["consultant_profile"] = {}
    (out / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), "utf-8")
    (out / "manifest.json").write_text(json.dumps(manifest), "utf-8")
    with pytest.raises(AssertionError):
        contract.check(SAMPLE, out)
