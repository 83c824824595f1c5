"""brightrun-v4 file -> DIR/train.jsonl, DIR/val.jsonl, DIR/heldout.jsonl, DIR/manifest.json.

Steps, in order: load and validate the whole file; repair text (counted); split conversations;
merge each conversation's pairs into lines; count tokens (with a tokenizer); write everything to a
temporary sibling of DIR and rename it into place, so DIR either holds a whole conversion or is
left as it was. heldout.jsonl (one record per trained target of val, with its labels) and the manifest's
consultant_profile are for the evaluation (evals/); Axolotl reads only train.jsonl and val.jsonl.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from brightrun.files import write_folder
from converters import __version__, load, merge, split

SPLITS = ("train", "val")


@dataclass
class Options:
    val_fraction: float = 0.1
    seed: int = 0
    min_quality: float | None = None
    tokenizer: str | None = None
    sequence_len: int | None = None


@dataclass
class Conversation:
    id: str
    persona: str
    arc: str
    topic: str
    pairs: list[merge.Pair] = field(default_factory=list)


def flatten(data, repairer, min_quality: float | None) -> list[Conversation]:
    """The validated file as repaired pairs. Every string that reaches training passes the repairer.

    A target below min_quality stays in the pair (later turns need its text as context) but is not
    trained."""
    fix = repairer.fix
    out = []
    for conv in data.conversations:
        meta = conv.conversation_metadata
        sc = meta.scaffolding
        c = Conversation(meta.conversation_id, sc.persona_key, sc.emotional_arc_key, sc.training_topic_key)
        for p in conv.training_pairs:
            context = (
                ("system", fix(p.system_prompt, "system_prompt")),
                *((m.role, fix(m.content, "conversation_history")) for m in p.conversation_history),
                ("user", fix(p.current_user_input, "current_user_input")),
            )
            target = p.target_response
            target = None if target is None or not target.strip() else fix(target, "target_response")
            quality = float(p.training_metadata.quality_score)
            trainable = target is not None and (min_quality is None or quality >= min_quality)
            skills = (p.training_metadata.model_extra or {}).get("demonstrates_skills")
            c.pairs.append(
                merge.Pair(
                    id=p.id,
                    turn=p.turn_number,
                    context=context,
                    target=target,
                    quality=quality,
                    trainable=trainable,
                    emotional_context=p.emotional_context,
                    # An optional field the schema does not check: only its strings are kept.
                    skills=tuple(x for x in skills if isinstance(x, str)) if isinstance(skills, list) else (),
                )
            )
        out.append(c)
    return out


def line_record(line: merge.Line, conv: Conversation) -> dict:
    return {
        "messages": [{"role": r, "content": c, "train": t} for r, c, t in line.messages],
        "conversation_id": line.conversation_id,
        "pair_ids": line.pair_ids,
        "turns": line.turns,
        "quality_scores": line.quality_scores,
        "own_context": line.own_context,
        "persona_key": conv.persona,
        "emotional_arc_key": conv.arc,
        "training_topic_key": conv.topic,
    }


def heldout_record(pair: merge.Pair, conv: Conversation) -> dict:
    """What the evaluation needs of one held-out target (heldout.jsonl): its context as chat messages,
    the reference answer, and the labels the judge's rubrics are built from. The trainer never reads it."""
    detected = (pair.emotional_context or {}).get("detected_emotions")
    detected = detected if isinstance(detected, dict) else {}
    primary, intensity = detected.get("primary"), detected.get("intensity")
    return {
        "conversation_id": conv.id,
        "pair_id": pair.id,
        "turn": pair.turn,
        "persona_key": conv.persona,
        "emotional_arc_key": conv.arc,
        "training_topic_key": conv.topic,
        "emotional_context": pair.emotional_context,
        "primary_emotion": primary if isinstance(primary, str) else None,
        "intensity": float(intensity)
        if isinstance(intensity, int | float) and not isinstance(intensity, bool)
        else None,
        "demonstrates_skills": list(pair.skills),
        "quality_score": pair.quality,
        "messages": [{"role": r, "content": c} for r, c in pair.context],
        "reference": pair.target,
    }


def repaired(value, fix, field: str):
    """A JSON value with every string passed through the repairer (the consultant profile)."""
    if isinstance(value, str):
        return fix(value, field)
    if isinstance(value, list):
        return [repaired(v, fix, field) for v in value]
    if isinstance(value, dict):
        return {k: repaired(v, fix, field) for k, v in value.items()}
    return value


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_out_dir(out_dir: Path, input_path: Path | None = None) -> None:
    """Replace only what a conversion wrote: `--out .` or `--out data` must never wipe a folder, and
    the input is never inside what gets replaced."""
    if input_path is not None and out_dir.resolve() in Path(input_path).resolve().parents:
        raise load.InputError(
            out_dir, ["--out holds the input file, and a conversion replaces --out: choose another folder"]
        )
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise load.InputError(out_dir, ["--out exists and is not a folder"])
    if any(out_dir.iterdir()) and set(p.name for p in out_dir.iterdir()) - written_before(out_dir):
        raise load.InputError(
            out_dir,
            [
                "--out is a folder that holds files a conversion did not write (its manifest.json does not "
                "list them), so it is not a converter output; refusing to replace it (choose a new or empty "
                "folder)"
            ],
        )


def written_before(out_dir: Path) -> set[str]:
    """The names an earlier conversion wrote into out_dir, as its manifest lists them (none without one)."""
    try:
        manifest = json.loads((out_dir / "manifest.json").read_text("utf-8"))
        return {"manifest.json", *manifest["outputs"]}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def write_atomically(out_dir: Path, files: dict[str, bytes]) -> None:
    """Write all files into a temp sibling of out_dir, then swap it into place."""
    out_dir = out_dir.resolve()
    check_out_dir(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    write_folder(out_dir, files)


def jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def convert(input_path: Path | str, out_dir: Path | str, opts: Options | None = None, tokenizer=None) -> dict:
    """Convert one file; returns the manifest. Raises load.InputError on bad input.

    With opts.tokenizer set, the tokenizer loads after the input has been validated (bad input fails
    in a fraction of a second, not after transformers' import), unless a loaded one is passed in.
    """
    from converters.repair import Repairer  # ftfy import is ~0.1 s: only when converting

    opts = opts or Options()
    input_path, out_dir = Path(input_path), Path(out_dir)

    # 1. Load and validate: nothing below runs on a file with problems.
    check_out_dir(out_dir, input_path)  # before the work, so a wrong --out fails fast
    loaded = load.load(input_path)

    # 2. Repair text, counted.
    repairer = Repairer()
    conversations = flatten(loaded.data, repairer, opts.min_quality)

    # 3. Split by conversation.
    val_ids = split.split_conversations([(c.id, c.arc) for c in conversations], opts.val_fraction, opts.seed)

    # 4. Merge prefix chains into lines.
    records: dict[str, list[dict]] = {s: [] for s in SPLITS}
    heldout: list[dict] = []  # every trained target of a held-out conversation, for the evaluation
    token_inputs: dict[str, list] = {s: [] for s in SPLITS}
    naive_inputs: dict[str, list] = {s: [] for s in SPLITS}
    counts = {s: Counter() for s in SPLITS}
    for conv in conversations:
        side = "val" if conv.id in val_ids else "train"
        lines = merge.merge_conversation(conv.id, conv.pairs)
        ct = counts[side]
        ct["conversations"] += 1
        ct["pairs"] += len(conv.pairs)
        ct["trained_targets"] += sum(p.trainable for p in conv.pairs)
        ct["null_or_blank_targets"] += sum(p.target is None for p in conv.pairs)
        ct["filtered_by_quality"] += sum(p.target is not None and not p.trainable for p in conv.pairs)
        ct["lines"] += len(lines)
        ct["own_context_lines"] += sum(ln.own_context for ln in lines)
        ct["conversations_without_targets"] += not lines
        for ln in lines:
            records[side].append(line_record(ln, conv))
            token_inputs[side].append([(r, c) for r, c, _ in ln.messages])
        naive_inputs[side].extend(merge.naive_lines(conv.pairs))
        if side == "val":
            heldout.extend(heldout_record(p, conv) for p in conv.pairs if p.trainable)

    if not records["train"]:
        raise load.InputError(
            input_path,
            [
                "no training pair has a target response to learn (all null, blank or filtered by "
                f"--min-quality); nothing to train on ({sum(c['pairs'] for c in counts.values())} pairs read)"
            ],
        )

    # 5. Tokens, when a tokenizer is given.
    token_stats = None
    if tokenizer is not None or opts.tokenizer:
        from converters import tokens

        tokenizer = tokenizer or tokens.load_tokenizer(opts.tokenizer)
        token_stats = token_report(
            tokens.count, tokenizer, token_inputs, naive_inputs, records, opts.sequence_len
        )
        token_stats["tokenizer"] = tokens.describe(opts.tokenizer, tokenizer)

    # 6. Write atomically, with the manifest last to be computed.
    files = {f"{s}.jsonl": jsonl(records[s]) for s in SPLITS}
    files["heldout.jsonl"] = jsonl(heldout)
    profile = repaired(loaded.data.consultant_profile, repairer.fix, "consultant_profile")
    manifest = build_manifest(
        input_path, loaded, repairer, counts, conversations, val_ids, opts, token_stats, files
    )
    manifest["consultant_profile"] = profile
    files["manifest.json"] = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    write_atomically(out_dir, files)
    return manifest


def token_report(count, tok, token_inputs, naive_inputs, records, sequence_len) -> dict:
    stats: dict = {"per_split": {}, "sequence_len": sequence_len}
    all_lengths = []
    for s in SPLITS:
        lengths = count(tok, token_inputs[s])
        naive = sum(count(tok, naive_inputs[s]))
        for rec, n in zip(records[s], lengths, strict=True):
            all_lengths.append((n, s, rec["conversation_id"], rec["pair_ids"][0]))
        merged = sum(lengths)
        stats["per_split"][s] = {
            "tokens": merged,
            "naive_tokens": naive,
            "ratio_to_naive": round(merged / naive, 4) if naive else None,
            "line_lengths": lengths,
        }
    merged = sum(v["tokens"] for v in stats["per_split"].values())
    naive = sum(v["naive_tokens"] for v in stats["per_split"].values())
    stats["tokens"] = merged
    stats["naive_tokens"] = naive
    stats["ratio_to_naive"] = round(merged / naive, 4) if naive else None
    if all_lengths:
        n, s, cid, pid = max(all_lengths)
        stats["longest_line"] = {"tokens": n, "split": s, "conversation_id": cid, "first_pair_id": pid}
    if sequence_len:
        over = [x for x in all_lengths if x[0] > sequence_len]
        stats["lines_over_sequence_len"] = len(over)
        stats["lines_over_sequence_len_ids"] = [f"{s}:{cid}" for _, s, cid, _ in sorted(over, reverse=True)]
    return stats


def build_manifest(
    input_path, loaded, repairer, counts, conversations, val_ids, opts, token_stats, files
) -> dict:
    total = sum(counts.values(), Counter())
    repairs = dict(sorted(repairer.counts.items()))
    if loaded.had_bom:
        repairs["utf8_bom"] = 1
    return {
        "converter": {"name": "brightrun-lora converters", "version": __version__},
        "input": {
            "path": str(input_path),
            "sha256": sha256_bytes(loaded.raw_bytes),
            "bytes": len(loaded.raw_bytes),
            "format_spec": loaded.data.training_file_metadata.format_spec,
            "file_version": loaded.data.training_file_metadata.version,
        },
        "options": {
            "val_fraction": opts.val_fraction,
            "seed": opts.seed,
            "min_quality": opts.min_quality,
            "sequence_len": opts.sequence_len,
        },
        "counts": {
            **{k: total[k] for k in COUNT_KEYS},
            "per_split": {s: {k: counts[s][k] for k in COUNT_KEYS} for s in SPLITS},
        },
        "repairs": {
            "total": sum(repairs.values()),
            "by_field": repairs,
            "distinct_strings": repairer.distinct_strings_repaired,
            "examples": [{"before": b, "after": a} for b, a in repairer.examples],
        },
        "metadata_mismatches": loaded.warnings,
        "distribution": distribution(conversations, val_ids),
        "val_conversation_ids": sorted(val_ids),
        "tokens": token_stats,
        "outputs": {
            name: {"sha256": sha256_bytes(data), "bytes": len(data), "lines": data.count(b"\n")}
            for name, data in files.items()
        },
    }


COUNT_KEYS = (
    "conversations",
    "pairs",
    "trained_targets",
    "null_or_blank_targets",
    "filtered_by_quality",
    "lines",
    "own_context_lines",
    "conversations_without_targets",
)


def distribution(conversations: list[Conversation], val_ids: set[str]) -> dict:
    out: dict = {}
    for key in ("persona", "arc", "topic"):
        table: dict[str, dict[str, int]] = {}
        for c in conversations:
            row = table.setdefault(getattr(c, key), {"train": 0, "val": 0})
            row["val" if c.id in val_ids else "train"] += 1
        out[key] = dict(sorted(table.items()))
    return out
