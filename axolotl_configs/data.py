"""What a render needs to know about the converted data: read from the converter's manifest only."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from brightrun.errors import ConfigError

# docs/brightrun-v4.md: "A merged 4096-token pack holds about 22 trained targets" (the
# customer's 242-conversation file). Used only when the manifest has no token counts.
TARGETS_PER_4096_PACK = 22.0


@dataclass
class DataInfo:
    dir: str  # as given: rendered paths are relative to where `axolotl train` runs (the repo root)
    manifest_sha256: str
    train_targets: int
    train_lines: int
    val_lines: int
    train_lengths: list[int] | None  # tokens per train line, when the converter counted them
    tokens_per_epoch: int | None
    val_tokens: int | None
    longest_line: int | None

    @property
    def has_tokens(self) -> bool:
        return self.train_lengths is not None


def read(data_dir: str | Path) -> DataInfo:
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        raise ConfigError(
            f"{path}: no converter manifest here; convert first "
            f"(python -m converters convert FILE --out {data_dir} --tokenizer assets/llama3-tokenizer)"
        )
    raw = path.read_bytes()
    try:
        m = json.loads(raw)
        per = m["counts"]["per_split"]
        tokens = m.get("tokens")
        return DataInfo(
            dir=str(data_dir).rstrip("/"),
            manifest_sha256=hashlib.sha256(raw).hexdigest(),
            train_targets=per["train"]["trained_targets"],
            train_lines=per["train"]["lines"],
            val_lines=per["val"]["lines"],
            train_lengths=tokens["per_split"]["train"]["line_lengths"] if tokens else None,
            tokens_per_epoch=tokens["per_split"]["train"]["tokens"] if tokens else None,
            val_tokens=tokens["per_split"]["val"]["tokens"] if tokens else None,
            longest_line=tokens["longest_line"]["tokens"] if tokens and tokens.get("longest_line") else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: not a converter manifest ({exc!r} missing or malformed)") from None


def pack(lengths: list[int], capacity: int) -> int:
    """Rows after packing: first-fit decreasing, as Axolotl's multipack sampler approximates."""
    bins: list[int] = []  # space left in each row
    for n in sorted(lengths, reverse=True):
        for i, free in enumerate(bins):
            if n <= free:
                bins[i] -= n
                break
        else:
            bins.append(capacity - n)
    return len(bins)


def rows_per_epoch(info: DataInfo, sequence_len: int, packing: bool) -> int:
    if not packing:
        return info.train_lines
    if info.has_tokens:
        return pack(info.train_lengths, sequence_len)
    per_row = TARGETS_PER_4096_PACK * sequence_len / 4096
    return max(1, math.ceil(info.train_targets / per_row))
