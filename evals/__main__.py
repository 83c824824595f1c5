"""Evaluate a finished run: held-out answers judged, general ability kept, a verdict (docs/evaluation.md).

Usage:
  python -m evals run RUN [--limit 40] [--backend transformers|vllm] [--device cpu] [--max-new-tokens N]
                          [--no-judge] [--no-general] [--tasks T,T] [--general-limit N]
                          [--general-max-tokens N] [--gates FILE] [--local-judge MODEL_DIR]
                          [--quantize none|4bit] [--against NAME@production]
  python -m evals show RUN       (the verdict table of the last evaluation)

The judge is any OpenAI-compatible chat-completions endpoint, from the environment only: JUDGE_BASE_URL,
JUDGE_MODEL, JUDGE_API_KEY (never written to a file).

Exit codes: 0 evaluated (whatever the verdict; it is in eval/verdict.json and the registry); 2 bad input
(no such run, no adapter, data changed since the run, a bad gates file, 4-bit asked on a CPU, a plan over
the GPU's memory, an --against version that is unknown or not comparable): nothing is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evals", description=__doc__.split("\n")[0])
    p.add_argument("--runs-dir", default="runs", help="where run folders live (default runs/)")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="answers, judge, general ability and the verdict into runs/RUN/eval/")
    r.add_argument("run")
    r.add_argument("--limit", type=int, default=40, help="held-out prompts, stratified by arc (default 40)")
    r.add_argument("--backend", choices=("transformers", "vllm"), default="transformers")
    r.add_argument("--device", default="cpu", help="transformers back-end device (cpu, cuda)")
    r.add_argument(
        "--max-new-tokens", type=int, default=None, help="default: to the end of turn, at most 1024"
    )
    r.add_argument("--no-judge", action="store_true", help="skip the judge (its gates are not_run)")
    r.add_argument("--no-general", action="store_true", help="skip lm-eval (its gate is not_run)")
    r.add_argument("--tasks", default=None, help="lm-eval tasks, comma-separated (default: the offline task)")
    r.add_argument("--general-limit", type=int, default=None, help="lm-eval items per task")
    r.add_argument(
        "--general-max-tokens", type=int, default=None, help="lm-eval's max new tokens (default: the task's)"
    )
    r.add_argument("--gates", default=None, help="a gates YAML (default evals/gates.yaml)")
    r.add_argument(
        "--quantize",
        choices=("none", "4bit"),
        default=None,
        help="the base model's precision for answers and lm-eval: 4bit = NF4 through bitsandbytes (a GPU); "
        "default: as the run trained (4bit for a QLoRA run, whose config.yaml has load_in_4bit: true)",
    )
    r.add_argument(
        "--against",
        default=None,
        metavar="NAME@production",
        help="also A/B this run against that version (versions ab, recorded) and gate on it: the run must "
        "not lose (vs_production); what `promote --stage production` checks",
    )
    r.add_argument(
        "--local-judge",
        default=None,
        metavar="MODEL_DIR",
        help="start `transformers serve` with this local model as the judge (the demo; checks the mechanism)",
    )
    s = sub.add_parser("show", help="the verdict table of a run's last evaluation")
    s.add_argument("run")
    return p


def show(verdict: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # Text, not markup: a detail holds intervals like "[0.42, 0.71]", which rich would read as tags.
    colour = {"pass": "green", "fail": "red", "judge_unreliable": "red"}
    t = Table(title=f"Verdict: {verdict['verdict'].upper()}", title_justify="left")
    for col in ("gate", "result", "required", "detail"):
        t.add_column(col)
    for g in verdict["gates"]:
        status = Text(g["status"], style=colour.get(g["status"], "yellow"))
        t.add_row(g["gate"], status, "yes" if g["required"] else "no", Text(g["detail"]))
    console = Console(stderr=True)
    console.print(t)
    for note in verdict.get("notes", []):
        console.print(Text("note: ", style="yellow") + Text(str(note)))
    if meaning := MEANING.get(verdict["verdict"]):
        console.print(Text(f"{verdict['verdict']}: {meaning}"))


# What an overall verdict means, said under its table (evals/verdict.py decides it).
MEANING = {
    "pass": "every required gate's interval clears its bar; the run may be promoted",
    "fail": "a required gate's interval is wholly on the wrong side of its bar",
    "judge_unreliable": "the judge failed its own checks (position, agreement): judge with another model",
    "incomplete": "a required gate was not run (no judge, lm-eval skipped, too little scored)",
    "insufficient": (
        "too few held-out conversations or items to read an interval (see each gate's detail): this says "
        "nothing about the adapter either way; hold out more conversations and evaluate more prompts"
    ),
    "inconclusive": "an interval straddles its bar: more held-out conversations would decide",
}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from brightrun.errors import ConfigError
    from versions.registry import VersionError

    try:
        if args.command == "show":
            from evals.run import EVAL_DIR, finished_run

            run_dir = finished_run(Path(args.runs_dir), args.run)[0]
            path = run_dir / EVAL_DIR / "verdict.json"
            if not path.is_file():
                raise ConfigError(f"{path}: no evaluation yet (run `just eval {args.run}`)")
            show(json.loads(path.read_text("utf-8")))
            return 0
        return _run(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except VersionError as exc:  # --against: an unknown version, or one not comparable with this run
        print(f"error: --against {args.against}: {exc}", file=sys.stderr)
        return 2


def _run(args) -> int:
    from evals.run import Options, evaluate_run
    from jobs import registry

    for name in ("limit", "general_limit", "max_new_tokens", "general_max_tokens"):
        value = getattr(args, name)
        if value is not None and value < 1:
            from brightrun.errors import ConfigError

            raise ConfigError(f"--{name.replace('_', '-')} {value}: expected a whole number of at least 1")
    registry.use_runs_dir(args.runs_dir)
    opts = Options(
        limit=args.limit,
        backend=args.backend,
        device=args.device,
        max_new_tokens=args.max_new_tokens,
        judge=not args.no_judge,
        general=not args.no_general,
        tasks=[t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None,
        general_limit=args.general_limit,
        general_max_tokens=args.general_max_tokens,
        gates=Path(args.gates) if args.gates else None,
        quantize=args.quantize,
        against=args.against,
    )
    if args.local_judge and not args.no_judge:
        import os

        from evals.run import preflight

        preflight(args.run, args.runs_dir, opts)  # bad input fails before a server starts
        from evals.local_judge import WARNING, local_judge

        log = Path(args.runs_dir) / args.run / "logs" / "local-judge.log"
        with local_judge(args.local_judge, log) as (env, ready):
            os.environ.update(env)
            opts.judge_ready = ready
            opts.notes.append(WARNING.format(model=Path(args.local_judge).name))
            verdict = evaluate_run(args.run, args.runs_dir, opts)
    else:
        verdict = evaluate_run(args.run, args.runs_dir, opts)
    show(verdict)
    return 0


if __name__ == "__main__":
    sys.exit(main())
