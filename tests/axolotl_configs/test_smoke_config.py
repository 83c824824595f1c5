"""The smoke render through real Axolotl on CPU, preprocessed once for the file: at the token level (the
tokens that carry labels decode to exactly the converter's trained targets, each followed by its
<|eot_id|>, and nothing else; every line's length equals the converter's own token count), then trained
(2 steps, a PEFT adapter at the end).
"""

from __future__ import annotations

import json
from collections import Counter

import contract
import pytest
import yaml
from conftest import ROOT, run_axolotl


@pytest.fixture(scope="module")
def prepared(smoke_prepared, sample_out):
    """Rows Axolotl tokenized and masked from the converter's sample output (train and val)."""
    from datasets import load_from_disk

    rows = [row for d in sorted(smoke_prepared.iterdir()) if d.is_dir() for row in load_from_disk(str(d))]
    return sample_out, rows


def labelled_spans(row) -> tuple[list[int], ...]:
    spans, current = [], []
    for tok_id, label in zip(row["input_ids"], row["labels"], strict=True):
        if label != -100:
            assert label == tok_id  # causal LM labels are the input ids (the shift happens in the loss)
            current.append(tok_id)
        elif current:
            spans.append(current)
            current = []
    if current:
        spans.append(current)
    return tuple(tuple(s) for s in spans)


def test_labels_are_exactly_the_trained_targets(prepared, tokenizer):
    data, rows = prepared
    lines = contract.read_lines(data)
    all_lines = lines["train"] + lines["val"]
    assert len(rows) == len(all_lines)
    # Axolotl's llama3 template trims each message, as the model will see it when served.
    expected = Counter(
        tuple(m["content"].strip() + "<|eot_id|>" for m in line["messages"] if m["train"])
        for line in all_lines
    )
    got = Counter(tuple(tokenizer.decode(list(s)) for s in labelled_spans(row)) for row in rows)
    assert got == expected
    assert sum(len(k) * n for k, n in got.items()) == 60


def test_converter_token_counts_match_axolotl(prepared):
    data, rows = prepared
    manifest = json.loads((data / "manifest.json").read_text())
    ours = Counter(
        manifest["tokens"]["per_split"]["train"]["line_lengths"]
        + manifest["tokens"]["per_split"]["val"]["line_lengths"]
    )
    assert Counter(len(r["input_ids"]) for r in rows) == ours


@pytest.mark.slow(70)
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
