"""The judge: any OpenAI-compatible chat-completions endpoint scores base and adapter answers, pointwise on
three criteria (evals/rubrics.py) and pairwise in both orders.

    JUDGE_BASE_URL=http://127.0.0.1:8000/v1 JUDGE_MODEL=... [JUDGE_API_KEY=...] python -m evals run RUN

Library: the plain `openai` client (AsyncOpenAI). inspect-ai's model_graded_qa and deepeval's G-Eval /
ArenaGEval each bring their own task runtime, log format and defaults (a regex-parsed single grade in
inspect, which counted parse failures as INCORRECT until its 2026 fix, inspect_ai#4026; a randomised single
order in ArenaGEval, not both orders), and lm-eval 0.4.11 has no judge metric (EleutherAI
lm-evaluation-harness#3534 is still open); all three call this same client underneath. Used directly it
speaks to vLLM, hosted APIs and `transformers serve` alike, retries 429/5xx/timeouts with backoff and
Retry-After itself (max_retries, timeout), and returns the token usage we record.

Statuses of a judgement row: "ok"; "unparseable" (no JSON object, or one failing the pydantic schema);
"refused" (the message's refusal field, or finish_reason content_filter); "error" (the endpoint failed after
the client's own retries). Unparseable and refused answers are asked again, at most `parse_retries` times,
with a nudge in the prompt that says what was wrong (greedy decoding would repeat the same answer to the
same prompt); then the row stays unscored. Every non-ok row is counted as unscored and left out of the
means: never a crash, never a silent score. A wrong key, model or URL (401/403/404) is a ConfigError:
every call would fail alike.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import openai

from brightrun.errors import ConfigError
from evals import rubrics
from evals.prompts import conversation_of
from evals.summary import MODELS, REFERENCE, summarize

NUDGE = (
    "(A previous answer was not usable: {why}. Reply with the JSON object only, in exactly the form asked.)"
)


@dataclass
class JudgeSettings:
    base_url: str
    model: str
    # repr=False: a settings object printed in a log or a traceback must not show the key.
    api_key: str | None = field(default=None, repr=False)
    concurrency: int = 4
    timeout_s: float = 60
    max_retries: int = 3  # transport retries (429, 5xx, timeouts), done by the openai client with backoff
    parse_retries: int = 2  # further asks after an unparseable or refused answer
    max_tokens: int = 300  # three one-line reasons fit in ~120 tokens; the rest is slack for chatter
    price_per_mtok_in: float | None = None
    price_per_mtok_out: float | None = None
    # Ask for a response_format (the answer's JSON schema, else any JSON object), each dropped when the
    # server answers 400 to it; False: the parser alone.
    json_mode: bool = True

    @classmethod
    def from_env(cls, environ: dict | None = None) -> JudgeSettings | None:
        """Settings from JUDGE_* variables; None when JUDGE_BASE_URL is unset (no judge: judge.json says
        skipped). JUDGE_PRICE_IN / JUDGE_PRICE_OUT are USD per million prompt / completion tokens."""
        env = os.environ if environ is None else environ
        base_url = env.get("JUDGE_BASE_URL", "").strip()
        if not base_url:
            return None
        model = env.get("JUDGE_MODEL", "").strip()
        if not model:
            raise ConfigError("JUDGE_BASE_URL is set but JUDGE_MODEL is not: name the judge's model")

        def number(name: str, kind, default):
            text = env.get(name, "").strip()
            if not text:
                return default
            try:
                value = kind(text)
            except ValueError:
                raise ConfigError(f"{name}={text!r} is not a {kind.__name__}") from None
            if value < 0 or (kind is int and name == "JUDGE_CONCURRENCY" and value < 1):
                raise ConfigError(f"{name}={text!r} is out of range")
            return value

        return cls(
            base_url=base_url,
            model=model,
            api_key=env.get("JUDGE_API_KEY") or None,
            concurrency=number("JUDGE_CONCURRENCY", int, cls.concurrency),
            timeout_s=number("JUDGE_TIMEOUT_S", float, cls.timeout_s),
            max_retries=number("JUDGE_MAX_RETRIES", int, cls.max_retries),
            parse_retries=number("JUDGE_PARSE_RETRIES", int, cls.parse_retries),
            max_tokens=number("JUDGE_MAX_TOKENS", int, cls.max_tokens),
            price_per_mtok_in=number("JUDGE_PRICE_IN", float, None),
            price_per_mtok_out=number("JUDGE_PRICE_OUT", float, None),
        )

    def public(self) -> dict:
        """What judge.json may say about the judge: the URL without user info or query (where a key could
        hide), and the model. Never the key."""
        parts = urlsplit(self.base_url)
        host = parts.hostname or ""
        netloc = host + (f":{parts.port}" if parts.port else "")
        return {"base_url": urlunsplit((parts.scheme, netloc, parts.path, "", "")), "model": self.model}

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        if self.price_per_mtok_in is None or self.price_per_mtok_out is None:
            return None
        return (prompt_tokens * self.price_per_mtok_in + completion_tokens * self.price_per_mtok_out) / 1e6


def tasks_for(
    prompts: list[dict],
    answers: list[dict],
    profile: dict,
    pairwise: bool = True,
    models: tuple[str, str] = MODELS,
    references: bool = True,
) -> list[dict]:
    """One task per judge judgement: pointwise for both models (and the reference reply, when it has a
    quality_score and `references`), then pairwise as (first, second) and (second, first): the swap is
    what cancels a judge's preference for a position."""
    text = {(a["id"], a["model"]): a["text"] for a in answers}
    tokens = {(a["id"], a["model"]): a.get("new_tokens") for a in answers}
    tasks = []
    for prompt in prompts:
        # The unit every interval resamples (evals/stats.py): the held-out conversation the turn is from.
        conversation = conversation_of(prompt)
        missing = [m for m in models if (prompt["id"], m) not in text]
        if missing:
            raise ConfigError(f"answers.jsonl has no {' or '.join(missing)} answer for prompt {prompt['id']}")
        for model in models:
            tasks.append(
                {
                    "kind": "pointwise",
                    "id": prompt["id"],
                    "conversation": conversation,
                    "model": model,
                    "messages": rubrics.pointwise_messages(prompt, profile, text[prompt["id"], model]),
                }
            )
        if references and isinstance(prompt.get("quality_score"), int | float) and prompt.get("reference"):
            # The reference reply graded too, to check the judge against the file's own ratings: does it
            # rank the consultant's turns as their quality_score does (issue 27, item 3)?
            tasks.append(
                {
                    "kind": "pointwise",
                    "id": prompt["id"],
                    "conversation": conversation,
                    "model": REFERENCE,
                    "quality_score": prompt["quality_score"],
                    "messages": rubrics.pointwise_messages(prompt, profile, prompt["reference"]),
                }
            )
        if pairwise:
            for order in (models, models[::-1]):
                first, second = (text[prompt["id"], m] for m in order)
                tasks.append(
                    {
                        "kind": "pairwise",
                        "id": prompt["id"],
                        "conversation": conversation,
                        "order": list(order),
                        "new_tokens": {m: tokens[prompt["id"], m] for m in models},  # length control
                        "messages": rubrics.pairwise_messages(prompt, profile, first, second),
                    }
                )
    return tasks


def _scrub(text: str, settings: JudgeSettings) -> str:
    """An error message as kept in a row: short, and without the key should a server echo it."""
    text = " ".join(str(text).split())[:300]
    return text.replace(settings.api_key, "***") if settings.api_key else text


def response_format(kind: str | None, schema) -> dict | None:
    """What the request asks for: the answer's JSON schema (vLLM, OpenAI and others constrain decoding to
    it: structured output, issue 27), or any JSON object, or nothing (the parser alone)."""
    if kind == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()},
        }
    return {"type": "json_object"} if kind == "json_object" else None


async def _request(client, settings: JudgeSettings, state: dict, messages: list[dict], schema) -> dict:
    """One chat completion; {"raw", "refusal", "finish_reason", tokens, "retries", "error"}. state["formats"]:
    the response formats still to try, best first; a server that answers 400 to one is asked with the next,
    and once that works the refused one is not asked again (many servers take no schema, some no format)."""
    kwargs = {
        "model": settings.model,
        "messages": messages,
        "temperature": 0,
        "max_tokens": settings.max_tokens,
    }
    kind = state["formats"][0] if state["formats"] else None
    if kind:
        kwargs["response_format"] = response_format(kind, schema)
    try:
        raw = await client.chat.completions.with_raw_response.create(**kwargs)
        response = raw.parse()
    except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as error:
        raise ConfigError(
            f"the judge at {settings.public()['base_url']} refused model {settings.model!r}: "
            f"{_scrub(error, settings)} (check JUDGE_BASE_URL, JUDGE_MODEL, JUDGE_API_KEY)"
        ) from None
    except (openai.BadRequestError, openai.UnprocessableEntityError) as error:
        if kind is None:
            return {"error": f"{type(error).__name__}: {_scrub(error, settings)}"}
        rest = {"formats": [f for f in state["formats"] if f != kind]}
        retry = await _request(client, settings, rest, messages, schema)
        if "error" not in retry:
            state["formats"] = rest["formats"]
        refused = {kind: _scrub(error, settings), **retry.get("response_format_refused", {})}
        return retry | {"response_format_refused": refused}
    except openai.OpenAIError as error:  # connection, timeout, 429/5xx after the client's retries
        return {
            "error": f"{type(error).__name__}: {_scrub(error, settings)}",
            "retries": settings.max_retries,
        }
    usage = getattr(response, "usage", None)
    choice = response.choices[0] if getattr(response, "choices", None) else None
    message = getattr(choice, "message", None)
    return {
        "raw": getattr(message, "content", None),
        "refusal": getattr(message, "refusal", None),
        "finish_reason": getattr(choice, "finish_reason", None),
        "prompt_tokens": getattr(usage, "prompt_tokens", 0) or 0,
        "completion_tokens": getattr(usage, "completion_tokens", 0) or 0,
        "retries": raw.retries_taken,
        "response_format": kind,
        "json_mode": kind is not None,
    }


async def _judge_one(client, semaphore, settings: JudgeSettings, state: dict, task: dict) -> dict:
    schema = rubrics.PointwiseVerdict if task["kind"] == "pointwise" else rubrics.PairwiseVerdict
    messages = list(task["messages"])
    attempts, verdict = [], None
    async with semaphore:
        started = time.monotonic()
        for _ in range(1 + settings.parse_retries):
            t0 = time.monotonic()
            attempt = await _request(client, settings, state, messages, schema)
            attempt["seconds"] = round(time.monotonic() - t0, 3)
            attempts.append(attempt)
            if "error" in attempt:
                attempt["status"] = "error"
                break  # the client has already retried the transport; asking again would repeat that
            if attempt["refusal"] or attempt["finish_reason"] == "content_filter":
                attempt["status"], why = (
                    "refused",
                    "a refusal: this is a routine quality rating of a chat reply",
                )
            else:
                verdict, why, closed = rubrics.parse(attempt["raw"], schema)
                attempt["status"] = "ok" if verdict is not None else "unparseable"
                attempt["closed_cut_off"] = closed
            attempt["why"] = why
            if verdict is not None:
                break
            # Asked afresh with the nudge in the last turn, without the failed answer: greedy decoding of the
            # same prompt would repeat it, and a small model shown its own answer copies it (smollm2 did).
            last = task["messages"][-1]
            nudged = {**last, "content": last["content"] + "\n\n" + NUDGE.format(why=why)}
            messages = [*task["messages"][:-1], nudged]
        seconds = time.monotonic() - started
    prompt_tokens = sum(a.get("prompt_tokens", 0) for a in attempts)
    completion_tokens = sum(a.get("completion_tokens", 0) for a in attempts)
    kept = ("kind", "id", "conversation", "model", "order", "new_tokens", "quality_score")
    row = {key: task[key] for key in kept if key in task}
    row |= {
        "status": attempts[-1]["status"],
        "messages": task["messages"],  # the judge prompt; a retry adds NUDGE to its last turn
        "attempts": attempts,
        "raw": attempts[-1].get("raw"),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "cost_usd": settings.cost(prompt_tokens, completion_tokens),
        "seconds": round(seconds, 3),
    }
    if task["kind"] == "pointwise":
        row["scores"] = verdict.model_dump() if verdict else None
    else:
        winner = verdict.winner if verdict else None
        row["winner"] = winner
        row["winner_model"] = {"A": task["order"][0], "B": task["order"][1], "tie": "tie"}.get(winner)
        row["reason"] = verdict.reason if verdict else None
    return row


async def _judge_tasks(tasks: list[dict], settings: JudgeSettings) -> list[dict]:
    state = {"formats": ["json_schema", "json_object"] if settings.json_mode else []}
    semaphore = asyncio.Semaphore(settings.concurrency)
    # api_key: a placeholder when unset, never OPENAI_API_KEY from the environment: that key is for OpenAI,
    # not for whatever server JUDGE_BASE_URL names.
    client = openai.AsyncOpenAI(
        base_url=settings.base_url,
        api_key=settings.api_key or "EMPTY",
        max_retries=settings.max_retries,
        timeout=settings.timeout_s,
    )
    async with client:
        return list(await asyncio.gather(*(_judge_one(client, semaphore, settings, state, t) for t in tasks)))


def judge_all(
    prompts: list[dict],
    answers: list[dict],
    profile: dict,
    settings: JudgeSettings,
    *,
    pairwise: bool = True,
    models: tuple[str, str] = MODELS,
    references: bool = True,
) -> tuple[list[dict], dict]:
    """judgements rows (one per judgement: its prompt, every attempt's raw answer and tokens, its status) and
    judge.json's summary. The API key never appears in either. models: the answers' two names, (first,
    second); the win rate is the second's. references: grade the reference replies too (the verdict's
    check of the judge against quality_score; an A/B, which has no verdict, leaves them out)."""
    tasks = tasks_for(prompts, answers, profile, pairwise=pairwise, models=models, references=references)
    started = time.monotonic()
    rows = asyncio.run(_judge_tasks(tasks, settings))
    return rows, summarize(rows, settings, time.monotonic() - started, models=models)
