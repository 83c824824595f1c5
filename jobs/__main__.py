"""Run and track training jobs.

Usage:
  python -m jobs train PRESET MODEL [--input FILE | --data DIR] [--hardware H] [--allow-drop] [key=value ...]
  python -m jobs resume RUN
  python -m jobs runs
  python -m jobs show RUN
  python -m jobs eval RUN
  python -m jobs compare RUN_A RUN_B
  python -m jobs merge RUN
  python -m jobs serve RUN [--run]

Exit codes: 0 done; 1 the run failed (its row says why); 2 bad input (unknown preset, model or key,
missing data): nothing is created; 130 interrupted (resume it).
"""

from __future__ import annotations

import argparse
import sys


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs", description=__doc__.split("\n")[0])
    p.add_argument("--runs-dir", default="runs", help="where run folders live (default runs/)")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="convert if needed, render, preprocess and train one run")
    t.add_argument("preset")
    t.add_argument("model")
    t.add_argument("overrides", nargs="*", metavar="key=value")
    t.add_argument("--input", default=None, help="brightrun-v4 file (default: the repo's demo data)")
    t.add_argument("--data", default=None, help="an already converted folder instead of --input")
    t.add_argument("--hardware", default=None)
    t.add_argument(
        "--allow-drop", action="store_true", help="train even if lines exceed sequence_len (counted)"
    )
    t.add_argument(
        "--no-eval", action="store_true", help="skip the held-out comparison (`just eval RUN` later)"
    )
    r = sub.add_parser("resume", help="continue an interrupted run from its last checkpoint")
    r.add_argument("run")
    sub.add_parser("runs", help="list runs")
    s = sub.add_parser("show", help="one run in full")
    s.add_argument("run")
    e = sub.add_parser("eval", help="held-out loss of base and adapter, samples, report.html")
    e.add_argument("run")
    c = sub.add_parser("compare", help="two runs side by side")
    c.add_argument("run_a")
    c.add_argument("run_b")
    m = sub.add_parser("merge", help="merge the adapter into the base model (Axolotl's merge-lora)")
    m.add_argument("run")
    v = sub.add_parser("serve", help="print (or --run) the vLLM command that serves base + adapter")
    v.add_argument("run")
    v.add_argument("--run", dest="execute", action="store_true", help="run it instead of printing it")
    return p


def main(argv: list[str] | None = None) -> int:
    from axolotl_configs.cli import parse_with_overrides

    args = parse_with_overrides(parser(), argv)
    from axolotl_configs.profiles import ConfigError

    try:
        return run(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(args) -> int:
    from jobs import registry
    from jobs import run as run_mod

    registry.use_runs_dir(args.runs_dir)
    if args.command == "train":
        if args.input and args.data:
            from axolotl_configs.profiles import ConfigError

            raise ConfigError("give --input FILE or --data DIR, not both")
        run_id = run_mod.prepare(
            args.preset,
            args.model,
            args.input or run_mod.DEFAULT_INPUT,
            args.data,
            args.hardware,
            args.overrides,
            args.allow_drop,
            args.runs_dir,
            heldout_eval=not args.no_eval,
        )
        return run_mod.execute(run_id, args.runs_dir, evaluate=not args.no_eval)
    if args.command == "resume":
        return run_mod.resume(args.run, args.runs_dir)
    if args.command == "eval":
        return run_mod.results(args.run, args.runs_dir, recompute=True)
    if args.command in ("merge", "serve"):
        from jobs import serve

        if args.command == "merge":
            return serve.merge(args.run, args.runs_dir)
        return serve.serve(args.run, args.runs_dir, execute=args.execute)
    from jobs import show

    if args.command == "compare":
        return show.compare(args.run_a, args.run_b, args.runs_dir)
    if args.command == "runs":
        show.runs_table()
        return 0
    return show.show_run(args.run, args.runs_dir)


if __name__ == "__main__":
    sys.exit(main())
