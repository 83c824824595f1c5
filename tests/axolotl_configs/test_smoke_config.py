"""The smoke render through real Axolotl on CPU, preprocessed once for the file: at the token level (the
tokens that carry labels decode to exactly the converter's trained targets, each followed by its
<|eot_id|>, and nothing else; every line's length equals the converter's own token count). Its training
(2 steps, a PEFT adapter with the config's rank and modules) is read from the shared finished smoke run:
tests/jobs/test_jobs.py, test_axolotl_trained_the_rendered_config_as_written.
"""

from __future__ import annotations

import json
from collections import Counter

import contract
import pytest


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
