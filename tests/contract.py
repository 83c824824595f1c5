"""An independent check of the supervision contract, written apart from the converter's code path.

From the raw brightrun-v4 JSON (ftfy.fix_encoding applied to every string, no pre-filter, no caching)
it derives what must be trained: for each pair with a non-blank target (and quality >= min_quality),
context = system + history + user input, and the target. From the converter's JSONL it reads what is
trained: every message with train=true and the messages before it. The two must be equal as
multisets, each line's pair_ids must name its trained messages in order, only assistant messages may
be trained, no mojibake may be left, and no conversation may sit in both splits. The evaluation's
sidecar (heldout.jsonl) must hold exactly the val targets, each with its source context and labels.
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
    heldout = check_heldout(source, out_dir, expected, val_ids)
    return {
        "targets": len(found),
        "lines": len(all_lines),
        "val_conversations": len(val_ids),
        "heldout": heldout,
    }


def check_heldout(source: Path, out_dir: Path, expected: dict[str, tuple], val_ids: set[str]) -> int:
    """The evaluation's sidecar: one record per target trained in val, whose messages + reference are
    that pair's context + target in the source, with the pair's labels copied from the source."""
    records = [json.loads(x) for x in (out_dir / "heldout.jsonl").read_text("utf-8").splitlines()]
    data = json.loads(source.read_bytes().decode("utf-8-sig"))
    pairs = {
        p["id"]: (conv["conversation_metadata"], p)
        for conv in data["conversations"]
        for p in conv["training_pairs"]
    }
    in_val = {pid for pid in expected if pairs[pid][0]["conversation_id"] in val_ids}
    ids = [r["pair_id"] for r in records]
    assert len(ids) == len(set(ids)) and set(ids) == in_val, (
        f"heldout.jsonl: missing {sorted(in_val - set(ids))}, unexpected {sorted(set(ids) - in_val)}"
    )
    for rec in records:
        meta, pair = pairs[rec["pair_id"]]
        context, target = expected[rec["pair_id"]]
        assert tuple((m["role"], m["content"]) for m in rec["messages"]) == context, rec["pair_id"]
        assert all(set(m) == {"role", "content"} for m in rec["messages"])
        assert rec["reference"] == target, rec["pair_id"]
        assert rec["conversation_id"] == meta["conversation_id"] and rec["turn"] == pair["turn_number"]
        assert {k: rec[k] for k in meta["scaffolding"]} == meta["scaffolding"]
        assert rec["emotional_context"] == pair["emotional_context"]
        detected = pair["emotional_context"].get("detected_emotions", {})
        assert (rec["primary_emotion"], rec["intensity"]) == (
            detected.get("primary"),
            detected.get("intensity"),
        )
        assert rec["demonstrates_skills"] == pair["training_metadata"].get("demonstrates_skills", [])
        assert rec["quality_score"] == pair["training_metadata"]["quality_score"]
    manifest = json.loads((out_dir / "manifest.json").read_text("utf-8"))
    assert manifest["consultant_profile"] == _fixed(data["consultant_profile"])
    return len(records)


def _fixed(value):
    if isinstance(value, str):
        return ftfy.fix_encoding(value)
    if isinstance(value, list):
        return [_fixed(v) for v in value]
    if isinstance(value, dict):
        return {k: _fixed(v) for k, v in value.items()}
    return value
