"""Rubric prompts built from the training file's own profile and emotional labels, and the lenient parse
with strict validation of a judge's answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals import rubrics
from evals.rubrics import PairwiseVerdict, PointwiseVerdict, parse
from tests.judge_standin import profile_of, sample_prompts

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "fixtures" / "brightrun-v4-sample.json"
DEMO = ROOT / "data" / "demo" / "brightrun-demo-cpu.json"


def test_on_brand_rubric_comes_from_the_files_profile():
    text = rubrics.brand_text(profile_of(SAMPLE))
    for phrase in (
        "Elena Morales, CFP",
        "Pathways Financial Planning",
        "Money is emotional before it is mathematical",
        "Clarity reduces fear",
        "warm, plain, steady",
        "acknowledge feelings first",
        "one question at a time",
        "promising returns",
    ):
        assert phrase in text
    assert "Avoidances: jargon without explanation; shame; promising returns." in text
    demo = rubrics.brand_text(profile_of(DEMO))  # the demo's profile has no avoidances
    assert "Small consistent steps" in demo and "Avoidances" not in demo


def test_profile_shapes_other_than_the_samples():
    text = rubrics.brand_text(
        {
            "name": "Sam",
            "core_philosophy": ["Plain talk", "No shame"],
            "communication_style": "gentle and direct",
        }
    )
    assert text == "Sounds like Sam. Beliefs: Plain talk; No shame. Style: gentle and direct."
    assert rubrics.brand_text({}) == "Sounds like the consultant."


def test_emotion_rubric_names_the_pairs_emotion_and_intensity():
    prompt = sample_prompts(SAMPLE, 1)[0]  # overwhelm, intensity 0.38
    text = rubrics.emotion_text(prompt)
    assert "The client feels overwhelm (moderate, intensity 0.38 of 1)" in text
    assert "acknowledged before any advice" in text
    # from the pair's emotional_context when the sidecar's own fields are absent
    bare = {"emotional_context": {"detected_emotions": {"primary": "fear", "intensity": 0.9}}}
    assert "The client feels fear (strong" in rubrics.emotion_text(bare)
    assert "slow down" in rubrics.emotion_text(bare)
    assert "notice how the client feels" in rubrics.emotion_text({})
    assert [rubrics.intensity_word(x) for x in (0.1, 0.34, 0.5, 0.67, None)] == [
        "mild",
        "moderate",
        "moderate",
        "strong",
        None,
    ]


def test_pointwise_and_pairwise_prompts_carry_the_case():
    prompt = sample_prompts(SAMPLE, 2)[1]  # turn 2: has history
    profile = profile_of(SAMPLE)
    messages = rubrics.pointwise_messages(prompt, profile, "MY ANSWER")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    user = messages[-1]["content"]
    assert "MY ANSWER" in user and prompt["reference"].strip() in user and "Elena Morales" in user
    assert prompt["messages"][-1]["content"] in user and "Client:" in user and "Consultant:" in user
    assert prompt["messages"][0]["content"] not in user  # the long system prompt is left out
    pair = rubrics.pairwise_messages(prompt, profile, "FIRST", "SECOND")[-1]["content"]
    assert pair.index("Reply A:\nFIRST") < pair.index("Reply B:\nSECOND")


def test_the_worked_examples_pass_their_own_schemas():
    # a small judge copies the example: it must be a valid answer itself
    assert PointwiseVerdict.model_validate_json(rubrics.EXAMPLE_POINTWISE_ANSWER)
    winners = [PairwiseVerdict.model_validate_json(a).winner for _, a in rubrics.EXAMPLE_PAIRWISE]
    assert winners == ["B", "A"]


def test_the_pairwise_examples_teach_neither_a_position_nor_a_length_and_reason_first():
    """Issue 27: the winner is A once and B once, the shorter reply once and the longer once; every
    worked answer gives its reason before its verdict, as the schemas ask."""
    import re

    lengths = []
    for user, answer in rubrics.EXAMPLE_PAIRWISE:
        a, b = re.findall(r'Reply [AB]: "(.*?)"\n', user)
        winner = json.loads(answer)["winner"]
        lengths.append(len(a if winner == "A" else b) < len(b if winner == "A" else a))
        assert list(json.loads(answer)) == ["reason", "winner"]
    assert sorted(lengths) == [False, True]
    assert list(PairwiseVerdict.model_fields) == ["reason", "winner"]
    assert all(list(v) == ["reason", "score"] for v in json.loads(rubrics.EXAMPLE_POINTWISE_ANSWER).values())
    pair = rubrics.pairwise_messages({"messages": [{"role": "user", "content": "hi"}]}, {}, "X", "Y")
    assert [m["role"] for m in pair] == ["system", "user", "assistant", "user", "assistant", "user"]


def test_long_history_is_bounded():
    long = {"messages": [{"role": "user", "content": "x" * 5000}] * 9}
    text = rubrics.pointwise_messages(long, {}, "a")[-1]["content"]
    assert text.count("Client: ") == rubrics.HISTORY_TURNS and text.count(" [...]") == rubrics.HISTORY_TURNS


VALID = {
    "on_brand": {"score": 4, "reason": "warm"},
    "emotional_intelligence": {"score": 3, "reason": "ok"},
    "helpful": {"score": 5, "reason": "clear"},
}


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(VALID),
        "Sure, here it is:\n```json\n" + json.dumps(VALID) + "\n```\nAnything else?",
        json.dumps({**VALID, "overall": 4}),  # an extra key is ignored
    ],
)
def test_lenient_parse(text):
    verdict, why, closed = parse(text, PointwiseVerdict)
    assert why is None and not closed and verdict.on_brand.score == 4 and verdict.helpful.reason == "clear"


def test_an_object_cut_off_by_max_tokens_is_closed_after_its_last_complete_member():
    # smollm2-135m-instruct's answer to a pointwise prompt, cut at max_tokens while inventing more keys
    text = (
        '{"on_brand": {"score": 1, "reason": "credit card debt"}, "emotional_intelligence": {"score": 2, '
        '"reason": "credit card debt"}, "helpful": {"score": 1, "reason": "credit card debt"}, '
        '"credit_card_debt_rating": {"score": 1, "reason": "credit card debt"}, "credit_card_debt_rate": {"score'
    )
    verdict, why, closed = parse(text, PointwiseVerdict)
    assert closed and why is None and verdict.emotional_intelligence.score == 2
    # smollm2's pairwise answer, looping on invented string keys until max_tokens
    looping = '{"winner": "A", "reason": "B", "winner_reason": "A", "reason_reason": "A", "winner_reason_re'
    verdict, why, closed = parse(looping, PairwiseVerdict)
    assert closed and verdict.winner == "A" and verdict.reason == "B"
    # a reason cut off mid-string leaves no complete reason: rejected
    assert parse('{"winner": "A", "reason": "A says that the client', PairwiseVerdict)[0] is None
    # cut before all three criteria: closed, then rejected by the schema
    verdict, why, closed = parse(text[:60], PointwiseVerdict)
    assert verdict is None and closed and why.startswith("schema:")


@pytest.mark.parametrize(
    "text, why",
    [
        (None, "empty answer"),
        ("", "empty answer"),
        ("The reply is good, 4/5.", "no JSON object"),
        ("[1, 2]", "no JSON object"),
        (json.dumps({**VALID, "helpful": {"score": 6, "reason": "x"}}), "schema:"),
        (
            json.dumps({**VALID, "helpful": {"score": "5", "reason": "x"}}),
            "schema:",
        ),  # strict: no string numbers
        (json.dumps({**VALID, "helpful": {"score": 4.5, "reason": "x"}}), "schema:"),
        (json.dumps({**VALID, "helpful": {"score": 4, "reason": "  "}}), "schema:"),
        (json.dumps({"on_brand": VALID["on_brand"]}), "schema:"),
    ],
)
def test_strict_validation(text, why):
    verdict, reason, _ = parse(text, PointwiseVerdict)
    assert verdict is None and reason.startswith(why)


def test_a_copy_of_the_worked_example_is_not_a_judgement():
    copied = rubrics.EXAMPLE_POINTWISE_ANSWER[:-1] + ', "criteria": {"score": 1, "reason": "x"}}'
    assert parse(copied, PointwiseVerdict)[:2] == (None, "the worked example copied, not a judgement")
    assert all(parse(a, PairwiseVerdict)[0] is None for _, a in rubrics.EXAMPLE_PAIRWISE)
    same_scores = json.loads(rubrics.EXAMPLE_POINTWISE_ANSWER)
    same_scores["helpful"]["reason"] = "its own words"
    assert parse(json.dumps(same_scores), PointwiseVerdict)[0].helpful.score == 3


def test_pairwise_schema():
    assert parse('{"winner": "tie", "reason": "same"}', PairwiseVerdict)[0].winner == "tie"
    for bad in ('{"winner": "a", "reason": "x"}', '{"winner": "Answer A", "reason": "x"}', '{"winner": "B"}'):
        assert parse(bad, PairwiseVerdict)[0] is None
