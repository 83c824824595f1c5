"""An independent check of the supervision contract, written apart from the converter's code path.

From the raw brightrun-v4 JSON (ftfy.fix_encoding applied to every string, no pre-filter, no caching)
it derives what must be trained: for each pair with a non-blank target (and quality >= min_quality),
context = system + history + user input, and the target. From the converter's JSONL it reads what is
trained: every message with train=true and the messages before it. The two must be equal as
multisets, each line's pair_ids must name its trained messages in order, only assistant messages may
be trained, no mojibake may be left, and no conversation may sit in both splits.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import ftfy


def expected_examples(source: Path, min_quality: float | None = None) -> dict[str, tuple]:
    data = json.loads(source.read_bytes().decode("utf-8-sig"))
    out = {}
    for conv in data["conversations"]:
        for pair in conv["training_pairs"]:
            target = pair["target_response"]
            if target is None or not target.strip():
                continue
            if min_quality is not None and pair["training_metadata"]["quality_score"] < min_quality:
                continue
            context = [("system", pair["system_prompt"])]
            context += [(m["role"], m["content"]) for m in pair["conversation_history"]]
            context.append(("user", pair["current_user_input"]))
            context = tuple((r, ftfy.fix_encoding(c)) for r, c in context)
            out[pair["id"]] = (context, ftfy.fix_encoding(target))
    return out


def read_lines(out_dir: Path) -> dict[str, list[dict]]:
    return {
        split: [json.loads(line) for line in (out_dir / f"{split}.jsonl").read_text("utf-8").splitlines()]
        for split in ("train", "val")
    }


def trained_examples(lines: list[dict]) -> list[tuple[str, tuple, str]]:
    found = []
    for line in lines:
        msgs = line["messages"]
        trained_at = [i for i, m in enumerate(msgs) if m["train"]]
        assert len(trained_at) == len(line["pair_ids"]), f"pair_ids do not match trained messages: {line}"
        for i, pid in zip(trained_at, line["pair_ids"], strict=True):
            context = tuple((m["role"], m["content"]) for m in msgs[:i])
            found.append((pid, context, msgs[i]["content"]))
    return found


def check(source: Path, out_dir: Path, min_quality: float | None = None) -> dict:
    """Assert the contract; return a few counts for the caller's own assertions."""
    expected = expected_examples(source, min_quality)
    splits = read_lines(out_dir)
    all_lines = splits["train"] + splits["val"]
    for line in all_lines:
        for m in line["messages"]:
            assert set(m) == {"role", "content", "train"}, m
            assert isinstance(m["train"], bool)
            assert m["role"] in ("system", "user", "assistant")
            assert not (m["train"] and m["role"] != "assistant"), f"non-assistant message trained: {m}"
            assert ftfy.fix_encoding(m["content"]) == m["content"], f"mojibake left: {m['content'][:80]!r}"
            assert "â€" not in m["content"]
    found = trained_examples(all_lines)
    # Each target trained exactly once ...
    counts = Counter(pid for pid, _, _ in found)
    assert not [p for p, n in counts.items() if n > 1], "a target is trained more than once"
    assert set(counts) == set(expected), (
        f"missing: {sorted(set(expected) - set(counts))}, unexpected: {sorted(set(counts) - set(expected))}"
    )
    # ... with exactly its context, and nothing else trained.
    for pid, context, target in found:
        exp_context, exp_target = expected[pid]
        assert target == exp_target, f"{pid}: trained text differs from the target"
        assert context == exp_context, f"{pid}: context differs from system + history + user input"
    train_ids = {ln["conversation_id"] for ln in splits["train"]}
    val_ids = {ln["conversation_id"] for ln in splits["val"]}
    assert not train_ids & val_ids, f"conversations in both splits: {train_ids & val_ids}"
    return {"targets": len(found), "lines": len(all_lines), "val_conversations": len(val_ids)}
