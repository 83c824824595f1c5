"""The brightrun-lora-v4 shape as pydantic models (see docs/brightrun-v4.md).

Pydantic does the walking and collects every problem with its path; we only turn its errors into
one readable line each (`conversations[3].training_pairs[2].current_user_input: missing, expected a
string`). Strict mode: a file written by hand with `"turn_number": "3"` is an error, not a guess.
Unknown extra keys are allowed: generators add fields, and the contract does not depend on them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class Message(_Model):
    role: Literal["user", "assistant"]
    content: str


class TrainingMetadata(_Model):
    quality_score: int | float = Field(ge=1, le=5)


class TrainingPair(_Model):
    id: str
    turn_number: int = Field(ge=1)
    system_prompt: str
    conversation_history: list[Message]
    current_user_input: str
    emotional_context: dict[str, Any]
    target_response: str | None
    training_metadata: TrainingMetadata


class Scaffolding(_Model):
    persona_key: str
    emotional_arc_key: str
    training_topic_key: str


class ConversationMetadata(_Model):
    conversation_id: str
    total_turns: int
    scaffolding: Scaffolding


class Conversation(_Model):
    conversation_metadata: ConversationMetadata
    training_pairs: list[TrainingPair]


class FileMetadata(_Model):
    format_spec: Literal["brightrun-lora-v4"]
    version: str
    total_conversations: int
    total_training_pairs: int


class BrightRunFile(_Model):
    training_file_metadata: FileMetadata
    consultant_profile: dict[str, Any]
    conversations: list[Conversation]


# What a reader should be told was expected, by pydantic error type.
_EXPECTED = {
    "missing": "missing",
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "float_type": "expected a number",
    "list_type": "expected a list",
    "dict_type": "expected an object",
    "model_type": "expected an object",
    "model_attributes_type": "expected an object",
    "bool_type": "expected true or false",
}

# What each field holds, so that "missing" can say what should be there.
_FIELD_TYPE = {
    "id": "a string",
    "system_prompt": "a string",
    "current_user_input": "a string",
    "content": "a string",
    "conversation_id": "a string",
    "persona_key": "a string",
    "emotional_arc_key": "a string",
    "training_topic_key": "a string",
    "version": "a string",
    "target_response": "a string or null",
    "turn_number": "an integer",
    "total_turns": "an integer",
    "total_conversations": "an integer",
    "total_training_pairs": "an integer",
    "quality_score": "a number from 1 to 5",
    "role": '"user" or "assistant"',
    "format_spec": '"brightrun-lora-v4"',
    "conversation_history": "a list of messages",
    "training_file_metadata": "an object",
    "consultant_profile": "an object",
    "conversation_metadata": "an object",
    "scaffolding": "an object",
    "emotional_context": "an object",
    "training_metadata": "an object",
    "training_pairs": "a list of training pairs",
    "conversations": "a list of conversations",
}


def format_path(loc: tuple) -> str:
    """('conversations', 3, 'training_pairs', 2, 'id') -> conversations[3].training_pairs[2].id"""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "none", "int", "float"):  # union branch names pydantic adds
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _describe(err: dict) -> str:
    kind = err["type"]
    field = next((p for p in reversed(err["loc"]) if isinstance(p, str)), "")
    if kind == "missing":
        return f"missing, expected {_FIELD_TYPE.get(field, 'a value')}"
    got = _type_name(err.get("input"))
    if kind == "literal_error":
        return f"got {err.get('input')!r}, expected {_FIELD_TYPE.get(field, err['msg'])}"
    if kind in ("greater_than_equal", "less_than_equal"):
        return f"got {err.get('input')!r}, expected {_FIELD_TYPE.get(field, err['msg'].lower())}"
    if kind in _EXPECTED:
        want = _FIELD_TYPE.get(field) or _EXPECTED[kind].removeprefix("expected ")
        return f"got {got}, expected {want}"
    return f"{err['msg']} (got {got})"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    names = {
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "an object",
    }
    text = names.get(type(value), type(value).__name__)
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        shown = repr(value)
        text += f" {shown if len(shown) <= 40 else shown[:37] + '...'}"
    return text


def validate(data: Any) -> tuple[BrightRunFile | None, list[str]]:
    """Return the parsed file or the list of problems, each 'path: what is wrong'."""
    try:
        return BrightRunFile.model_validate(data), []
    except ValidationError as exc:
        problems = []
        seen = set()
        for err in exc.errors(include_url=False):
            path = format_path(err["loc"]) or "(top level)"
            # A `str | None` field reports one error per union branch; one line is enough.
            if path in seen:
                continue
            seen.add(path)
            problems.append(f"{path}: {_describe(err)}")
        return None, problems
