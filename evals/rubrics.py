"""Judge prompts built from the training file itself, and the pydantic schemas their answers must pass.

Three criteria, each scored 1-5 with a one-line reason, in one pointwise call per answer:
- on_brand: the file's consultant_profile (name, business, core_philosophy, communication_style);
- emotional_intelligence: the pair's emotional_context (is the named emotion acknowledged before advice,
  is the warmth right for its intensity);
- helpful: helpful and correct against the reference answer (the consultant's own turn).
The pairwise prompt asks which of two answers (A, B) is better on the same three together.

Each prompt ends with one worked example (a user turn and the assistant's exact JSON): a 135M instruct model
copies that shape far more often than it follows a described format, and a large judge loses nothing.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

CRITERIA = ("on_brand", "emotional_intelligence", "helpful")

# Strict: "4", 4.5 or 6 fail validation (a judge that cannot keep to the scale is unscored, not rounded).
Score = Annotated[int, Field(strict=True, ge=1, le=5)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


# The reason comes before the score or winner, in the schemas and the worked examples (issue 27): a judge
# writes in order, so the reason it gives is what the verdict follows from, not a justification after it.
class CriterionScore(BaseModel):
    model_config = ConfigDict(extra="ignore")
    reason: Reason
    score: Score


class PointwiseVerdict(BaseModel):
    # Extra keys are ignored: a judge that adds an "overall" key still gave the three asked for.
    model_config = ConfigDict(extra="ignore")
    on_brand: CriterionScore
    emotional_intelligence: CriterionScore
    helpful: CriterionScore


class PairwiseVerdict(BaseModel):
    model_config = ConfigDict(extra="ignore")
    reason: Reason
    winner: Literal["A", "B", "tie"]


# History kept in the judge prompt: the last few turns and a bounded length each, so that a long conversation
# cannot push the answers being judged out of a small judge's context.
HISTORY_TURNS = 4
HISTORY_CHARS = 600

SYSTEM = (
    "You are a strict, fair evaluator of a financial-planning consultant's chat replies. "
    "You answer with one JSON object and nothing else."
)

EXAMPLE_POINTWISE_USER = (
    'Client: "I keep going in circles about my debt."\n'
    "Client's feeling: overwhelm (strong)\n"
    'Reply to grade: "Just pay the biggest card first."\n'
    "Grade on_brand, emotional_intelligence and helpful from 1 to 5."
)
EXAMPLE_POINTWISE_ANSWER = json.dumps(
    {
        "on_brand": {"reason": "curt, not warm or plain", "score": 2},
        "emotional_intelligence": {"reason": "ignores the overwhelm", "score": 1},
        "helpful": {"reason": "a real step but no why", "score": 3},
    }
)
# Two pairwise examples, balanced (issue 27): the winner is B once and A once, the shorter reply once and
# the longer once, so that copying the examples teaches neither a position nor a length.
EXAMPLE_PAIRWISE = (
    (
        'Client: "I keep going in circles about my debt."\n'
        'Reply A: "Debt is common. Many people carry balances on several cards, and interest adds up over '
        'time, so it is generally wise to look at all of your options before you decide anything."\n'
        'Reply B: "Going in circles is exhausting. Which card worries you most?"\n'
        "Which reply is better?",
        json.dumps({"reason": "B names the feeling and asks one focused question", "winner": "B"}),
    ),
    (
        'Client: "I am scared to even open my statements."\n'
        'Reply A: "That fear makes sense, and you do not have to face it alone. Let us open one statement '
        'together and just read the balance, nothing more."\n'
        'Reply B: "Open your statements and pay the highest rate first."\n'
        "Which reply is better?",
        json.dumps({"reason": "A meets the fear and offers one small shared step", "winner": "A"}),
    ),
)


EXAMPLE_ANSWERS = {
    PointwiseVerdict: (EXAMPLE_POINTWISE_ANSWER,),
    PairwiseVerdict: tuple(answer for _, answer in EXAMPLE_PAIRWISE),
}


def _flatten(value) -> list[str]:
    """The profile's values as short phrases, whatever the nesting: the file's shape is not fixed
    (core_philosophy is a dict of principle_n in the sample, a list or a sentence in other files)."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [phrase for item in value.values() for phrase in _flatten(item)]
    if isinstance(value, list | tuple):
        return [phrase for item in value for phrase in _flatten(item)]
    text = str(value).strip()
    return [text] if text else []


def brand_text(profile: dict) -> str:
    """The on-brand rubric: who the consultant is and how they speak, from the file's consultant_profile."""
    profile = profile or {}
    who = ", ".join(_flatten([profile.get("name"), profile.get("business")])) or "the consultant"
    lines = [f"Sounds like {who}."]
    if beliefs := _flatten(profile.get("core_philosophy")):
        lines.append("Beliefs: " + "; ".join(beliefs) + ".")
    style = profile.get("communication_style")
    if isinstance(style, dict):
        for key, value in style.items():
            if phrases := _flatten(value):
                lines.append(f"{key.replace('_', ' ').capitalize()}: " + "; ".join(phrases) + ".")
    elif phrases := _flatten(style):
        lines.append("Style: " + "; ".join(phrases) + ".")
    return " ".join(lines)


def intensity_word(intensity: float | None) -> str | None:
    """The file's intensity (0-1) in words a judge can act on; thirds, as the file gives no scale."""
    if intensity is None:
        return None
    return "mild" if intensity < 1 / 3 else "moderate" if intensity < 2 / 3 else "strong"


def emotion_of(prompt: dict) -> tuple[str | None, float | None]:
    """(primary emotion, intensity): the sidecar's own fields, else the pair's emotional_context."""
    detected = ((prompt.get("emotional_context") or {}).get("detected_emotions")) or {}
    primary = prompt.get("primary_emotion") or detected.get("primary")
    intensity = prompt.get("intensity")
    if intensity is None:
        intensity = detected.get("intensity")
    return primary, (float(intensity) if intensity is not None else None)


def emotion_text(prompt: dict) -> str:
    """The emotional-intelligence rubric for this pair."""
    primary, intensity = emotion_of(prompt)
    if not primary:
        return (
            "Does the reply notice how the client feels and acknowledge it before any advice, "
            "with a warm tone? 5 = acknowledged first and warmly; 1 = ignored, or advice straight away."
        )
    word = intensity_word(intensity)
    level = f" ({word}, intensity {intensity:.2f} of 1)" if word else ""
    care = {
        "strong": "slow down and validate fully before any advice",
        "moderate": "acknowledge it clearly, then advise gently",
        "mild": "a brief, genuine acknowledgement is enough",
    }.get(word, "acknowledge it warmly")
    return (
        f"The client feels {primary}{level}. Is {primary} (or a clear equivalent) acknowledged before any "
        f"advice, and is the warmth right for that intensity ({care})? "
        f"5 = named first and warmly; 1 = ignored, dismissed, or cold advice straight away."
    )


def _conversation(prompt: dict) -> str:
    """The client's side of the context the answers replied to (the consultant's system prompt is left out:
    the on-brand rubric already says who they are, and it would double a small judge's input)."""
    turns = [m for m in prompt.get("messages", []) if m.get("role") in ("user", "assistant")]
    lines = []
    for message in turns[-HISTORY_TURNS:]:
        who = "Client" if message["role"] == "user" else "Consultant"
        text = message["content"].strip()
        if len(text) > HISTORY_CHARS:
            text = text[:HISTORY_CHARS] + " [...]"
        lines.append(f"{who}: {text}")
    return "\n".join(lines)


def _rubric(prompt: dict, profile: dict) -> str:
    return (
        "Criteria, each scored 1 (poor) to 5 (excellent):\n"
        f"- on_brand: {brand_text(profile)}\n"
        f"- emotional_intelligence: {emotion_text(prompt)}\n"
        "- helpful: Does the reply answer the client correctly and usefully? Compare it with the reference "
        "reply below (the consultant's own): other wording is fine; wrong facts, unsafe or missing advice "
        "are not.\n"
    )


def pointwise_messages(prompt: dict, profile: dict, answer: str) -> list[dict]:
    """Chat messages asking for the three scores of one answer."""
    user = (
        f"Conversation so far:\n{_conversation(prompt)}\n\n"
        f"Reference reply:\n{prompt.get('reference', '').strip()}\n\n"
        f"Reply to grade:\n{answer.strip()}\n\n"
        f"{_rubric(prompt, profile)}\n"
        # In words, not a JSON template: a small model copies a template as is ("score": 1-5, invalid JSON).
        "Answer with one JSON object in the same form as before: the keys on_brand, emotional_intelligence "
        'and helpful, each an object with a one-line "reason" and then an integer "score" from 1 to 5.'
    )
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": EXAMPLE_POINTWISE_USER},
        {"role": "assistant", "content": EXAMPLE_POINTWISE_ANSWER},
        {"role": "user", "content": user},
    ]


def pairwise_messages(prompt: dict, profile: dict, first: str, second: str) -> list[dict]:
    """Chat messages asking which of two answers (A = first, B = second) is better on all three criteria."""
    user = (
        f"Conversation so far:\n{_conversation(prompt)}\n\n"
        f"Reference reply:\n{prompt.get('reference', '').strip()}\n\n"
        f"Reply A:\n{first.strip()}\n\n"
        f"Reply B:\n{second.strip()}\n\n"
        f"{_rubric(prompt, profile)}\n"
        "Which reply is better on these criteria taken together? The order of the replies means nothing. "
        'Answer with one JSON object in the same form as before: "reason" says why in one line, then '
        '"winner" is "A", "B" or "tie".'
    )
    examples = [
        {"role": role, "content": text}
        for user_turn, answer in EXAMPLE_PAIRWISE
        for role, text in (("user", user_turn), ("assistant", answer))
    ]
    return [{"role": "system", "content": SYSTEM}, *examples, {"role": "user", "content": user}]


def first_json_object(text: str) -> dict | None:
    """The first JSON object in a judge's text (code fences and chatter around it are common), or None.

    Lenient on where the object sits; strict validation comes after, with the schemas above. One more
    leniency: an object cut off by max_tokens after its last complete member (a small judge often keeps
    adding keys) is closed at that member; the row records that it was closed."""
    found, _ = _first_object(text)
    return found


def _first_object(text: str) -> tuple[dict | None, bool]:
    decoder = json.JSONDecoder()
    start = text.find("{")
    first = start
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            # An inner object found after an outer one that failed: try closing the outer one first.
            if start != first:
                closed = _close_cut_off(text, first)
                if closed is not None:
                    return closed, True
            return value, False
        start = text.find("{", start + 1)
    if first != -1 and (closed := _close_cut_off(text, first)) is not None:
        return closed, True
    return None, False


def _close_cut_off(text: str, start: int) -> dict | None:
    """The object opened at `start`, closed after its last complete member: `{"a": 1, "b": {..}, "c": "d`
    becomes `{"a": 1, "b": {..}}`. Tried at each `}` and `,` from the end, the longest that decodes wins."""
    text = text[start : start + 20000]  # a judge's answer is short; this bounds the quadratic search
    cuts = sorted(
        {i + 1 for i, ch in enumerate(text) if ch == "}"} | {i for i, ch in enumerate(text) if ch == ","}
    )
    for cut in reversed(cuts):
        try:
            value = json.loads(text[:cut] + "}")
        except json.JSONDecodeError:
            continue
        return value if isinstance(value, dict) else None
    return None


def parse(text: str | None, schema: type[BaseModel]) -> tuple[BaseModel | None, str | None, bool]:
    """(validated verdict or None, why not, closed-after-cut-off)."""
    if not text:
        return None, "empty answer", False
    found, closed = _first_object(text)
    if found is None:
        return None, "no JSON object in the answer", False
    try:
        verdict = schema.model_validate(found)
    except ValueError as error:
        # pydantic's message, first lines only: enough to see which key failed, short enough for a row.
        return None, "schema: " + " | ".join(str(error).splitlines()[:4]), closed
    if any(_reasons(verdict) == _reasons(schema.model_validate_json(x)) for x in EXAMPLE_ANSWERS[schema]):
        # The worked example's own reasons, word for word: copied, not judged (smollm2 did this).
        return None, "the worked example copied, not a judgement", closed
    return verdict, None, closed


def _reasons(verdict: BaseModel) -> list[str]:
    data = verdict.model_dump()
    return [data["reason"]] if "reason" in data else [data[c]["reason"] for c in CRITERIA]
