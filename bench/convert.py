"""Converter speed on a generated 242-conversation file, as a ratio to a bare json.load of that file.

Usage: python bench/convert.py [--conversations 242] [--repeats 7] [--cli-repeats 3]
       [--tokenizer assets/llama3-tokenizer]                                      (`just bench-convert`)

json.load and convert are timed in this one process, interleaved, and the medians compared, so a noisy
machine moves numerator and denominator together. Also timed: the whole CLI in a fresh interpreter
(start-up and imports included), which is what a person waits for, without and with --tokenizer
(token counts with Llama 3's tokenizer and chat template, through tokenizers and jinja2: no transformers),
interleaved, median of --cli-repeats. Targets (issue 2): <= 10x json.load in process; the CLI <= 2 s,
with the tokenizer too.
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
    ap.add_argument("--cli-repeats", type=int, default=3)
    ap.add_argument("--tokenizer", default="assets/llama3-tokenizer")
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
        clis: dict[str, list[float]] = {"plain": [], "tokens": []}
        for i in range(args.cli_repeats):
            for kind, extra in (("plain", []), ("tokens", ["--tokenizer", args.tokenizer])):
                cmd = [sys.executable, "-m", "converters", "convert", str(src), "--out"]
                cmd += [str(Path(tmp) / f"cli-{kind}-{i}"), "--quiet", *extra]
                clis[kind].append(timed(lambda cmd=cmd: subprocess.run(cmd, check=True, cwd=ROOT)))
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
    print(f"median of {args.cli_repeats} runs of the whole CLI, fresh interpreter, imports included:")
    print(f"  (--tokenizer {args.tokenizer}: token counts per line with its chat template)")
    for kind, label in (("plain", "python -m converters"), ("tokens", "python -m converters --tokenizer")):
        cli = statistics.median(clis[kind])
        runs = ", ".join(f"{t:.2f}" for t in clis[kind])
        print(
            f"  {label:<33} {cli * 1000:8.1f} ms   = {cli / load_s:.0f}x json.load "
            f"(target <= 2000 ms; runs: {runs} s)"
        )


if __name__ == "__main__":
    main()
