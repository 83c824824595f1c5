"""The judge's rows summed up into judge.json: per-criterion means and paired differences, the pairwise
win rate (raw and with length controlled), and the judge's own checks (position consistency, first-position
rate, agreement with the file's quality_score). Every interval resamples held-out conversations
(evals/stats.py); evals/verdict.py reads them against its gates."""

from __future__ import annotations

from typing import TYPE_CHECKING

from evals import rubrics, stats

if TYPE_CHECKING:
    from evals.judge import JudgeSettings

# The two answer sets a judgement compares, (first, second): the evaluation's base vs adapter; the A/B
# between versions (versions/ab.py) passes ("A", "B"). The win rate is always the second's over the first.
MODELS = ("base", "adapter")
# The reference reply's pointwise rows (the judge checked against the file's quality_score), beside them.
REFERENCE = "reference"
# What the agreement check reads of the judge's grades: the two criteria a rating of the turn itself is
# about ("helpful" grades a reply against this very reference).
AGREEMENT_CRITERIA = ("on_brand", "emotional_intelligence")


def pairwise_summary(rows: list[dict], seed: int = 0, models: tuple[str, str] = MODELS) -> dict:
    """The second model's win rate over the first, each scored order one battle (Arena-Hard: a prompt's
    two orders are two battles; one unscored order leaves the other counted, said in `one_order`), with
    a 95% interval resampling held-out conversations; and the judge's own checks (issue 27, item 3):
    how often it names the same winner in both orders, and how often it picks whichever reply is first."""
    first, second = models
    value = {second: stats.WIN, "tie": stats.TIE, first: stats.LOSS}
    battles = [r for r in rows if r["kind"] == "pairwise"]
    scored = [r for r in battles if r.get("winner_model") in value]
    units = [(r.get("conversation", r["id"]), value[r["winner_model"]]) for r in scored]
    by_prompt: dict[str, list[str]] = {}
    for r in scored:
        by_prompt.setdefault(r["id"], []).append(r["winner_model"])
    both = [w for w in by_prompt.values() if len(w) == 2]
    summary = {
        f"{second}_wins": sum(r["winner_model"] == second for r in scored),
        f"{first}_wins": sum(r["winner_model"] == first for r in scored),
        "ties": sum(r["winner_model"] == "tie" for r in scored),
        "unscored": len(battles) - len(scored),
        "n": len(scored),
        "n_conversations": len({c for c, _ in units}),
        "one_order": sum(len(w) == 1 for w in by_prompt.values()),  # prompts with one order unscored
        "win_rate": None,
        "ci95": None,
    }
    if units:
        found = stats.interval(units, seed=seed)
        summary |= {"win_rate": found["mean"], "ci95": found["ci95"]}
    # Beside the raw win rate, one with length controlled (issue 27, item 4): a judge that prefers the
    # longer reply gives a fine-tune that talks more a win it did not earn.
    lengths = [r.get("new_tokens") or {} for r in scored]
    if scored and all(isinstance(n.get(first), int) and isinstance(n.get(second), int) for n in lengths):
        lc = [(c, v, n[second] - n[first]) for (c, v), n in zip(units, lengths, strict=True)]
        summary["length_controlled"] = stats.length_controlled(lc, seed=seed)
    else:
        summary["length_controlled"] = None  # answers without token counts (written before they were kept)
    # Position consistency (MT-Bench, Zheng et al. 2023, "consistency"): the same verdict in both orders,
    # over the prompts with both scored. A judge swayed by position disagrees with itself.
    summary["position_consistency"] = round(sum(a == b for a, b in both) / len(both), 4) if both else None
    summary["position_consistency_n"] = len(both)
    # How often the reply shown first won, over the scored battles with a winner: 0.5 is no position bias;
    # near 1 or 0 the swap is doing all the work and the judge is not reading the replies.
    placed = [r["winner"] for r in scored if r.get("winner") in ("A", "B")]
    summary["first_position_rate"] = round(placed.count("A") / len(placed), 4) if placed else None
    summary["first_position_n"] = len(placed)
    return summary


def paired_scores(rows: list[dict], criterion: str, models: tuple[str, str] = MODELS, seed: int = 0) -> dict:
    """A criterion's per-prompt difference, second model minus first, on the prompts both were scored on
    (issue 27, item 2: a paired comparison on the same prompts), its mean and interval by conversation."""
    first, second = models
    score: dict[tuple[str, str], tuple[str, float]] = {}
    for r in rows:
        if r["kind"] == "pointwise" and r["status"] == "ok":
            score[r["id"], r["model"]] = (r.get("conversation", r["id"]), r["scores"][criterion]["score"])
    units = [
        (conv, b - score[pid, first][1])
        for (pid, model), (conv, b) in score.items()
        if model == second and (pid, first) in score
    ]
    return stats.interval(units, seed=seed)


def summarize(
    rows: list[dict], settings: JudgeSettings, wall_s: float, seed: int = 0, models: tuple[str, str] = MODELS
) -> dict:
    criteria = {
        criterion: {
            **{
                model: stats.mean_n(
                    [
                        r["scores"][criterion]["score"]
                        for r in rows
                        if r["kind"] == "pointwise" and r["model"] == model and r["status"] == "ok"
                    ]
                )
                for model in models
            },
            "difference": paired_scores(rows, criterion, models, seed),
        }
        for criterion in rubrics.CRITERIA
    }
    prompt_tokens = sum(r["prompt_tokens"] for r in rows)
    completion_tokens = sum(r["completion_tokens"] for r in rows)
    statuses = [r["status"] for r in rows]
    cost = settings.cost(prompt_tokens, completion_tokens)
    return {
        "judge": settings.public(),
        "judgements": len(rows),
        "calls": sum(len(r["attempts"]) for r in rows),  # requests sent; the client's transport retries apart
        "transport_retries": sum(a.get("retries", 0) for r in rows for a in r["attempts"]),
        "unscored": sum(s != "ok" for s in statuses),
        "statuses": {s: statuses.count(s) for s in sorted(set(statuses))},
        "wall_s": round(wall_s, 3),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "cost_usd": round(cost, 6) if cost is not None else None,
        "criteria": criteria,
        "pairwise": pairwise_summary(rows, seed=seed, models=models),
        "reference_agreement": reference_agreement(rows, seed),
    }


def reference_agreement(rows: list[dict], seed: int = 0) -> dict:
    """Kendall's tau-b between the judge's grade of each reference reply (the mean of AGREEMENT_CRITERIA)
    and the file's quality_score for it, with an interval by conversation (evals/stats.py)."""
    units = [
        (
            r.get("conversation", r["id"]),
            sum(r["scores"][c]["score"] for c in AGREEMENT_CRITERIA) / len(AGREEMENT_CRITERIA),
            float(r["quality_score"]),
        )
        for r in rows
        if r["kind"] == "pointwise" and r.get("model") == REFERENCE and r["status"] == "ok"
    ]
    return stats.rank_agreement(units, seed=seed)
