"""Command-line parsing shared by `python -m axolotl_configs` and `python -m jobs`."""

from __future__ import annotations

import argparse


def parse_with_overrides(ap: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """key=value overrides may stand before or after options such as --out: argparse stops a nargs="*"
    positional at the first option, so the ones after it arrive as unknown arguments and join here."""
    args, rest = ap.parse_known_args(argv)
    extra = [r for r in rest if "=" in r and not r.startswith("-")]
    if len(extra) != len(rest) or (extra and not hasattr(args, "overrides")):
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    if extra:
        args.overrides += extra
    return args
