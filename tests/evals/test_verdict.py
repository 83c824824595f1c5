"""The verdict's gates on crafted judgements, built into judge.json by the judge's own summary code
(evals/judge.py) and into general.json's paired items as evals/general.py writes them: pass, fail,
inconclusive, insufficient, not_run, judge_unreliable, and a gates file with a typo (issue 27's cases)."""

from __future__ import annotations

import pytest

from brightrun.errors import ConfigError
from evals import stats
from evals.judge import JudgeSettings
from evals.summary import summarize
from evals.verdict import decide, load_gates

SETTINGS = JudgeSettings(base_url="http://127.0.0.1:1/v1", model="crafted")
CRITERIA = ("on_brand", "emotional_intelligence", "helpful")


def row(kind: str, pid: str, conv: str, **kw) -> dict:
    return (
        {"kind": kind, "id": pid, "conversation": conv, "status": "ok", "attempts": [{}]}
        | kw
        | {
            "prompt_tokens": 0,
            "completion_tokens": 0,
        }
    )


def judged(
    conversations=12, turns=2, base=3, adapter=4, winners=("adapter", "adapter"), unscored=(), agrees=True
):
    """judge.json for `conversations` × `turns` prompts: every pointwise score `base`/`adapter`, each
    prompt's two orders won by `winners` (first: order base-then-adapter); `unscored`: (prompt, order) left
    without a winner; each reference reply graded as its quality_score ranks it (`agrees`) or the reverse."""
    rows = []
    for c in range(conversations):
        for t in range(turns):
            pid, conv = f"c{c}t{t}", f"conv-{c}"
            for model, score in (("base", base), ("adapter", adapter)):
                scores = {k: {"score": score, "reason": "r"} for k in CRITERIA}
                rows.append(row("pointwise", pid, conv, model=model, scores=scores))
            quality = 2 + (c + t) % 4
            graded = quality if agrees else 7 - quality
            scores = {k: {"score": graded, "reason": "r"} for k in CRITERIA}
            rows.append(row("pointwise", pid, conv, model="reference", scores=scores, quality_score=quality))
            for k, order in enumerate((["base", "adapter"], ["adapter", "base"])):
                won = None if (pid, k) in unscored else winners[k]
                letter = {order[0]: "A", order[1]: "B", "tie": "tie"}.get(won)
                status = "ok" if won else "unparseable"
                rows.append(
                    row("pairwise", pid, conv, order=order, winner=letter, winner_model=won, status=status)
                )
    return summarize(rows, SETTINGS, 0.0), conversations * turns


def general(base=60.0, adapter=60.0, items=25, changed=0):
    """general.json's task with paired items: every item scored `base` by the base model; the adapter the
    same except `changed` items (points: 100 or 0 per item, as IFEval's prompt-level accuracy)."""
    per_item = [{"doc_id": i, "base": 100.0 if i < base / 100 * items else 0.0} for i in range(items)]
    flips = 0
    for item in per_item:
        item["adapter"] = item["base"]
        if flips < changed and item["base"] == 100.0:
            item["adapter"], flips = 0.0, flips + 1
    diffs = [(p["doc_id"], p["adapter"] - p["base"]) for p in per_item]
    mean = lambda key: sum(p[key] for p in per_item) / items  # noqa: E731
    task = {
        "metric": "acc",
        "base": mean("base"),
        "adapter": mean("adapter"),
        "paired": stats.interval(diffs),
    }
    return {"tasks": {"ifeval_mini": task}}


def results(judge=None, n_prompts=None, **over):
    judge_json, n = judged() if judge is None else judge
    out = {
        "heldout": {"base_loss": 2.7, "adapter_loss": 2.4},
        "judge": judge_json,
        "general": general(),
        "n_prompts": n if n_prompts is None else n_prompts,
    }
    return out | over


def statuses(verdict):
    return {g["gate"]: g["status"] for g in verdict["gates"]}


def test_a_run_that_clears_every_gate_passes():
    v = decide(results())
    assert v["verdict"] == "pass"
    assert set(statuses(v).values()) == {"pass"}
    assert set(statuses(v)) == {
        "heldout_loss",
        "judge_on_brand",
        "judge_emotional_intelligence",
        "judge_win_rate",
        "general_ifeval_mini",
        "judge_consistency",
        "judge_position_bias",
        "judge_agreement",
    }


def test_one_prompt_won_is_insufficient_not_a_pass():
    """The issue's case: two prompts, one an adapter win in both orders, the other with its second order
    unparseable and its first picking the base. Before: win rate 1.0 [1.0, 1.0], pass. Now both orders
    count (one base win, three adapter wins) and one conversation is far from the 10 needed."""
    judge = judged(conversations=1, turns=2, winners=("adapter", "adapter"), unscored={("c0t1", 1)})
    rows_by_hand = judge[0]["pairwise"]
    assert rows_by_hand["one_order"] == 1 and rows_by_hand["n"] == 3
    v = decide(results(judge=judge))
    assert statuses(v)["judge_win_rate"] == "insufficient" and v["verdict"] == "insufficient"
    detail = next(g["detail"] for g in v["gates"] if g["gate"] == "judge_win_rate")
    assert "1 held-out conversation(s) scored; at least 10 needed" in detail
    assert "1 prompt(s) with one order unscored" in detail


def test_many_turns_of_few_conversations_are_insufficient():
    v = decide(results(judge=judged(conversations=3, turns=14)))  # 42 prompts, 3 conversations
    s = statuses(v)
    assert s["judge_on_brand"] == s["judge_win_rate"] == "insufficient" and v["verdict"] == "insufficient"


def test_a_judge_that_gives_everything_a_3_decides_nothing():
    v = decide(results(judge=judged(base=3, adapter=3, winners=("tie", "tie"))))
    s = statuses(v)
    assert s["judge_on_brand"] == "inconclusive"  # difference 0: not above the bar, not below it
    assert s["judge_win_rate"] == "inconclusive"  # 0.5, [0.5, 0.5]: on the bar, not above it
    assert v["verdict"] == "inconclusive"  # before: both criteria passed (3 >= 3)


@pytest.mark.parametrize(
    "over, gate",
    [
        ({"heldout": {"base_loss": 2.4, "adapter_loss": 2.4}}, "heldout_loss"),  # equal is not below
        ({"judge": judged(base=4, adapter=3, winners=("base", "base"))}, "judge_on_brand"),
        ({"general": general(base=60.0, items=40, changed=12)}, "general_ifeval_mini"),  # 30 points
    ],
)
def test_one_failed_gate_fails_the_run(over, gate):
    v = decide(results(**over))
    assert v["verdict"] == "fail" and statuses(v)[gate] == "fail"


def test_forgetting_is_non_inferiority_on_paired_items():
    # The case: base 68% -> adapter 56% on 25 IFEval prompts (3 flipped) passed before.
    v = decide(results(general=general(base=68.0, items=25, changed=3)))
    assert statuses(v)["general_ifeval_mini"] in ("inconclusive", "fail")
    assert v["verdict"] != "pass"
    # The demo's case: 2 items, 100 -> 50: too few items to say anything.
    v = decide(results(general=general(base=100.0, items=2, changed=1)))
    assert statuses(v)["general_ifeval_mini"] == "insufficient"
    # No drop on 25 items: the interval is [0, 0], above -2 points.
    assert statuses(decide(results()))["general_ifeval_mini"] == "pass"


def test_a_judge_that_always_picks_the_first_reply_is_unreliable_not_a_fail():
    # The adapter wins when shown first, the base when it is shown first: a coin decided by position.
    v = decide(results(judge=judged(winners=("base", "adapter"))))
    s = statuses(v)
    assert s["judge_consistency"] == s["judge_position_bias"] == "judge_unreliable"
    assert v["verdict"] == "judge_unreliable"
    # ...but a held-out loss that got worse is a fail whatever the judge is worth.
    v = decide(
        results(judge=judged(winners=("base", "adapter")), heldout={"base_loss": 2, "adapter_loss": 3})
    )
    assert v["verdict"] == "fail"


def test_a_judge_that_ranks_the_files_own_references_backwards_is_unreliable():
    """Issue 27, item 3: the judge grades each reference reply too; ranking them the reverse of their
    quality_score (Kendall tau -1, its interval wholly below 0) makes the verdict judge_unreliable."""
    v = decide(results(judge=judged(agrees=False)))
    agreement = next(g for g in v["gates"] if g["gate"] == "judge_agreement")
    assert agreement["status"] == "judge_unreliable" and agreement["tau"] == -1.0
    assert "between its grades of 24 reference replies and their quality_score" in agreement["detail"]
    assert v["verdict"] == "judge_unreliable"
    assert statuses(decide(results()))["judge_agreement"] == "pass"


def test_missing_inputs_make_the_verdict_incomplete_never_pass():
    v = decide(results(judge=({"skipped": "JUDGE_BASE_URL is not set"}, 24), general=None))
    assert v["verdict"] == "incomplete"
    s = statuses(v)
    assert s["judge_on_brand"] == s["judge_win_rate"] == s["general"] == "not_run"
    assert "JUDGE_BASE_URL" in next(g["detail"] for g in v["gates"] if g["gate"] == "judge_on_brand")


def test_the_demos_two_prompts_are_insufficient_whatever_the_judge_did():
    """The demo (issue 27): 2 prompts from 1 held-out conversation and a 135M judge that scored nothing.
    No judge could make that sample a verdict: `insufficient`, saying so, not `incomplete`; with enough
    conversations the same judge's silence is `not_run` again."""
    silent = {(f"c0t{t}", k) for t in range(2) for k in (0, 1)}
    judge = judged(conversations=1, turns=2, unscored=silent)
    v = decide(results(judge=judge, n_conversations=1))
    s = statuses(v)
    assert s["judge_on_brand"] == s["judge_win_rate"] == "insufficient" and v["verdict"] == "insufficient"
    detail = next(g["detail"] for g in v["gates"] if g["gate"] == "judge_win_rate")
    assert detail.startswith("the evaluation asked 2 prompt(s) from 1 held-out conversation(s); at least 10")
    assert "only 0 of 4 judgements" in detail  # what the judge did, still said
    skipped = decide(results(judge=({"skipped": "JUDGE_BASE_URL is not set"}, 2), n_conversations=1))
    assert skipped["verdict"] == "insufficient"
    assert decide(results(judge=judge, n_conversations=12))["verdict"] == "incomplete"


def against_production(ci95, conversations=12, win_rate=None):
    """ab.json as versions/ab.py writes it: production (A) against this run (B)."""
    win_rate = sum(ci95) / 2 if win_rate is None else win_rate
    return {"id": "20261207-ab0001", "a": {"ref": "em@v3"}, "b": {"ref": "run-x"}, "win_rate": win_rate,
            "ci95": ci95, "pairwise": {"n": 72, "n_conversations": conversations}, "judge": {"model": "j"}}  # fmt: skip


@pytest.mark.parametrize(
    "ab, status, verdict",
    [
        (against_production([0.30, 0.45]), "fail", "fail"),  # lost: its interval wholly below 0.5
        (against_production([0.42, 0.58]), "pass", "pass"),  # not lost: a tie is not a loss
        (against_production([0.55, 0.70]), "pass", "pass"),
        (against_production([0.30, 0.45], conversations=3), "insufficient", "insufficient"),
        ({**against_production([0.4, 0.5]), "win_rate": None, "ci95": None}, "not_run", "incomplete"),
    ],
)
def test_an_evaluation_against_production_must_not_lose(ab, status, verdict):
    v = decide(results(ab=ab))
    assert statuses(v)["vs_production"] == status and v["verdict"] == verdict
    assert "against em@v3" in next(g["detail"] for g in v["gates"] if g["gate"] == "vs_production")
    assert "vs_production" not in statuses(decide(results()))  # not asked: no gate


def test_a_lost_ab_judged_by_an_unreliable_judge_is_judge_unreliable_not_fail():
    """The A/B against production is the judge's measurement too: a judge that ranks the file's own
    references backwards cannot fail the run through it."""
    v = decide(results(judge=judged(agrees=False), ab=against_production([0.30, 0.45])))
    assert statuses(v)["vs_production"] == "fail" and v["verdict"] == "judge_unreliable"


def test_a_judge_that_scored_too_little_is_not_run():
    unscored = {(f"c{c}t{t}", k) for c in range(12) for t in range(2) for k in (0, 1) if c >= 3}
    v = decide(results(judge=judged(unscored=unscored)))
    assert statuses(v)["judge_win_rate"] == "not_run" and v["verdict"] == "incomplete"


def test_an_optional_gate_does_not_hold_the_verdict(tmp_path):
    f = tmp_path / "gates.yaml"
    f.write_text("general:\n  required: false\n")
    v = decide(results(general=None), load_gates(f))
    assert v["verdict"] == "pass" and statuses(v)["general"] == "not_run"


@pytest.mark.parametrize(
    "text, message",
    [
        ("judge:\n  min_win_rate_lowr: 0.6\n", "judge.min_win_rate_lowr: Extra inputs are not permitted"),
        (
            "general:\n  max_drop_points: -1\n",
            "general.max_drop_points: Input should be greater than or equal to 0",
        ),
        (
            "judge:\n  min_conversations: 0\n",
            "judge.min_conversations: Input should be greater than or equal to 1",
        ),
        ("judge: [\n", "not valid YAML"),
    ],
)
def test_a_bad_gates_file_is_named_with_its_key(tmp_path, text, message):
    f = tmp_path / "gates.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_gates(f)
    assert str(f) in str(err.value) and message in str(err.value)


def test_the_shipped_gates_are_the_defaults():
    assert load_gates().model_dump() == decide(results())["thresholds"]


def test_an_ab_against_production_that_fails_leaves_the_evaluation_and_says_why(monkeypatch):
    """--against runs last, after hours of answers, judging and lm-eval on a 70B: an A/B that fails (the
    store, the GPU's memory) becomes a not_run vs_production gate with the reason; nothing else is lost."""
    from evals import run
    from versions import ab

    def fails(*args, **kw):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(ab, "run_ab", fails)
    monkeypatch.setattr(run, "_registry", lambda: None)
    opts = run.Options(against="em@v3")
    got = run.against_production("run-x", "runs", opts, settings=object(), quant={"mode": "none"})
    v = decide(results(ab=got))
    gate = next(g for g in v["gates"] if g["gate"] == "vs_production")
    assert (
        gate["status"] == "not_run"
        and "CUDA out of memory" in gate["detail"]
        and v["verdict"] == "incomplete"
    )
