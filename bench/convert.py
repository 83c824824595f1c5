"""Converter speed on a generated 242-conversation file, as a ratio to a bare json.load of that file.

Usage: python bench/convert.py [--conversations 242] [--repeats 7]      (`just bench-convert`)

Both are timed in this one process, interleaved, and the medians compared, so a noisy machine moves
numerator and denominator together. Also timed once: the whole CLI in a fresh interpreter (start-up and
imports included), which is what a person waits for. Targets (issue 2): <= 2 s and <= 10x json.load.
Without --tokenizer: token counting loads transformers (~8 s) and is not part of the target.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from converters import convert, demo_data  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conversations", type=int, default=242)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "bench.json"
        demo_data.write(src, n_conversations=args.conversations)
        size = src.stat().st_size
        loads, converts = [], []
        manifest = {}
        out = Path(tmp) / "out"
        for _ in range(args.repeats):
            loads.append(timed(lambda: json.loads(src.read_bytes().decode("utf-8-sig"))))
            converts.append(timed(lambda: manifest.update(convert.convert(src, out))))
        cli = timed(
            lambda: subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "converters",
                    "convert",
                    str(src),
                    "--out",
                    str(Path(tmp) / "cli"),
                    "--quiet",
                ],
                check=True,
                cwd=ROOT,
            )
        )
    c = manifest["counts"]
    load_s, conv_s = statistics.median(loads), statistics.median(converts)
    print(
        f"input: {args.conversations} generated conversations, {c['pairs']} pairs, {size / 1e6:.1f} MB; "
        f"{c['lines']} lines written, {manifest['repairs']['total']} repairs"
    )
    print(f"median of {args.repeats} runs, same process:")
    print(f"  json.load              {load_s * 1000:8.1f} ms")
    print(
        f"  convert (in process)   {conv_s * 1000:8.1f} ms   = {conv_s / load_s:.1f}x json.load "
        f"(target <= 10x)"
    )
    print(f"  python -m converters   {cli * 1000:8.1f} ms   (one run, fresh interpreter; target <= 2000 ms)")


if __name__ == "__main__":
    main()
