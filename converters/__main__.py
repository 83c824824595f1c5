"""Convert brightrun-lora-v4 training files into Axolotl chat_template JSONL.

Usage:
  python -m converters convert INPUT --out DIR [--val-fraction 0.1] [--seed 0] [--min-quality Q]
                                               [--tokenizer PATH --sequence-len N]
  python -m converters demo --out FILE [--conversations 36] [--seed 7] [--max-turns 10]

Exit codes: 0 converted; 2 bad input or bad usage (the message names the file, the record and the
field; nothing is written).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1)")
    return value


def _quality(text: str) -> float:
    value = float(text)
    if not 1 <= value <= 5:
        raise argparse.ArgumentTypeError(f"{text} is not a quality score from 1 to 5")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m converters", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="brightrun-v4 JSON -> DIR/{train,val,heldout}.jsonl + manifest.json")
    c.add_argument("input", type=Path)
    c.add_argument("--out", type=Path, required=True, help="output folder (replaced only on success)")
    c.add_argument(
        "--val-fraction",
        type=_fraction,
        default=0.1,
        help="share of conversations held out (whole conversations; default 0.1)",
    )
    c.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    c.add_argument(
        "--min-quality",
        type=_quality,
        default=None,
        help="train only targets with quality_score >= Q (others stay as context)",
    )
    c.add_argument("--tokenizer", default=None, help="tokenizer folder: count tokens per line and split")
    c.add_argument(
        "--sequence-len",
        type=_positive,
        default=None,
        help="warn about lines longer than this (Axolotl would drop them)",
    )
    c.add_argument("--quiet", action="store_true", help="print no report")
    d = sub.add_parser("demo", help="write the repo's deterministic demo file")
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--conversations", type=_positive, default=36)
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--max-turns", type=_positive, default=10, help="turns per conversation: 3 to this (>= 3)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "demo":
        from converters import demo_data

        demo_data.write(
            args.out, n_conversations=args.conversations, seed=args.seed, max_turns=args.max_turns
        )
        print(f"wrote {args.out}")
        return 0
    return run_convert(args)


def run_convert(args) -> int:
    from converters import convert, load, report
    from converters.tokens import TokenizerError

    if args.sequence_len and not args.tokenizer:
        print(
            "python -m converters convert: --sequence-len needs --tokenizer (lengths are in tokens)",
            file=sys.stderr,
        )
        return 2
    if args.tokenizer and not Path(args.tokenizer).exists():
        print(
            f"error: {args.tokenizer}: tokenizer folder not found (`just assets` builds "
            f"assets/llama3-tokenizer)",
            file=sys.stderr,
        )
        return 2
    opts = convert.Options(
        val_fraction=args.val_fraction,
        seed=args.seed,
        min_quality=args.min_quality,
        tokenizer=args.tokenizer,
        sequence_len=args.sequence_len,
    )
    from rich.console import Console

    # Counting tokens takes a second (seconds more for a tokenizer folder that needs transformers):
    # show that something is happening (rich draws the spinner only on a terminal).
    with Console(stderr=True).status(f"converting {args.input} ..."):
        try:
            manifest = convert.convert(args.input, args.out, opts)
        except (load.InputError, TokenizerError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if not args.quiet:
        report.render(manifest, str(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
