"""The judge path against a real OpenAI-compatible server on 127.0.0.1: `transformers serve` with the repo's
tiny Llama (random weights, 2 layers: the fastest real model here). Its answers are real generations through
real HTTP and are never the JSON asked for, which is the path under test: tokens counted from the server's
usage, every unparseable answer asked again, then counted unscored, and nothing crashes. What a judge that
does answer in JSON yields is tested on the stand-in (test_judge.py); smollm2's parse rate is measured by
bench/judge_smollm2.py."""

from __future__ import annotations

import pytest
from conftest import ROOT, TINY_MODEL_DIR

from evals.judge import JudgeSettings, judge_all
from evals.local_judge import local_judge
from tests.judge_standin import profile_of, sample_prompts

SAMPLE = ROOT / "tests" / "fixtures" / "brightrun-v4-sample.json"


@pytest.fixture(scope="module")
def tiny_judge(assets, tmp_path_factory):
    """`transformers serve` with the tiny Llama on a free loopback port, as `--local-judge` starts it."""
    with local_judge(TINY_MODEL_DIR, tmp_path_factory.mktemp("serve") / "serve.log") as (env, ready):
        ready()
        yield env["JUDGE_BASE_URL"]


def test_real_server_unparseable_answers_are_retried_then_unscored(tiny_judge):
    prompts = sample_prompts(SAMPLE, 1)
    answers = [
        {"id": prompts[0]["id"], "model": "base", "text": "Make a budget."},
        {"id": prompts[0]["id"], "model": "adapter", "text": prompts[0]["reference"]},
    ]
    # 16 new tokens: enough to see what the model says, short enough for a fast test
    settings = JudgeSettings(
        str(tiny_judge), str(TINY_MODEL_DIR), max_tokens=16, parse_retries=1, timeout_s=120
    )
    rows, summary = judge_all(prompts, answers, profile_of(SAMPLE), settings)
    assert summary["judgements"] == len(rows) == 4
    for row in rows:
        assert row["status"] in ("ok", "unparseable")  # a real answer: never an error, never a crash
        assert row["prompt_tokens"] > 300 and row["completion_tokens"] > 0  # the server's own usage
        assert all(a["json_mode"] for a in row["attempts"])  # transformers serve ignores it without a 400
        if row["status"] == "unparseable":
            assert (
                len(row["attempts"]) == 2
                and row["scores" if row["kind"] == "pointwise" else "winner"] is None
            )
    assert any(r["status"] == "unparseable" for r in rows)  # random weights: JSON only by a miracle
    assert summary["unscored"] == sum(r["status"] != "ok" for r in rows)
    assert summary["calls"] == sum(len(r["attempts"]) for r in rows)
    assert summary["prompt_tokens"] == sum(r["prompt_tokens"] for r in rows)
    assert summary["cost_usd"] is None  # no prices set
