"""At the token level: real `axolotl preprocess` on the converter's output, labels checked.

The tokens that carry labels must decode to exactly the trained targets, each followed by its
<|eot_id|>, and nothing else; and every line's length must equal the converter's own token count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import contract
import pytest
import yaml
from conftest import TINY_MODEL_DIR

AXOLOTL = Path(sys.executable).parent / "axolotl"


def dataset(path: Path, **extra) -> dict:
    return {
        "path": str(path),
        "ds_type": "json",
        "type": "chat_template",
        "field_messages": "messages",
        "message_field_training": "train",
        "roles_to_train": ["assistant"],
        "train_on_eos": "turn",
        **extra,
    }


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, assets, tokenizer):
    """Convert with token counts, then let Axolotl tokenize and mask both splits."""
    from conftest import SAMPLE, TOKENIZER_DIR, run_cli

    work = tmp_path_factory.mktemp("axolotl")
    data = work / "data"
    result = run_cli("convert", str(SAMPLE), "--out", str(data), "--tokenizer", str(TOKENIZER_DIR), "--quiet")
    assert result.returncode == 0, result.stderr
    cfg = {
        "base_model": str(TINY_MODEL_DIR),
        "tokenizer_type": "AutoTokenizer",
        "chat_template": "llama3",
        "datasets": [dataset(data / "train.jsonl")],
        "test_datasets": [dataset(data / "val.jsonl", split="train")],
        "dataset_prepared_path": str(work / "prepared"),
        "sequence_len": 4096,
        "sample_packing": False,
        "output_dir": str(work / "out"),
        "micro_batch_size": 1,
        "num_epochs": 1,
        "learning_rate": 1e-4,
        "adapter": "lora",
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_target_linear": True,
        "bf16": False,
        "fp16": False,
        "tf32": False,
    }
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PATH": f"{AXOLOTL.parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        [str(AXOLOTL), "preprocess", str(work / "config.yaml")],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from datasets import load_from_disk

    rows = [
        row for d in sorted((work / "prepared").iterdir()) if d.is_dir() for row in load_from_disk(str(d))
    ]
    return data, rows


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
