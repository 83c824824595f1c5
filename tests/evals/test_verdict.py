"""The verdict's gates on crafted results: pass, fail, not_run, and a gates file with a typo."""

from __future__ import annotations

import pytest

from brightrun.errors import ConfigError
from evals.verdict import decide, load_gates


def judge(base_mean=3.0, adapter_mean=3.5, n=10, wins=8, losses=1, ties=1, unscored=0, ci=(0.6, 0.95)):
    scores = {"base": {"mean": base_mean, "n": n}, "adapter": {"mean": adapter_mean, "n": n}}
    return {
        "criteria": {"on_brand": scores, "emotional_intelligence": scores, "helpful": scores},
        "pairwise": {
            "adapter_wins": wins,
            "base_wins": losses,
            "ties": ties,
            "unscored": unscored,
            "win_rate": (wins + ties / 2) / max(wins + losses + ties, 1),
            "ci95": list(ci) if ci else None,
        },
    }


def general(base=60.0, adapter=59.0, se=1.0):  # points, as evals/general.py reports them
    return {"tasks": {"ifeval_mini": {"metric": "acc", "base": base, "adapter": adapter, "delta_stderr": se}}}


def results(**over):
    out = {
        "heldout": {"base_loss": 2.7, "adapter_loss": 2.4},
        "judge": judge(),
        "general": general(),
        "n_prompts": 10,
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
    }


@pytest.mark.parametrize(
    "over, gate",
    [
        ({"heldout": {"base_loss": 2.4, "adapter_loss": 2.4}}, "heldout_loss"),  # equal is not below
        ({"judge": judge(adapter_mean=2.9)}, "judge_on_brand"),
        ({"judge": judge(ci=(0.45, 0.9))}, "judge_win_rate"),  # interval reaches 50%
        ({"general": general(base=60.0, adapter=55.0, se=1.0)}, "general_ifeval_mini"),  # 5 points
    ],
)
def test_one_failed_gate_fails_the_run(over, gate):
    v = decide(results(**over))
    assert v["verdict"] == "fail" and statuses(v)[gate] == "fail"


def test_a_drop_within_its_stderr_passes():
    # 5 points down on a handful of items whose delta has a 6-point standard error: noise, not a loss.
    v = decide(results(general=general(base=60.0, adapter=55.0, se=6.0)))
    assert statuses(v)["general_ifeval_mini"] == "pass"


def test_missing_inputs_make_the_verdict_incomplete_never_pass():
    v = decide(results(judge={"skipped": "JUDGE_BASE_URL is not set"}, general=None))
    assert v["verdict"] == "incomplete"
    s = statuses(v)
    assert s["judge_on_brand"] == s["judge_win_rate"] == s["general"] == "not_run"
    assert "JUDGE_BASE_URL" in next(g["detail"] for g in v["gates"] if g["gate"] == "judge_on_brand")


def test_a_judge_that_scored_too_little_is_not_run():
    v = decide(results(judge=judge(n=3, wins=2, losses=0, ties=1, unscored=7)))
    s = statuses(v)
    assert s["judge_on_brand"] == "not_run" and s["judge_win_rate"] == "not_run"
    assert v["verdict"] == "incomplete"


def test_a_failure_outranks_a_missing_input():
    v = decide(results(heldout={"base_loss": 2.0, "adapter_loss": 2.5}, judge=None))
    assert v["verdict"] == "fail"


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
