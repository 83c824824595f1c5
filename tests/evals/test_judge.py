"""The judge client against the loopback stand-in (tests/judge_standin.py): aggregation on known scores,
the position swap, and what a real server will not do on demand (malformed or refused answers, 429, 500s,
timeouts, a 400 to response_format). Each test is a real HTTP exchange through the openai client."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from brightrun.errors import ConfigError
from evals.judge import NUDGE, JudgeSettings, judge_all
from tests.judge_standin import StandIn, profile_of, sample_prompts

SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "brightrun-v4-sample.json"
PROFILE = profile_of(SAMPLE)


def answers_for(
    prompts, base: str = "[[score=3]] Let us look at it.", adapter: str = "[[score=5]] That sounds hard."
):
    return [
        {"id": p["id"], "model": m, "text": t, "new_tokens": len(t.split())}
        for p in prompts
        for m, t in (("base", base), ("adapter", adapter))
    ]


def settings(standin: StandIn, **kw) -> JudgeSettings:
    # Small timeouts and retries keep each test around a second; the defaults are for a real judge.
    return JudgeSettings(base_url=standin.url, model="stand-in", **{"timeout_s": 5, "max_retries": 2, **kw})


def test_scores_aggregate_per_criterion_and_pairwise_wins():
    prompts = sample_prompts(SAMPLE, 3)
    with StandIn("scores") as standin:
        rows, summary = judge_all(
            prompts,
            answers_for(prompts),
            PROFILE,
            settings(standin, price_per_mtok_in=1.0, price_per_mtok_out=2.0),
        )
    assert len(rows) == 12 and summary["judgements"] == 12 and summary["calls"] == 12
    assert summary["unscored"] == 0 and summary["statuses"] == {"ok": 12}
    conversations = len({p["conversation_id"] for p in prompts})
    for criterion in ("on_brand", "emotional_intelligence", "helpful"):
        # Each prompt's difference adapter − base, resampled by held-out conversation (all +2 here).
        difference = {"mean": 2.0, "ci95": [2.0, 2.0], "n": 3, "n_clusters": conversations}
        assert summary["criteria"][criterion] == {
            "base": {"mean": 3.0, "n": 3},
            "adapter": {"mean": 5.0, "n": 3},
            "difference": difference,
        }
    pairwise = summary["pairwise"]
    # Each order is one judgement: 3 prompts, 6 adapter wins.
    counts = (pairwise["adapter_wins"], pairwise["base_wins"], pairwise["ties"], pairwise["unscored"])
    assert counts == (6, 0, 0, 0) and pairwise["n_conversations"] == conversations
    assert pairwise["win_rate"] == 1.0 and pairwise["ci95"] == [1.0, 1.0]
    assert pairwise["position_consistency"] == 1.0 and pairwise["first_position_rate"] == 0.5
    # The answers' lengths go with each pairwise row; the adapter always the longer, length cannot be
    # told from quality and the length-controlled win rate stays near the raw one.
    assert {tuple(r["new_tokens"].values()) for r in rows if r["kind"] == "pairwise"} == {(6, 4)}
    assert pairwise["length_controlled"]["win_rate"] > 0.9
    assert {r["conversation"] for r in rows} == {p["conversation_id"] for p in prompts}
    # tokens and cost are kept per row and summed
    assert summary["prompt_tokens"] == sum(r["prompt_tokens"] for r in rows) > 0
    assert summary["completion_tokens"] == sum(r["completion_tokens"] for r in rows) > 0
    expected = (summary["prompt_tokens"] * 1.0 + summary["completion_tokens"] * 2.0) / 1e6
    assert summary["cost_usd"] == pytest.approx(expected, abs=1e-6)
    assert summary["judge"] == {"base_url": standin.url, "model": "stand-in"}
    # each row keeps its judge prompt and the raw answer
    pointwise = next(r for r in rows if r["kind"] == "pointwise" and r["model"] == "adapter")
    assert "That sounds hard." in pointwise["messages"][-1]["content"]
    assert json.loads(pointwise["raw"])["helpful"]["score"] == 5
    assert pointwise["scores"]["helpful"] == {"score": 5, "reason": "stand-in"}
    orders = sorted(
        tuple(r["order"]) for r in rows if r["kind"] == "pairwise" and r["id"] == prompts[0]["id"]
    )
    assert orders == [("adapter", "base"), ("base", "adapter")]


def test_a_judge_that_always_prefers_the_first_answer_is_caught_by_its_own_checks():
    """Each order counts as a judgement, so the swap gives the adapter one win and one loss per prompt
    (a win rate of 0.5, not a pass); the judge's checks show why: it never agrees with itself across the
    swap, and the first reply always wins (evals/verdict.py makes that judge_unreliable)."""
    prompts = sample_prompts(SAMPLE, 4)
    with StandIn("first") as standin:
        rows, summary = judge_all(prompts, answers_for(prompts), PROFILE, settings(standin))
    pairwise = summary["pairwise"]
    assert all(r["winner"] == "A" for r in rows if r["kind"] == "pairwise")
    assert (pairwise["adapter_wins"], pairwise["base_wins"], pairwise["ties"]) == (4, 4, 0)
    assert pairwise["win_rate"] == 0.5
    assert pairwise["position_consistency"] == 0.0 and pairwise["position_consistency_n"] == 4
    assert pairwise["first_position_rate"] == 1.0 and pairwise["first_position_n"] == 8


@pytest.mark.parametrize(
    "mode, status, why",
    [
        ("malformed", "unparseable", "no JSON object"),
        ("bad_schema", "unparseable", "schema:"),
        ("refusal", "refused", "refusal"),
    ],
)
def test_malformed_or_refused_answers_are_retried_then_unscored(mode, status, why):
    prompts = sample_prompts(SAMPLE, 2)
    with StandIn(mode) as standin:
        rows, summary = judge_all(prompts, answers_for(prompts), PROFILE, settings(standin, parse_retries=2))
    assert {r["status"] for r in rows} == {status}
    assert all(len(r["attempts"]) == 3 and why in r["attempts"][0]["why"] for r in rows)
    assert summary["calls"] == 24 and summary["unscored"] == 8 and summary["statuses"] == {status: 8}
    assert summary["criteria"]["on_brand"]["adapter"] == {"mean": None, "n": 0}
    assert summary["pairwise"]["unscored"] == 4 and summary["pairwise"]["win_rate"] is None
    # the retry tells the judge what was wrong (a greedy judge would repeat itself on the same prompt)
    nudge = NUDGE.split("{")[0]
    retried = [
        req["body"]["messages"] for req in standin.requests if nudge in req["body"]["messages"][-1]["content"]
    ]
    # system, the worked example(s) (pointwise one, pairwise two: balanced in position), the nudged ask
    assert len(retried) == 16
    assert all(len(m) == (6 if '"winner"' in m[-1]["content"] else 4) for m in retried)
    assert why in retried[0][-1]["content"]
    assert all(r["scores"] is None for r in rows if r["kind"] == "pointwise")


def test_json_in_prose_and_a_code_fence_is_found():
    prompts = sample_prompts(SAMPLE, 1)
    with StandIn("chatty") as standin:
        rows, summary = judge_all(prompts, answers_for(prompts), PROFILE, settings(standin))
    assert summary["unscored"] == 0 and summary["criteria"]["helpful"]["adapter"]["mean"] == 5.0


def test_429_with_retry_after_is_waited_out_by_the_client():
    prompts = sample_prompts(SAMPLE, 1)
    with StandIn("rate_limit", fail_times=2, retry_after="0.3") as standin:
        started = time.monotonic()
        rows, summary = judge_all(prompts, answers_for(prompts), PROFILE, settings(standin), pairwise=False)
        elapsed = time.monotonic() - started
    assert summary["unscored"] == 0 and summary["calls"] == 2 and summary["transport_retries"] == 4
    assert [req["status"] for req in standin.requests].count(429) == 4
    assert elapsed >= 0.6  # two waits of the server's Retry-After, not the client's shorter default backoff


def test_500_is_retried_and_a_server_that_keeps_failing_leaves_rows_unscored():
    prompts = sample_prompts(SAMPLE, 1)
    with StandIn("server_error", fail_times=1) as standin:
        _, summary = judge_all(prompts, answers_for(prompts), PROFILE, settings(standin), pairwise=False)
    assert summary["unscored"] == 0 and summary["transport_retries"] == 2
    with StandIn("server_error", fail_times=100) as standin:
        rows, summary = judge_all(prompts, answers_for(prompts), PROFILE, settings(standin, max_retries=1))
    assert summary["statuses"] == {"error": 4} and summary["unscored"] == 4
    # a transport failure is not asked again on top of the client's own retries
    assert all(len(r["attempts"]) == 1 and "InternalServerError" in r["attempts"][0]["error"] for r in rows)
    assert len(standin.requests) == 8


def test_a_timeout_is_retried_then_unscored():
    prompts = sample_prompts(SAMPLE, 1)
    with StandIn("slow", fail_times=1, delay=1.5) as standin:
        _, summary = judge_all(
            prompts, answers_for(prompts), PROFILE, settings(standin, timeout_s=0.4), pairwise=False
        )
    assert summary["unscored"] == 0 and summary["transport_retries"] == 2
    with StandIn("slow", fail_times=100, delay=1.5) as standin:
        rows, summary = judge_all(
            prompts,
            answers_for(prompts),
            PROFILE,
            settings(standin, timeout_s=0.4, max_retries=1),
            pairwise=False,
        )
    assert summary["statuses"] == {"error": 2}
    assert all("APITimeoutError" in r["attempts"][0]["error"] for r in rows)


def test_the_answers_schema_is_asked_for_then_a_json_object_then_nothing_as_the_server_allows():
    """Structured output first (issue 27): response_format with the answer's JSON schema; a server that
    answers 400 to it is asked for any JSON object, one that refuses that too for nothing, each refused
    format dropped for the rest of the run; the parser reads what comes back either way."""
    prompts = sample_prompts(SAMPLE, 2)
    with StandIn("scores") as standin:
        rows, _ = judge_all(prompts, answers_for(prompts), PROFILE, settings(standin, concurrency=1))
    sent = [req["body"].get("response_format") for req in standin.requests]
    assert {f["type"] for f in sent} == {"json_schema"} and len(sent) == 8
    pairwise = next(f for f in sent if f["json_schema"]["name"] == "PairwiseVerdict")
    assert list(pairwise["json_schema"]["schema"]["properties"]) == ["reason", "winner"]
    assert {a["response_format"] for r in rows for a in r["attempts"]} == {"json_schema"}

    for mode, formats in (("no_json_schema", ["json_schema", "json_object"]), ("no_json_mode", None)):
        with StandIn(mode) as standin:
            rows, summary = judge_all(
                prompts, answers_for(prompts), PROFILE, settings(standin, concurrency=1)
            )
        assert summary["unscored"] == 0
        sent = [
            ((req["body"].get("response_format") or {}).get("type"), req["status"])
            for req in standin.requests
        ]
        if formats:  # the schema refused once, then a JSON object for the rest
            assert sent[:2] == [("json_schema", 400), ("json_object", 200)]
            assert all(s == ("json_object", 200) for s in sent[2:]) and len(sent) == 9
        else:  # both refused once, then nothing for the rest
            assert sent[:3] == [("json_schema", 400), ("json_object", 400), (None, 200)]
            assert all(s == (None, 200) for s in sent[3:]) and len(sent) == 10
        refused = [
            a["response_format_refused"]
            for r in rows
            for a in r["attempts"]
            if "response_format_refused" in a
        ]
        assert len(refused) == 1 and "is not supported" in refused[0]["json_schema"]
        assert ("json_object" in refused[0]) == (mode == "no_json_mode")


def test_a_marker_in_the_prompt_picks_the_behaviour_per_prompt():
    prompts = sample_prompts(SAMPLE, 2)
    answers = answers_for(prompts)
    answers[0]["text"] += " [[mode=malformed]]"  # the first prompt's base answer
    with StandIn("scores") as standin:
        rows, summary = judge_all(prompts, answers, PROFILE, settings(standin, parse_retries=0))
    bad = {(r["kind"], r["id"], r.get("model")) for r in rows if r["status"] != "ok"}
    first = prompts[0]["id"]
    assert bad == {("pointwise", first, "base"), ("pairwise", first, None)}
    # Both orders of the first prompt unscored, the second prompt's two orders counted.
    assert summary["unscored"] == 3 and summary["pairwise"]["n"] == 2


def test_a_refused_key_or_model_is_a_config_error_without_the_key():
    prompts = sample_prompts(SAMPLE, 1)
    with StandIn("unauthorized") as standin:
        with pytest.raises(ConfigError, match="JUDGE_API_KEY") as raised:
            judge_all(prompts, answers_for(prompts), PROFILE, settings(standin, api_key="sk-secret-123"))
    assert "sk-secret-123" not in str(raised.value)


def test_missing_answer_is_a_config_error():
    prompts = sample_prompts(SAMPLE, 1)
    with pytest.raises(ConfigError, match=f"no adapter answer for prompt {prompts[0]['id']}"):
        judge_all(prompts, answers_for(prompts)[:1], PROFILE, JudgeSettings("http://127.0.0.1:9/v1", "m"))


def test_the_api_key_is_sent_but_in_no_file_or_returned_dict(tmp_path, monkeypatch):
    secret = "sk-judge-SECRET-4242"
    prompts = sample_prompts(SAMPLE, 1)
    for mode in ("scores", "server_error"):
        with StandIn(mode, fail_times=100) as standin:
            env = {
                "JUDGE_BASE_URL": standin.url,
                "JUDGE_MODEL": "stand-in",
                "JUDGE_API_KEY": secret,
                "JUDGE_MAX_RETRIES": "0",
            }
            judge_settings = JudgeSettings.from_env(env)
            rows, summary = judge_all(prompts, answers_for(prompts), PROFILE, judge_settings)
        assert all(req["headers"]["authorization"] == f"Bearer {secret}" for req in standin.requests)
        out = tmp_path / f"{mode}.jsonl"
        out.write_text("".join(json.dumps(r) + "\n" for r in rows) + json.dumps(summary))
        assert secret not in out.read_text() and secret not in repr(judge_settings)
    # without JUDGE_API_KEY, OpenAI's own key from the environment is not sent to another server
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-not-for-judges")
    with StandIn("scores") as standin:
        judge_all(prompts, answers_for(prompts), PROFILE, settings(standin), pairwise=False)
    assert {req["headers"]["authorization"] for req in standin.requests} == {"Bearer EMPTY"}


def test_settings_from_env():
    assert JudgeSettings.from_env({}) is None
    with pytest.raises(ConfigError, match="JUDGE_MODEL"):
        JudgeSettings.from_env({"JUDGE_BASE_URL": "http://x/v1"})
    with pytest.raises(ConfigError, match="JUDGE_CONCURRENCY='many' is not a int"):
        JudgeSettings.from_env(
            {"JUDGE_BASE_URL": "http://x/v1", "JUDGE_MODEL": "m", "JUDGE_CONCURRENCY": "many"}
        )
    with pytest.raises(ConfigError, match="JUDGE_CONCURRENCY='0' is out of range"):
        JudgeSettings.from_env(
            {"JUDGE_BASE_URL": "http://x/v1", "JUDGE_MODEL": "m", "JUDGE_CONCURRENCY": "0"}
        )
    s = JudgeSettings.from_env(
        {
            "JUDGE_BASE_URL": "https://user:pw@api.example.com/v1?key=k",
            "JUDGE_MODEL": "m",
            "JUDGE_PRICE_IN": "0.5",
            "JUDGE_PRICE_OUT": "1.5",
            "JUDGE_CONCURRENCY": "8",
        }
    )
    assert (s.concurrency, s.price_per_mtok_in, s.price_per_mtok_out, s.api_key) == (8, 0.5, 1.5, None)
    assert s.public() == {"base_url": "https://api.example.com/v1", "model": "m"}
    assert s.cost(1_000_000, 1_000_000) == 2.0
    assert JudgeSettings("http://x/v1", "m").cost(10, 10) is None
