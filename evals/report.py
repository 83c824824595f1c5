"""The evaluation's part of report.html: the verdict's gates, the judge's scores base vs adapter (a chart
and a table), the pairwise win rate, general ability, and the answers side by side with the judge's reasons.

jobs/report.py calls section(run_dir / "eval") when an evaluation exists; the page stays one file.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

e = html.escape
SHOWN_ANSWERS = 12  # side-by-side answers in the page; all of them are in eval/answers.jsonl


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text("utf-8").splitlines() if x.strip()]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text("utf-8")) if path.is_file() else {}


def table(rows: list[tuple], header: tuple | None = None, cls: str = "") -> str:
    head = "<tr>" + "".join(f"<th>{e(str(h))}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table class='{cls}'>{head}{body}</table>"


def scores_png(criteria: dict) -> bytes:
    """Per-criterion mean score (1-5), base vs adapter, as grouped bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(criteria)
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=110)
    width = 0.38
    for i, model in enumerate(("base", "adapter")):
        means = [criteria[c][model]["mean"] or 0 for c in names]
        xs = [k + (i - 0.5) * width for k in range(len(names))]
        bars = ax.bar(xs, means, width, label="base model" if model == "base" else "with the adapter")
        ax.bar_label(bars, labels=[f"{m:.2f}" if m else "n/a" for m in means], fontsize=8)
    ax.set_xticks(range(len(names)), [n.replace("_", " ") for n in names])
    ax.set_ylim(0, 5.4)
    ax.set_ylabel("judge's mean score (1-5)")
    ax.legend(loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def pointwise_reasons(judgements: list[dict]) -> dict:
    """(prompt id, model) -> {criterion: "score: reason" or "unscored"} from the judge's pointwise rows."""
    out: dict = {}
    for row in judgements:
        if row.get("kind") != "pointwise":
            continue
        cell = out.setdefault((row["id"], row["model"]), {})
        for criterion, s in (row.get("scores") or {}).items():
            cell[criterion] = f"{s['score']}: {s['reason']}"
        if row.get("status") != "ok":  # unparseable, refused, error: said, never a score
            cell.setdefault("unscored", row.get("status", "unscored"))
    return out


def span(ci: list | None) -> str:
    """An interval as the report prints it: intervals by held-out conversation (evals/stats.py)."""
    return "n/a" if not ci else "[{:.2f}, {:.2f}]".format(*ci)


def section(eval_dir: Path) -> list[str]:
    verdict = read_json(eval_dir / "verdict.json")
    if not verdict:
        return []
    judged = read_json(eval_dir / "judge.json")
    general = read_json(eval_dir / "general.json")
    generation = read_json(eval_dir / "generation.json")
    parts = [
        f"<h2>Evaluation verdict: <span class='verdict-{e(verdict['verdict'])}'>"
        f"{e(verdict['verdict'].upper())}</span></h2>",
        table(
            [(g["gate"], g["status"], ("no", "yes")[g["required"]], g["detail"]) for g in verdict["gates"]],
            ("gate", "result", "required", "detail"),
        ),
    ]
    if judged.get("skipped"):
        parts.append(f"<p>Judge: skipped ({e(judged['skipped'])}).</p>")
    elif judged:
        png = base64.b64encode(scores_png(judged["criteria"])).decode()
        pw = judged["pairwise"]
        parts += [
            f"<h3>Judge ({e(str(judged['judge']['model']))})</h3>",
            f'<img alt="judge scores, base vs adapter" src="data:image/png;base64,{png}">',
            table(
                [
                    (
                        c,
                        fmt(v["base"]["mean"]),
                        fmt(v["adapter"]["mean"]),
                        fmt((v.get("difference") or {}).get("mean")),
                        span((v.get("difference") or {}).get("ci95")),
                        (v.get("difference") or {}).get("n", ""),
                        (v.get("difference") or {}).get("n_clusters", ""),
                    )
                    for c, v in judged["criteria"].items()
                ],
                (
                    "criterion",
                    "base mean",
                    "adapter mean",
                    "difference",
                    "95% interval",
                    "prompts",
                    "conversations",
                ),
            ),
            f"<p>Pairwise, each order one judgement: adapter wins {pw['adapter_wins']}, base wins "
            f"{pw['base_wins']}, ties {pw['ties']}, unscored {pw['unscored']}; win rate "
            f"{fmt(pw['win_rate'])}, 95% interval {span(pw.get('ci95'))} over "
            f"{pw.get('n_conversations', '?')} held-out conversation(s); with length controlled "
            f"{fmt((pw.get('length_controlled') or {}).get('win_rate'))}, 95% interval "
            f"{span((pw.get('length_controlled') or {}).get('ci95'))}. The judge's checks: the same "
            f"verdict in both orders on {fmt(pw.get('position_consistency'))} of prompts, the first reply "
            f"won {fmt(pw.get('first_position_rate'))} of judgements (0.5 is no position bias), its grades "
            f"of the reference replies against their quality_score: Kendall tau "
            f"{fmt((judged.get('reference_agreement') or {}).get('tau'))}, 95% interval "
            f"{span((judged.get('reference_agreement') or {}).get('ci95'))}.</p>",
            f"<p>{judged['calls']} judge calls in {judged['wall_s']:.1f} s, "
            f"{judged['unscored']} unscored.</p>",
        ]
    if general and not general.get("skipped"):
        parts += [
            "<h3>General ability (lm-eval)</h3>",
            table(
                [
                    (
                        t,
                        r.get("metric"),
                        *(fmt(r[k]) for k in ("base", "adapter", "delta")),
                        span((r.get("paired") or {}).get("ci95")),
                        (r.get("paired") or {}).get("n", ""),
                    )
                    for t, r in general["tasks"].items()
                ],
                ("task", "metric", "base", "adapter", "delta", "paired 95% interval", "items"),
            ),
        ]
    if generation:
        rates = ", ".join(
            f"{m} {v['tokens_per_s']:.1f} tokens/s, {v.get('mean_new_tokens', '?')} tokens on average, "
            f"{v.get('truncated', '?')} cut by the cap"
            for m, v in generation["models"].items()
        )
        parts.append(
            f"<p>Answers: {e(generation['backend'])}, greedy, at most {generation['max_new_tokens']} new "
            "tokens "
            f"({e(generation.get('max_new_tokens_rule', ''))}); {e(rates)}.</p>"
        )
    parts += answers_section(eval_dir, read_jsonl(eval_dir / "judgements.jsonl"))
    return parts


def answers_section(eval_dir: Path, judgements: list[dict]) -> list[str]:
    prompts = read_jsonl(eval_dir / "prompts.jsonl")
    answers = {(a["id"], a["model"]): a["text"] for a in read_jsonl(eval_dir / "answers.jsonl")}
    reasons = pointwise_reasons(judgements)
    parts = [f"<h3>Answers side by side ({min(len(prompts), SHOWN_ANSWERS)} of {len(prompts)})</h3>"]
    for p in prompts[:SHOWN_ANSWERS]:
        emotion = f"{p.get('primary_emotion') or '?'} at intensity {p.get('intensity')}"
        rows = [
            ("prompt", f"{p['id']} · {p['emotional_arc_key']} · {emotion}"),
            ("client", p["messages"][-1]["content"]),
            ("reference", p["reference"]),
        ]
        for model in ("base", "adapter"):
            why = reasons.get((p["id"], model), {})
            rows.append((model, answers.get((p["id"], model), "")))
            rows.append((f"judge on {model}", "\n".join(f"{k}: {v}" for k, v in why.items()) or "not judged"))
        parts.append(table(rows, cls="answers"))
    return parts


def fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
