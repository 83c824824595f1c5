"""The verdict: the customer's Phase 2 checks as gates over a run's evaluation.

Each gate compares the adapter with the base model on the same prompts, paired, with a 95% interval
(evals/stats.py: resampling held-out conversations; lm-eval's items for general ability), and says
- pass: the interval clears the gate's bar; fail: it is entirely on the wrong side of it;
- inconclusive: the interval straddles the bar (more held-out conversations would decide);
- insufficient: too few held-out conversations (or items) to read an interval at all: what is missing is
  said; not_run: its input is missing (no judge configured, lm-eval skipped, answers the judge could not
  score).
The judge is checked before it is believed (issue 27): a judge that disagrees with itself when the replies
swap places, or that picks whichever reply comes first, makes the verdict `judge_unreliable`, not `fail`.

Overall: fail when a required gate the judge does not measure fails (held-out loss, general ability); else
judge_unreliable when the judge's gates are required and it fails a check; else fail (a required judge gate);
else incomplete (a required gate not run); else insufficient; else inconclusive; else pass. Only `pass`
promotes by itself (versions/promote.py).
Thresholds live in evals/gates.yaml (or a copy passed with --gates), validated here.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from brightrun.errors import ConfigError

DEFAULT_GATES = Path(__file__).resolve().parent / "gates.yaml"
PASS, FAIL, NOT_RUN = "pass", "fail", "not_run"
INCONCLUSIVE, INSUFFICIENT, UNRELIABLE = "inconclusive", "insufficient", "judge_unreliable"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HeldoutGate(_Strict):
    required: bool = True


class JudgeGate(_Strict):
    required: bool = True
    criteria: list[str] = ["on_brand", "emotional_intelligence"]
    min_scored_fraction: float = Field(0.5, ge=0, le=1)
    min_conversations: int = Field(10, ge=1)
    score_margin: float = Field(0.0, ge=0)
    min_win_rate_lower: float = Field(0.5, ge=0, le=1)
    min_position_consistency: float = Field(0.5, ge=0, le=1)
    max_position_bias: float = Field(0.3, ge=0, le=0.5)
    min_checked: int = Field(10, ge=1)
    min_reference_agreement: float = Field(0.0, ge=-1, le=1)


class GeneralGate(_Strict):
    required: bool = True
    max_drop_points: float = Field(2.0, ge=0)
    min_items: int = Field(20, ge=1)


class Gates(_Strict):
    heldout_loss: HeldoutGate = HeldoutGate()
    judge: JudgeGate = JudgeGate()
    general: GeneralGate = GeneralGate()


def load_gates(path: Path | str | None = None) -> Gates:
    """The gates file, every problem named with its key (a typo is an error, not a silent default)."""
    path = Path(path) if path else DEFAULT_GATES
    try:
        data = yaml.safe_load(path.read_text("utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the gates file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    try:
        return Gates.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None


def gate(name: str, status: str, required: bool, detail: str, **values) -> dict:
    return {"gate": name, "status": status, "required": required, "detail": detail, **values}


def heldout_gate(heldout: dict | None, g: HeldoutGate) -> dict:
    if not heldout:
        return gate("heldout_loss", NOT_RUN, g.required, "no held-out loss (the run's eval.json is missing)")
    b, a = heldout["base_loss"], heldout["adapter_loss"]
    ok = a < b
    return gate(
        "heldout_loss",
        PASS if ok else FAIL,
        g.required,
        f"adapter {a:.4f} {'<' if ok else '>='} base {b:.4f}",
        base=b,
        adapter=a,
    )


def three_way(lo: float, hi: float, bar: float) -> str:
    """An interval against a bar: above it pass, below it fail, across it inconclusive."""
    return PASS if lo > bar else FAIL if hi < bar else INCONCLUSIVE


def too_few(n_conversations: int | None, g: JudgeGate) -> str | None:
    if n_conversations is None:
        return "no conversation counts (judged before they were kept): evaluate the run again"
    if n_conversations < g.min_conversations:
        return (
            f"{n_conversations} held-out conversation(s) scored; at least {g.min_conversations} needed "
            "(hold out more conversations when converting: converters' --val-fraction, or more data)"
        )
    return None


def judge_gates(
    judge: dict | None, g: JudgeGate, n_prompts: int, n_conversations: int | None = None
) -> list[dict]:
    """The judge's gates. When the evaluation itself asked about fewer held-out conversations than the
    gates need (the demo: 2 prompts from 1 conversation), each is `insufficient` whatever the judge did:
    no judge, however good, could make that sample a verdict; what it did measure stays in the detail."""
    found = _judge_gates(judge, g, n_prompts)
    if n_conversations is None or n_conversations >= g.min_conversations:
        return found
    few = (
        f"the evaluation asked {n_prompts} prompt(s) from {n_conversations} held-out conversation(s); "
        f"at least {g.min_conversations} conversations needed"
    )
    return [r | {"status": INSUFFICIENT, "detail": f"{few}; {r['detail']}"} for r in found]


def _judge_gates(judge: dict | None, g: JudgeGate, n_prompts: int) -> list[dict]:
    names = [f"judge_{c}" for c in g.criteria] + ["judge_win_rate"]
    if not judge or judge.get("skipped"):
        why = (judge or {}).get("skipped") or "no judge results"
        return [gate(n, NOT_RUN, g.required, why) for n in names]
    out = []
    for c in g.criteria:
        scores = judge["criteria"].get(c)
        if scores is None:
            out.append(gate(f"judge_{c}", NOT_RUN, g.required, f"the judge has no criterion {c!r}"))
            continue
        diff = scores.get("difference") or {}
        scored, asked = diff.get("n", 0), n_prompts
        if not asked or scored / asked < g.min_scored_fraction or diff.get("ci95") is None:
            why = f"only {scored} of {asked} prompts scored for both models"
            out.append(gate(f"judge_{c}", NOT_RUN, g.required, why))
            continue
        lo, hi = diff["ci95"]
        said = (
            f"adapter − base {diff['mean']:+.2f} points (1-5 scale), 95% interval [{lo:+.2f}, {hi:+.2f}] "
            f"over {scored} prompts from {diff['n_clusters']} conversation(s); bar {g.score_margin:+.2f}"
        )
        status = (
            INSUFFICIENT if (few := too_few(diff.get("n_clusters"), g)) else three_way(lo, hi, g.score_margin)
        )
        out.append(
            gate(
                f"judge_{c}",
                status,
                g.required,
                f"{few}; {said}" if few else said,
                difference=diff["mean"],
                ci95=[lo, hi],
                n=scored,
                n_conversations=diff["n_clusters"],
            )
        )
    out.append(win_rate_gate(judge["pairwise"], g))
    return out


def win_rate_gate(pw: dict, g: JudgeGate) -> dict:
    decided = pw["adapter_wins"] + pw["base_wins"] + pw["ties"]
    asked = decided + pw["unscored"]
    if not asked or decided / asked < g.min_scored_fraction or pw.get("ci95") is None:
        why = f"only {decided} of {asked} judgements (each order one) decided"
        return gate("judge_win_rate", NOT_RUN, g.required, why)
    lo, hi = pw["ci95"]
    said = (
        f"adapter win rate {pw['win_rate']:.2f}, 95% interval [{lo:.2f}, {hi:.2f}] over {decided} "
        f"judgements from {pw.get('n_conversations', '?')} conversation(s); bar {g.min_win_rate_lower:.2f}"
        + (f"; {pw['one_order']} prompt(s) with one order unscored" if pw.get("one_order") else "")
        + (
            "; length-controlled {:.2f} [{:.2f}, {:.2f}]".format(lc["win_rate"], *lc["ci95"])
            if (lc := pw.get("length_controlled")) and lc.get("ci95")
            else ""
        )
    )
    few = too_few(pw.get("n_conversations"), g)
    return gate(
        "judge_win_rate",
        INSUFFICIENT if few else three_way(lo, hi, g.min_win_rate_lower),
        g.required,
        f"{few}; {said}" if few else said,
        win_rate=pw["win_rate"],
        ci95=[lo, hi],
        n=decided,
        n_conversations=pw.get("n_conversations"),
    )


def judge_checks(judge: dict | None, g: JudgeGate) -> list[dict]:
    """Is the judge usable (issue 27, item 3)? Its position consistency (the same verdict with the replies
    swapped), its first-position rate and its agreement with the file's own ratings, each against its
    threshold once enough were judged; a failed check makes the verdict judge_unreliable. Not required
    gates: they qualify the others."""
    if not judge or judge.get("skipped"):
        return []
    pw = judge["pairwise"]
    out = []
    rate, n = pw.get("position_consistency"), pw.get("position_consistency_n", 0)
    if rate is None or n < g.min_checked:
        out.append(gate("judge_consistency", INSUFFICIENT, False, f"{n} prompt(s) judged in both orders"))
    else:
        ok = rate >= g.min_position_consistency
        bar = g.min_position_consistency
        said = f"same verdict in both orders on {rate:.0%} of {n} prompts (at least {bar:.0%})"
        out.append(gate("judge_consistency", PASS if ok else UNRELIABLE, False, said, rate=rate, n=n))
    rate, n = pw.get("first_position_rate"), pw.get("first_position_n", 0)
    if rate is None or n < g.min_checked:
        out.append(gate("judge_position_bias", INSUFFICIENT, False, f"{n} judgement(s) with a winner"))
    else:
        ok = abs(rate - 0.5) <= g.max_position_bias
        said = (
            f"the first reply won {rate:.0%} of {n} judgements "
            f"(allowed {0.5 - g.max_position_bias:.0%}-{0.5 + g.max_position_bias:.0%})"
        )
        out.append(gate("judge_position_bias", PASS if ok else UNRELIABLE, False, said, rate=rate, n=n))
    out.append(agreement_check(judge.get("reference_agreement") or {}, g))
    return out


def agreement_check(agree: dict, g: JudgeGate) -> dict:
    """Does the judge rank the file's own reference replies as their quality_score does? Unreliable when
    its Kendall tau's interval lies wholly below min_reference_agreement (it ranks them the other way, or
    at random, clearly); pass when wholly above; else inconclusive (a check, not a gate: it qualifies)."""
    n, tau = agree.get("n", 0), agree.get("tau")
    if tau is None or n < g.min_checked:
        why = f"{n} reference reply(ies) graded" + ("" if tau is not None or not n else ", ratings all equal")
        return gate("judge_agreement", INSUFFICIENT, False, why)
    lo, hi = agree["ci95"]
    said = (
        f"Kendall tau {tau:+.2f}, 95% interval [{lo:+.2f}, {hi:+.2f}], between its grades of {n} reference "
        f"replies and their quality_score (bar {g.min_reference_agreement:+.2f})"
    )
    status = {FAIL: UNRELIABLE}.get(s := three_way(lo, hi, g.min_reference_agreement), s)
    return gate("judge_agreement", status, False, said, tau=tau, ci95=[lo, hi], n=n)


def general_gates(general: dict | None, g: GeneralGate) -> list[dict]:
    """Non-inferiority (issue 27): the paired difference adapter − base over lm-eval's items passes only
    when its interval's lower end is above −max_drop_points, fails when its upper end is below it."""
    if not general or general.get("skipped") or not general.get("tasks"):
        why = (general or {}).get("skipped") or "no general-ability results"
        return [gate("general", NOT_RUN, g.required, why)]
    out = []
    for task, r in sorted(general["tasks"].items()):
        paired = r.get("paired") or {}
        if r.get("base") is None or r.get("adapter") is None or paired.get("ci95") is None:
            out.append(gate(f"general_{task}", NOT_RUN, g.required, f"{task}: no per-item scores"))
            continue
        lo, hi = paired["ci95"]
        n = paired["n"]
        said = (
            f"{task} {r.get('metric', '')}: base {r['base']:.1f} -> adapter {r['adapter']:.1f}; paired "
            f"difference {paired['mean']:+.1f} points, 95% interval [{lo:+.1f}, {hi:+.1f}] over {n} items; "
            f"margin -{g.max_drop_points:.1f}"
        )
        if n < g.min_items:
            status, said = INSUFFICIENT, f"{n} item(s) scored; at least {g.min_items} needed; {said}"
        else:
            status = three_way(lo, hi, -g.max_drop_points)
        out.append(
            gate(
                f"general_{task}",
                status,
                g.required,
                said,
                difference=paired["mean"],
                ci95=[lo, hi],
                n=n,
                margin_points=g.max_drop_points,
            )
        )
    return out


def loses(ci95: list[float] | tuple[float, float]) -> bool:
    """The rule for "lost an A/B" (issue 27, item 5), written once: the win rate's 95% interval lies
    wholly below 0.5. The vs_production gate and `promote --stage production` (versions/abtests.py) both
    read it."""
    return ci95[1] < 0.5


def judged(name: str) -> bool:
    """A gate the judge measured (its own gates, and the A/B against production it judged): an unreliable
    judge makes its failure `judge_unreliable`, not `fail`."""
    return name.startswith("judge_") or name == "vs_production"


def production_gate(ab: dict | None, g: JudgeGate) -> list[dict]:
    """Against what is in production (issue 27, item 5): the A/B of the production version (A) against this
    run (B), versions/ab.py's ab.json. The run must not lose: `fail` only when B's win rate's interval lies
    wholly below 0.5 (the rule `promote` applies into production); across or above it, `pass`. No gate when
    the evaluation was not asked to compare (`evals run --against`)."""
    if ab is None:
        return []
    other = ab["a"]["ref"]
    if skipped := (ab.get("judge") or {}).get("skipped"):
        return [gate("vs_production", NOT_RUN, g.required, f"against {other}: {skipped}", against=other)]
    pw = ab.get("pairwise") or {}
    if ab.get("ci95") is None:
        why = f"against {other}: no judgement decided (A/B {ab['id']})"
        return [gate("vs_production", NOT_RUN, g.required, why, against=other, ab=ab["id"])]
    lo, hi = ab["ci95"]
    said = (
        f"against {other}: this run's win rate {ab['win_rate']:.2f}, 95% interval [{lo:.2f}, {hi:.2f}] "
        f"over {pw.get('n', '?')} judgements from {pw.get('n_conversations', '?')} conversation(s) "
        f"(A/B {ab['id']}); it must not lie wholly below 0.50"
    )
    few = too_few(pw.get("n_conversations"), g)
    status = INSUFFICIENT if few else FAIL if loses((lo, hi)) else PASS
    values = {"win_rate": ab["win_rate"], "ci95": [lo, hi], "against": other, "ab": ab["id"]}
    return [gate("vs_production", status, g.required, f"{few}; {said}" if few else said, **values)]


def decide(results: dict, gates: Gates | None = None) -> dict:
    """results: {"heldout": {"base_loss", "adapter_loss"} | None, "judge": judge.json | None,
    "general": general.json | None, "n_prompts": int, "n_conversations": int (held-out conversations
    the prompts come from; absent: not known), "ab": ab.json against production | None}. Returns
    verdict.json: every gate, the judge's checks, and the overall verdict."""
    gates = gates or Gates()
    rows = [
        heldout_gate(results.get("heldout"), gates.heldout_loss),
        *judge_gates(
            results.get("judge"), gates.judge, results.get("n_prompts", 0), results.get("n_conversations")
        ),
        *general_gates(results.get("general"), gates.general),
        *production_gate(results.get("ab"), gates.judge),
    ]
    checks = judge_checks(results.get("judge"), gates.judge)
    required = {r["status"] for r in rows if r["required"]}
    if FAIL in {r["status"] for r in rows if r["required"] and not judged(r["gate"])}:
        overall = FAIL  # the judge's health cannot excuse a loss or a drop it did not measure
    elif gates.judge.required and any(c["status"] == UNRELIABLE for c in checks):
        overall = UNRELIABLE
    else:
        overall = next((s for s in (FAIL, NOT_RUN, INSUFFICIENT, INCONCLUSIVE) if s in required), PASS)
        overall = "incomplete" if overall == NOT_RUN else overall
    return {"verdict": overall, "gates": rows + checks, "thresholds": gates.model_dump()}
