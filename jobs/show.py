"""`just runs` and `just show RUN`: the registry as a person reads it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from jobs import registry


def _money(x: float | None) -> str:
    return "-" if x is None else f"${x:.2f}"


def runs_table(db_url: str | None = None) -> None:
    t = Table(title="Runs", title_justify="left")
    for col in ("run", "status", "step", "loss", "eval loss", "est. cost", "cost", "created"):
        t.add_column(col)
    for job in registry.list_jobs(db_url):
        m = job.metrics or {}
        t.add_row(
            job.id,
            job.status,
            f"{job.step}/{job.total_steps or '?'}",
            f"{m['loss']:.4f}" if "loss" in m else "-",
            f"{m['eval_loss']:.4f}" if "eval_loss" in m else "-",
            _money(job.estimated_cost),
            _money(job.actual_cost),
            f"{job.created_at:%Y-%m-%d %H:%M}",
        )
    Console().print(t)


def show_run(run_id: str, runs_dir: str = "runs", db_url: str | None = None) -> int:
    job = registry.get_job(run_id, db_url)
    if job is None:
        print(f"error: no run {run_id!r} (see `just runs`)", file=sys.stderr)
        return 2
    console = Console()
    t = Table(title=f"Run {run_id}", title_justify="left", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    for key in (
        "status",
        "preset",
        "model",
        "hardware",
        "step",
        "total_steps",
        "epoch",
        "started_at",
        "completed_at",
        "estimated_cost",
        "actual_cost",
        "gpu_hours",
        "artifact_path",
        "log_path",
        "error_message",
        "retry_count",
        "gpu_type",
        "gpu_count",
        "price_per_hour",
    ):
        t.add_row(key, str(getattr(job, key)))
    t.add_row("hyperparameters", json.dumps(job.hyperparameters))
    t.add_row("latest metrics", json.dumps(job.metrics))
    console.print(t)
    history = registry.metrics(run_id, db_url)
    if history:
        h = Table(title="Metrics history", title_justify="left")
        for col in ("step", "epoch", "loss", "learning rate", "grad norm", "eval loss"):
            h.add_column(col, justify="right")
        for p in history:
            h.add_row(
                str(p.step),
                *(
                    f"{x:.4g}" if x is not None else "-"
                    for x in (p.epoch, p.loss, p.learning_rate, p.grad_norm, p.eval_loss)
                ),
            )
        console.print(h)
    report = Path(runs_dir) / run_id / "report.html"
    if report.exists():
        console.print(f"report: {report}")
    return 0


def compare(run_a: str, run_b: str, runs_dir: str = "runs", db_url: str | None = None) -> int:
    jobs = [registry.get_job(r, db_url) for r in (run_a, run_b)]
    for run, job in zip((run_a, run_b), jobs, strict=True):
        if job is None:
            print(f"error: no run {run!r} (see `just runs`)", file=sys.stderr)
            return 2
    evals = []
    for run in (run_a, run_b):
        path = Path(runs_dir) / run / "eval.json"
        evals.append(json.loads(path.read_text()) if path.exists() else None)
    t = Table(title="Runs side by side", title_justify="left")
    t.add_column("")
    t.add_column(run_a)
    t.add_column(run_b)
    rows = [
        ("status", lambda j, e: j.status),
        ("preset × model", lambda j, e: f"{j.preset} × {j.model}"),
        ("steps", lambda j, e: f"{j.step}/{j.total_steps}"),
    ]
    rows += [(k, lambda j, e, k=k: str(j.hyperparameters.get(k))) for k in sorted(jobs[0].hyperparameters)]
    rows += [
        ("final train loss", lambda j, e: _f((j.metrics or {}).get("loss"))),
        ("final eval loss", lambda j, e: _f((j.metrics or {}).get("eval_loss"))),
        ("held-out loss, base", lambda j, e: _f(e and e["base"]["loss"])),
        ("held-out loss, adapter", lambda j, e: _f(e and e["adapter"]["loss"])),
        ("estimated cost", lambda j, e: _money(j.estimated_cost)),
        ("actual cost", lambda j, e: _money(j.actual_cost)),
        ("GPU hours", lambda j, e: _f(j.gpu_hours)),
    ]
    for label, get in rows:
        t.add_row(label, *(get(j, e) for j, e in zip(jobs, evals, strict=True)))
    Console().print(t)
    return 0


def _f(x) -> str:
    return "-" if x is None else f"{x:.4f}"
