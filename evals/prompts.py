"""The held-out prompts the evaluation answers: the converter's sidecar, and a stratified sample of it.

`heldout.jsonl` (written by converters/convert.py beside val.jsonl) holds one record per trained target of
the held-out conversations, each with its exact context as chat messages, the reference answer and the
labels the judge's rubrics use; the manifest holds the file's consultant_profile. A data folder converted
before the sidecar existed is refused with the command that makes a new one, never guessed from val.jsonl.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from pathlib import Path

from brightrun.errors import ConfigError

SIDECAR = "heldout.jsonl"


def conversation_of(prompt: dict) -> str:
    """The held-out conversation a prompt (a turn) comes from: the unit every interval resamples
    (evals/stats.py); a prompt without one is its own."""
    return str(prompt.get("conversation_id") or prompt["id"])


def load_heldout(data_dir: Path) -> tuple[list[dict], dict]:
    """records, consultant_profile; ConfigError naming the file when the sidecar is missing/old."""
    data_dir = Path(data_dir)
    manifest_path, path = data_dir / "manifest.json", data_dir / SIDECAR
    again = "convert the input again (python -m converters convert INPUT --out DIR) to write it"
    try:
        manifest = json.loads(manifest_path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{manifest_path}: not a converter manifest ({exc})") from None
    listed = (manifest.get("outputs") or {}).get(SIDECAR)
    if not listed or "consultant_profile" not in manifest:
        raise ConfigError(f"{manifest_path}: written by a converter without the held-out sidecar; {again}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}; {again}") from None
    # The manifest's sha256 is what run.json's lineage records: an edited sidecar is another evaluation.
    if hashlib.sha256(raw).hexdigest() != listed.get("sha256"):
        raise ConfigError(f"{path}: its sha256 differs from the one in {manifest_path}; {again}")
    records = [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]
    if not records:
        raise ConfigError(f"{path}: no held-out targets (the conversion held out no conversation with one)")
    return records, manifest["consultant_profile"]


def select(records: list[dict], n: int = 40, seed: int = 0) -> list[dict]:
    """up to n, stratified by emotional_arc_key (round-robin over arcs, deterministic), each + "id".

    Arcs take turns, so a small n still covers every arc; inside an arc the conversations take turns too
    (a held-out conversation has up to ~10 targets, and ten turns of one client say less than one turn of
    each of ten). Orders are shuffled with `seed` after sorting by id, so the file's order does not matter.
    """
    if n < 1:
        raise ConfigError(f"the number of prompts must be at least 1 (got {n})")
    rng = random.Random(seed)
    by_arc: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for rec in sorted(records, key=lambda r: r["pair_id"]):
        by_arc[rec["emotional_arc_key"]][rec["conversation_id"]].append(rec)
    queues = []
    for arc in sorted(by_arc):
        convs = [by_arc[arc][cid] for cid in sorted(by_arc[arc])]
        for recs in convs:
            rng.shuffle(recs)
        rng.shuffle(convs)
        queues.append(_interleave(convs))
    rng.shuffle(queues)
    picked = _interleave(queues)[:n]
    return [{**rec, "id": rec["pair_id"]} for rec in picked]


def _interleave(lists: list[list]) -> list:
    """[[a1, a2], [b1], [c1, c2, c3]] -> [a1, b1, c1, a2, c2, c3]"""
    out = []
    for i in range(max((len(x) for x in lists), default=0)):
        out.extend(x[i] for x in lists if i < len(x))
    return out
