"""Render, sweep and estimate Axolotl configs.

Usage:
  python -m axolotl_configs render PRESET MODEL [--data DIR] [--hardware H] [key=value ...] [--out FILE]
  python -m axolotl_configs sweep PRESET MODEL SWEEP.yaml [--data DIR] [--hardware H] --out DIR
  python -m axolotl_configs estimate PRESET MODEL [--data DIR] [--hardware H] [key=value ...]
  python -m axolotl_configs list

Exit codes: 0 done; 2 bad input (an unknown preset, model, hardware or key, a wrong type, data that
does not fit): the message names it, and nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_DATA = "data/converted/demo"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m axolotl_configs", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("preset")
        sp.add_argument("model")
        sp.add_argument(
            "--data", default=DEFAULT_DATA, help=f"converter output folder (default {DEFAULT_DATA})"
        )
        sp.add_argument("--hardware", default=None, help="hardware profile (default: the model's)")

    r = sub.add_parser("render", help="write one complete Axolotl YAML")
    common(r)
    r.add_argument("overrides", nargs="*", metavar="key=value", help="Axolotl keys, dotted for nested ones")
    r.add_argument("--out", default=None, help="file to write (default: print to stdout)")
    s = sub.add_parser("sweep", help="expand an Axolotl sweep file into one validated config per trial")
    common(s)
    s.add_argument("sweep", type=Path)
    s.add_argument("--out", type=Path, required=True)
    e = sub.add_parser("estimate", help="tokens, steps, memory, time and cost before any GPU")
    common(e)
    e.add_argument("overrides", nargs="*", metavar="key=value")
    sub.add_parser("list", help="the presets, models and hardware profiles")
    g = sub.add_parser("regen", help="re-render every preset × model into axolotl_configs/rendered/")
    g.add_argument("--data", default=DEFAULT_DATA)
    return p


def main(argv: list[str] | None = None) -> int:
    from axolotl_configs.cli import parse_with_overrides
    from brightrun.errors import ConfigError

    args = parse_with_overrides(parser(), argv)
    try:
        return run(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(args) -> int:
    from axolotl_configs import profiles

    if args.command == "list":
        for kind in profiles.KINDS:
            print(f"{kind}: {', '.join(profiles.names(kind))}")
        return 0
    if args.command == "regen":
        from axolotl_configs import render

        for path in render.regenerate_goldens(args.data):
            print(f"wrote {path}", file=sys.stderr)
        return 0
    if args.command == "render":
        from axolotl_configs import render

        out = args.out or render.golden_path(args.preset, args.model)
        result = render.render(
            args.preset, args.model, args.data, args.hardware, args.overrides, out_path=out
        )
        if args.out:
            render.write(result, Path(args.out))
            print(f"wrote {args.out}", file=sys.stderr)
        else:
            sys.stdout.write(result.text)
        return 0
    if args.command == "sweep":
        from axolotl_configs import sweep

        written = sweep.expand(args.preset, args.model, args.sweep, args.out, args.data, args.hardware)
        print(f"wrote {len(written)} configs to {args.out}/", file=sys.stderr)
        return 0
    from axolotl_configs import estimate

    est = estimate.estimate(args.preset, args.model, args.data, args.hardware, args.overrides)
    estimate.show(est)
    return 0


if __name__ == "__main__":
    sys.exit(main())
