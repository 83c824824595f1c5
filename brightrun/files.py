"""Folders that are whole or absent: written into a temporary sibling, then swapped into place."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def write_folder(final: Path, files: dict[str, bytes]) -> None:
    """`final` holding exactly `files` (name -> bytes), written into a temporary sibling and swapped in: an
    interruption leaves the old folder (or none), never a half-written one that looks whole."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        swap_in(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def swap_in(tmp: Path, final: Path) -> None:
    """Rename the finished folder `tmp` onto `final`. A rename cannot replace a non-empty folder, so what was
    there is moved aside first and removed after: `final` is always the old whole or the new whole."""
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, old / "previous")
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
