"""runs/<id>/report.html: loss curves, the held-out table, samples, lineage and cost, in one file.

The chart is a matplotlib PNG embedded as data (the machines are offline; the file must stand alone).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from jobs import registry


def loss_png(metrics: list[dict], eval_result: dict | None) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    train = [(m["step"], m["loss"]) for m in metrics if "loss" in m]
    evals = [(m["step"], m["eval_loss"]) for m in metrics if "eval_loss" in m]
    if train:
        ax.plot(*zip(*train, strict=True), marker="o", label="train loss")
    if evals:
        ax.plot(*zip(*evals, strict=True), marker="s", label="eval loss (held out)")
    if eval_result:
        ax.axhline(eval_result["base"]["loss"], color="grey", linestyle="--", label="base model, held out")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (trained tokens)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _table(rows: list[tuple], header: tuple | None = None) -> str:
    e = html.escape
    head = "<tr>" + "".join(f"<th>{e(str(h))}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def pod_rows(job, lineage: dict) -> list[tuple]:
    """A RunPod run's extra cost lines: the pod, its price, and what preemptions cost."""
    if not lineage.get("launch") or job is None:
        return []
    info = lineage["launch"]
    rows = [
        ("GPU", f"{info['gpus']} × {info['gpu']}" + (" (spot)" if info["spot"] else "")),
        ("price per hour (last pod)", "?" if job.price_per_hour is None else f"${job.price_per_hour:.2f}"),
        ("pods", ", ".join(f"{a['pod_id']}: {a['outcome']}" for a in lineage["attempts"])),
    ]
    lost = [a for a in lineage["attempts"] if "lost_steps" in a]
    if lost:
        steps = sum(a["lost_steps"] or 0 for a in lost)
        money = sum(a["lost_cost"] or 0 for a in lost)
        rows.append(("lost to preemptions", f"{steps} step(s), ${money:.2f}"))
    return rows


def write(run_dir: Path, db_url: str | None = None) -> Path:
    run_id = run_dir.name
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    eval_path = run_dir / "eval.json"
    result = json.loads(eval_path.read_text()) if eval_path.exists() else None
    lineage = json.loads((run_dir / "run.json").read_text())
    job = registry.get_job(run_id, db_url)
    png = base64.b64encode(loss_png(metrics, result)).decode()
    e = html.escape
    parts = [
        f"<h1>Run {e(run_id)}</h1>",
        f"<p>{e(lineage['preset'])} × {e(lineage['model'])} on {e(lineage['hardware'])}: "
        f"<b>{e(job.status if job else '?')}</b>, step {job.step if job else '?'} of "
        f"{job.total_steps if job else '?'}</p>",
        f'<img alt="loss curves" src="data:image/png;base64,{png}">',
    ]
    if result:
        b, a = result["base"], result["adapter"]
        parts += [
            "<h2>Held-out evaluation</h2>",
            _table(
                [
                    ("base model", f"{b['loss']:.4f}", f"{b['perplexity']:.2f}"),
                    ("adapter", f"{a['loss']:.4f}", f"{a['perplexity']:.2f}"),
                    ("change", f"{a['loss'] - b['loss']:+.4f}", f"{a['perplexity'] / b['perplexity']:.3f}×"),
                ],
                ("model", "loss", "perplexity"),
            ),
            f"<p>{result['val_lines']} held-out lines, {result['scored_tokens']} trained tokens scored.</p>",
            "<h2>Samples (greedy, held-out prompts)</h2>",
        ]
        for s in result["samples"]:
            parts.append(
                _table(
                    [
                        ("client", s["prompt"]),
                        ("reference", s["reference"]),
                        ("base", s["base"]),
                        ("adapter", s["adapter"]),
                    ]
                )
            )
    if (run_dir / "eval" / "verdict.json").is_file():  # `just eval RUN` (evals/) ran
        from evals.report import section

        parts += section(run_dir / "eval")
    cost = job.actual_cost if job and job.actual_cost is not None else 0.0
    parts += [
        "<h2>Cost</h2>",
        _table(
            [
                ("estimated (on demand)", f"${lineage['estimate']['cost_on_demand']:.2f}"),
                ("actual", f"${cost:.2f}"),
                ("GPU hours", f"{(job.gpu_hours or 0) if job else 0:.3f}"),
                ("attempts", len(lineage["attempts"])),
                *pod_rows(job, lineage),
            ]
        ),
        "<h2>Lineage</h2>",
        _table(
            [
                ("input", f"{lineage['input']['path']} sha256 {lineage['input']['sha256']}"),
                ("data", f"{lineage['data']['dir']} manifest sha256 {lineage['data']['manifest_sha256']}"),
                ("config", f"{lineage['config']['path']} sha256 {lineage['config']['sha256']}"),
                (
                    "adapter",
                    f"{(lineage.get('adapter') or {}).get('path')} sha256 "
                    f"{(lineage.get('adapter') or {}).get('sha256')}",
                ),
            ]
        ),
    ]
    style = (
        "body{font-family:sans-serif;max-width:960px;margin:2em auto}table{border-collapse:collapse;"
        "margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;white-space:pre-wrap}"
        ".verdict-pass{color:#15803d}.verdict-fail{color:#b91c1c}.verdict-incomplete{color:#b45309}"
        ".verdict-insufficient,.verdict-inconclusive,.verdict-judge_unreliable{color:#b45309}"
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Run {e(run_id)}</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n"
    )
    out = run_dir / "report.html"
    out.write_text(page, "utf-8")
    return out
