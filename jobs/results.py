"""A finished run's results: held-out base vs adapter (computed in training, or again), one sample each,
the numbers on the registry row and the artifact, report.html (`jobs eval RUN`, and the end of a run)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from brightrun.errors import ConfigError
from jobs import registry


def final_metrics(run_dir: Path, job) -> dict:
    """The last logged numbers, and the held-out losses when training computed them (eval.json)."""
    numbers = {k: v for k, v in (job.metrics or {}).items() if isinstance(v, int | float)}
    if (run_dir / "eval.json").is_file():
        result = json.loads((run_dir / "eval.json").read_text())
        numbers |= {
            "heldout_base_loss": result["base"]["loss"],
            "heldout_adapter_loss": result["adapter"]["loss"],
            "heldout_adapter_perplexity": result["adapter"]["perplexity"],
        }
    return numbers


def results(run_id: str, runs_dir: str = "runs", db_url: str | None = None, recompute: bool = False) -> int:
    """Held-out base vs adapter, samples, report.html (also `just eval RUN`)."""
    from jobs import evaluate, report

    run_dir = Path(runs_dir) / run_id
    if registry.get_job(run_id, db_url) is None or not (run_dir / "output" / "adapter_config.json").is_file():
        raise ConfigError(f"no finished run {run_id!r} with an adapter (see `just runs`)")
    try:
        # Written inside training when this attempt completed (jobs/axolotl_plugin.py); else load again.
        fresh = (run_dir / "eval.json").is_file() and not recompute
        result = json.loads((run_dir / "eval.json").read_text()) if fresh else evaluate.evaluate(run_dir)
    except ValueError as exc:
        print(f"eval skipped: {exc}", file=sys.stderr)
        result = None
    if result:
        b, a = result["base"], result["adapter"]
        with registry.session(db_url) as s:
            artifact = (
                s.query(registry.ModelArtifact).filter_by(job_id=run_id, artifact_type="adapter").first()
            )
            if artifact is not None:
                artifact.validation_loss, artifact.perplexity = a["loss"], a["perplexity"]
            job = s.get(registry.TrainingJob, run_id)
            job.metrics = {
                **(job.metrics or {}),
                "heldout_base_loss": b["loss"],
                "heldout_adapter_loss": a["loss"],
                "heldout_adapter_perplexity": a["perplexity"],
            }
            s.commit()
        print(
            f"held-out loss: base {b['loss']:.4f} (ppl {b['perplexity']:.2f}) -> adapter {a['loss']:.4f} "
            f"(ppl {a['perplexity']:.2f})",
            file=sys.stderr,
        )
        show_sample(result)
    out = report.write(run_dir, db_url)
    print(f"report: {out}", file=sys.stderr)
    return 0


def show_sample(result: dict) -> None:
    """The before/after a person came for: both losses and one held-out answer from each model."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title="Held-out results", title_justify="left", show_lines=True)
    t.add_column("")
    t.add_column("base model")
    t.add_column("with the adapter")
    b, a = result["base"], result["adapter"]
    t.add_row("loss", f"{b['loss']:.4f}", f"{a['loss']:.4f}")
    t.add_row("perplexity", f"{b['perplexity']:.2f}", f"{a['perplexity']:.2f}")
    if result["samples"]:
        s = result["samples"][0]
        t.add_row(f"client: {s['prompt']}", s["base"], s["adapter"])
    Console().print(t)
