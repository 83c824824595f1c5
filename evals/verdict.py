"""The verdict: the customer's Phase 2 checks as gates over a run's evaluation, each pass / fail / not_run.

A gate is "not_run" when its input is missing (no judge configured, lm-eval skipped, too few answers the
judge could score); the overall verdict is then "incomplete", never "pass": a run is only called good on
evidence. Thresholds live in evals/gates.yaml (or a copy passed with --gates), validated here.
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from brightrun.errors import ConfigError

DEFAULT_GATES = Path(__file__).resolve().parent / "gates.yaml"
PASS, FAIL, NOT_RUN = "pass", "fail", "not_run"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HeldoutGate(_Strict):
    required: bool = True


class JudgeGate(_Strict):
    required: bool = True
    criteria: list[str] = ["on_brand", "emotional_intelligence"]
    min_scored_fraction: float = Field(0.5, ge=0, le=1)
    min_win_rate_lower: float = Field(0.5, ge=0, le=1)


class GeneralGate(_Strict):
    required: bool = True
    max_drop_points: float = Field(2.0, ge=0)


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


def judge_gates(judge: dict | None, g: JudgeGate, n_prompts: int) -> list[dict]:
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
        b, a = scores["base"], scores["adapter"]
        asked = n_prompts
        scored = min(b["n"], a["n"])
        if not asked or scored / asked < g.min_scored_fraction or b["mean"] is None or a["mean"] is None:
            out.append(
                gate(f"judge_{c}", NOT_RUN, g.required, f"only {scored} of {asked} answers scored per model")
            )
            continue
        ok = a["mean"] >= b["mean"]
        out.append(
            gate(
                f"judge_{c}",
                PASS if ok else FAIL,
                g.required,
                f"adapter mean {a['mean']:.2f} {'>=' if ok else '<'} base {b['mean']:.2f} (n={scored})",
                base=b["mean"],
                adapter=a["mean"],
            )
        )
    pw = judge["pairwise"]
    decided = pw["adapter_wins"] + pw["base_wins"] + pw["ties"]
    asked = decided + pw["unscored"]
    if not asked or decided / asked < g.min_scored_fraction or pw.get("ci95") is None:
        why = f"only {decided} of {asked} comparisons decided"
        out.append(gate("judge_win_rate", NOT_RUN, g.required, why))
    else:
        lo, hi = pw["ci95"]
        ok = lo > g.min_win_rate_lower
        out.append(
            gate(
                "judge_win_rate",
                PASS if ok else FAIL,
                g.required,
                f"adapter win rate {pw['win_rate']:.2f}, 95% interval [{lo:.2f}, {hi:.2f}] "
                f"{'above' if ok else 'not above'} {g.min_win_rate_lower:.2f}",
                win_rate=pw["win_rate"],
                ci95=[lo, hi],
            )
        )
    return out


def general_gates(general: dict | None, g: GeneralGate) -> list[dict]:
    if not general or general.get("skipped") or not general.get("tasks"):
        why = (general or {}).get("skipped") or "no general-ability results"
        return [gate("general", NOT_RUN, g.required, why)]
    out = []
    for task, r in sorted(general["tasks"].items()):
        if r.get("base") is None or r.get("adapter") is None:
            out.append(gate(f"general_{task}", NOT_RUN, g.required, f"{task}: no score"))
            continue
        # Scores are in points (lm-eval's fraction x 100, evals/general.py), as the gate speaks.
        drop = r["base"] - r["adapter"]
        se = r.get("delta_stderr") or 0
        allowed = max(g.max_drop_points, se if math.isfinite(se) else 0)
        ok = drop <= allowed
        out.append(
            gate(
                f"general_{task}",
                PASS if ok else FAIL,
                g.required,
                f"{task} {r.get('metric', '')}: base {r['base']:.1f} -> adapter {r['adapter']:.1f} "
                f"(drop {drop:.1f} points, allowed {allowed:.1f})",
                drop_points=drop,
                allowed_points=allowed,
            )
        )
    return out


def decide(results: dict, gates: Gates | None = None) -> dict:
    """results: {"heldout": {"base_loss", "adapter_loss"} | None, "judge": judge.json | None,
    "general": general.json | None, "n_prompts": int}. Returns verdict.json: every gate, and the overall
    verdict."""
    gates = gates or Gates()
    rows = [
        heldout_gate(results.get("heldout"), gates.heldout_loss),
        *judge_gates(results.get("judge"), gates.judge, results.get("n_prompts", 0)),
        *general_gates(results.get("general"), gates.general),
    ]
    required = [r for r in rows if r["required"]]
    if any(r["status"] == FAIL for r in required):
        overall = FAIL
    elif any(r["status"] == NOT_RUN for r in required):
        overall = "incomplete"
    else:
        overall = PASS
    return {"verdict": overall, "gates": rows, "thresholds": gates.model_dump()}
