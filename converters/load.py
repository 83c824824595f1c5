"""Read a brightrun-v4 file: bytes -> text -> JSON -> validated model, or every problem found.

Each stage names the file and, where it can, the place: a byte offset for bad UTF-8, a line and
column for broken JSON, a record path for a wrong field. Problems are collected, not raised one at
a time, so a person fixing a hand-edited file sees all of them at once (up to MAX_SHOWN).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from converters import schema

MAX_SHOWN = 20
BOM = "\ufeff"
FORMAT_SPEC = "brightrun-lora-v4"
# The customer's first real file is about 8-10 MB; 32x that is still a training file, anything larger
# (or a device, a pipe) is refused before it is read.
MAX_BYTES = 256 * 1024 * 1024


class InputError(Exception):
    """Bad input: the file and every problem found in it."""

    def __init__(self, path: Path | str, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        name = Path(self.path).name
        shown = [f"{name}: {p}" for p in self.problems[:MAX_SHOWN]]
        more = len(self.problems) - MAX_SHOWN
        if more > 0:
            shown.append(f"... and {more} more problem(s) in {name}")
        head = f"{self.path}: {len(self.problems)} problem(s); nothing was written."
        return "\n".join([head, *shown])


@dataclass
class Loaded:
    data: schema.BrightRunFile
    raw_bytes: bytes
    had_bom: bool
    warnings: list[str] = field(default_factory=list)


def read_text(path: Path) -> tuple[str, bytes, bool]:
    try:
        info = os.stat(path)  # follows a link: what counts is what it points at
        if stat.S_ISDIR(info.st_mode):
            raise InputError(path, ["is a directory, expected a brightrun-v4 JSON file"])
        if not stat.S_ISREG(info.st_mode):
            # A FIFO would block the read forever, /dev/zero never ends: only regular files.
            raise InputError(path, ["is not a regular file (a device, pipe or socket), expected a JSON file"])
        if info.st_size > MAX_BYTES:
            raise InputError(path, [f"is {info.st_size:,} bytes, over the {MAX_BYTES:,}-byte limit"])
        # O_NONBLOCK: if it was swapped for a FIFO since the stat, the open does not hang.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise InputError(path, ["is not a regular file, expected a JSON file"])
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise InputError(path, ["file not found"]) from None
    except OSError as exc:
        raise InputError(path, [f"cannot be read: {exc.strerror}"]) from None
    if len(raw) > MAX_BYTES:
        raise InputError(path, [f"is over the {MAX_BYTES:,}-byte limit"])
    if not raw.strip():
        raise InputError(path, ["the file is empty, expected a brightrun-v4 JSON document"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(
            path,
            [
                f"not UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start} (line {line}) "
                f"cannot be decoded; save the file as UTF-8"
            ],
        ) from None
    had_bom = text.startswith(BOM)
    return text.removeprefix(BOM), raw, had_bom


def parse_json(path: Path, text: str):
    try:
        return json.loads(text)
    except RecursionError:
        deep = "JSON nested too deep to read (a brightrun-v4 file nests about 6 levels)"
        raise InputError(path, [deep]) from None
    except json.JSONDecodeError as exc:
        # Cut off mid-write: the error sits at the very end, or a string opened there never closes.
        truncated = exc.pos >= len(text.rstrip()) - 1 or (
            exc.msg.startswith("Unterminated string") and '"' not in text[exc.pos + 1 :]
        )
        what = "truncated JSON (the file ends mid-document)" if truncated else "invalid JSON"
        where = f"line {exc.lineno}, column {exc.colno}"
        msg = exc.msg.removesuffix(" at")  # json says "Unterminated string starting at"
        raise InputError(path, [f"{what}: {msg} at {where}"]) from None


def check_format_spec(path: Path, obj) -> None:
    """Another format entirely gets one line: listing its fields as errors would bury it."""
    meta = obj.get("training_file_metadata") if isinstance(obj, dict) else None
    if isinstance(meta, dict) and "format_spec" in meta and meta["format_spec"] != FORMAT_SPEC:
        raise InputError(
            path,
            [
                f"training_file_metadata.format_spec: got {meta['format_spec']!r}, expected {FORMAT_SPEC!r}; "
                f"this converter reads {FORMAT_SPEC} files only"
            ],
        )


def check_consistency(data: schema.BrightRunFile) -> tuple[list[str], list[str]]:
    """Problems the schema cannot see (duplicates, order) and metadata claims that disagree."""
    problems: list[str] = []
    warnings: list[str] = []
    conv_seen: dict[str, str] = {}  # id -> path where it first appeared
    pair_seen: dict[str, str] = {}
    n_pairs = 0
    for ci, conv in enumerate(data.conversations):
        cid = conv.conversation_metadata.conversation_id
        where = f"conversations[{ci}]"
        if cid in conv_seen:
            problems.append(
                f"{where}.conversation_metadata.conversation_id: duplicate id {cid!r}, "
                f"first used at {conv_seen[cid]}"
            )
        conv_seen.setdefault(cid, f"{where}.conversation_metadata.conversation_id")
        previous = 0
        for pi, pair in enumerate(conv.training_pairs):
            n_pairs += 1
            at = f"{where}.training_pairs[{pi}]"
            if pair.id in pair_seen:
                problems.append(f"{at}.id: duplicate id {pair.id!r}, first used at {pair_seen[pair.id]}")
            pair_seen.setdefault(pair.id, f"{at}.id")
            if pair.turn_number <= previous:
                problems.append(
                    f"{at}.turn_number: {pair.turn_number} after turn {previous}, "
                    f"expected turns in increasing order"
                )
            previous = max(previous, pair.turn_number)
        claimed = conv.conversation_metadata.total_turns
        if claimed != len(conv.training_pairs):
            warnings.append(
                f"{where}.conversation_metadata.total_turns: says {claimed}, "
                f"the conversation holds {len(conv.training_pairs)} training pairs"
            )
    meta = data.training_file_metadata
    if meta.total_conversations != len(data.conversations):
        warnings.append(
            f"training_file_metadata.total_conversations: says {meta.total_conversations}, "
            f"the file holds {len(data.conversations)}"
        )
    if meta.total_training_pairs != n_pairs:
        warnings.append(
            f"training_file_metadata.total_training_pairs: says {meta.total_training_pairs}, "
            f"the file holds {n_pairs}"
        )
    return problems, warnings


def load(path: Path | str) -> Loaded:
    path = Path(path)
    text, raw, had_bom = read_text(path)
    obj = parse_json(path, text)
    check_format_spec(path, obj)
    data, problems = schema.validate(obj)
    if data is None:
        raise InputError(path, problems)
    problems, warnings = check_consistency(data)
    if problems:
        raise InputError(path, problems)
    return Loaded(data=data, raw_bytes=raw, had_bom=had_bom, warnings=warnings)
