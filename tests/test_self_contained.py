"""A plain clone runs: nothing in the repo reads the shared folder that sits beside it in CI and in our
sessions (a person who clones the repo does not have it)."""

from __future__ import annotations

import re
import subprocess

from conftest import ROOT

SHARED = re.compile(r"""\.\./shared|["']shared["']|parent\s*/\s*["']shared""")


def test_no_code_reads_the_folder_beside_the_repo():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    files = [
        f
        for f in tracked.split()
        if f.endswith((".py", ".sh", ".mjs", ".j2")) or f in ("justfile", ".ci/run")
    ]
    assert len(files) > 50
    found = []
    for name in files:
        for number, line in enumerate((ROOT / name).read_text("utf-8").splitlines(), start=1):
            code = line.split("#", 1)[0] if not name.endswith(".mjs") else line.split("//", 1)[0]
            if SHARED.search(code):
                found.append(f"{name}:{number}: {line.strip()}")
    assert found == [], "\n".join(found)
