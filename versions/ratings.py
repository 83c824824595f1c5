"""Human ratings of a version's held-out answers (issue 27, item 6; table human_ratings, migration 0009).

What is rated is what the evaluation judged: the version's own eval/prompts.jsonl and answers.jsonl, read
from its copy in the store (sides.cached: every sha256 checked against the manifest), so a run evaluated
again after its promotion cannot change what a version's ratings were about. A rater sees one held-out
prompt at a time (the client's persona and feeling, the conversation so far) and the base's and the
adapter's answers in an order drawn per rater and prompt, never named; they grade each answer 1-5 on the
judge's criteria and say which they prefer. The server alone knows which answer was first.

The version's `human_eval_score` (the customer's model_artifacts column, 0-5) is the mean human grade of
the adapter's answers; beside it the human win rate of the adapter, and how often the judge agreed with the
humans. Every interval resamples held-out conversations (evals/stats.py), as the judge's do.
"""

from __future__ import annotations

import functools
import hashlib
import json
from datetime import datetime
from pathlib import Path

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from evals import stats
from evals.prompts import conversation_of
from evals.rubrics import CRITERIA
from evals.summary import AGREEMENT_CRITERIA
from evals.verdict import load_gates
from jobs.registry import Base, ModelArtifact, now
from jobs.service.db import write_session
from versions import registry, sides

SIDES = ("base", "adapter")
SLOTS = ("first", "second")  # what the page knows an answer by
PREFERENCES = (*SLOTS, "tie")
SCALE = (1, 5)
# A preference as the adapter's result (the win rate is the adapter's, as the judge's is).
OUTCOME = {"adapter": stats.WIN, "tie": stats.TIE, "base": stats.LOSS}
MAX_RATER = 64
# The rubric's words for a person (the judge reads the longer ones in evals/rubrics.py).
QUESTIONS = {
    "on_brand": "Sounds like the consultant: warm, plain, no jargon, no shaming, no promises",
    "emotional_intelligence": "Notices and meets the client's feeling before the numbers",
    "helpful": "Moves the client forward: a clear, safe next step or question",
}


class RatingError(registry.VersionError):
    """A refusal the API answers with its status (400 unless a subclass says)."""


class Rating(Base):
    __tablename__ = "human_ratings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    item_id: Mapped[str] = mapped_column(String(128))
    conversation_id: Mapped[str] = mapped_column(String(128))
    rater: Mapped[str] = mapped_column(String(MAX_RATER))
    first_model: Mapped[str] = mapped_column(String(8))
    scores: Mapped[dict] = mapped_column(JSON)
    preference: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)


def check_rater(rater: str) -> str:
    rater = (rater or "").strip()
    if not rater or len(rater) > MAX_RATER or not rater.isprintable():
        raise RatingError(f"rater: a name of 1 to {MAX_RATER} printable characters (who is rating)")
    return rater


def _digest(*parts) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big")


def first_model(v: registry.ModelVersion, item_id: str, rater: str) -> str:
    """Which answer this rater sees first for this prompt: drawn from a hash, so a reload shows the same
    order and the server can tell which answer a submitted "first" was without keeping a session. It
    keeps the order from the page, not from a rater set on computing it."""
    return SIDES[_digest(v.id, item_id, rater, "order") % 2]


def items(v: registry.ModelVersion) -> list[dict]:
    """The version's held-out prompts that have both answers, in the file's order."""
    folder = sides.cached(v, say=lambda _: None)
    return _items(str(folder / "eval"), v.manifest_sha256)


@functools.lru_cache(maxsize=16)
def _items(eval_dir: str, manifest_sha256: str) -> list[dict]:  # keyed by the manifest: immutable
    def rows(name: str) -> list[dict]:
        path = Path(eval_dir) / name
        if not path.is_file():
            raise registry.Conflict(
                "this version has no evaluation answers to rate (evaluate its run with `just eval RUN` "
                "before promoting it)"
            )
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    answers = {(a["id"], a["model"]): a["text"] for a in rows("answers.jsonl")}
    found = []
    for p in rows("prompts.jsonl"):
        if all((p["id"], side) in answers for side in SIDES):
            found.append(
                {
                    "id": p["id"],
                    "conversation_id": conversation_of(p),
                    "persona": p.get("persona_key"),
                    "emotion": p.get("primary_emotion"),
                    "intensity": p.get("intensity"),
                    "arc": p.get("emotional_arc_key"),
                    "topic": p.get("training_topic_key"),
                    # The conversation so far without the system prompt (the consultant's brief, the same for
                    # every prompt and long): the client's and the consultant's turns.
                    "conversation": [
                        {"role": m["role"], "content": m["content"]}
                        for m in p.get("messages", [])
                        if m.get("role") in ("user", "assistant")
                    ],
                    "answers": {side: answers[p["id"], side] for side in SIDES},
                }
            )
    return found


def rows_of(engine: Engine, version_id: int) -> list[Rating]:
    with Session(engine) as s:
        return list(s.scalars(select(Rating).where(Rating.version_id == version_id).order_by(Rating.id)))


def next_item(engine: Engine, v: registry.ModelVersion, rater: str) -> dict:
    """The next prompt this rater has not rated (an order of their own, stable across reloads), blind:
    answers by slot, never by side. {"done": true} when they have rated every prompt."""
    rater = check_rater(rater)
    every = items(v)
    if not every:
        raise registry.Conflict("this version's evaluation has no prompt with both answers to rate")
    rated = {r.item_id for r in rows_of(engine, v.id) if r.rater == rater}
    left = sorted((i for i in every if i["id"] not in rated), key=lambda i: _digest(v.id, rater, i["id"]))
    progress = {"ref": v.ref, "rater": rater, "rated": len(rated), "total": len(every)}
    if not left:
        return progress | {"done": True}
    item = left[0]
    first = first_model(v, item["id"], rater)
    order = (first, SIDES[1 - SIDES.index(first)])
    shown = {k: item[k] for k in ("id", "persona", "emotion", "intensity", "arc", "topic", "conversation")}
    return progress | {
        "done": False,
        "item": shown,
        "answers": [{"slot": s, "text": item["answers"][side]} for s, side in zip(SLOTS, order, strict=True)],
        "criteria": [{"key": c, "question": QUESTIONS[c]} for c in CRITERIA],
        "scale": list(SCALE),
    }


def submit(engine: Engine, v: registry.ModelVersion, rater: str, item_id: str, scores: dict, preference: str):
    """One rating, by slot as the page knows it, stored by side; the version's human_eval_score mirrored
    into model_artifacts. A second rating of the same prompt by the same rater is refused (409)."""
    rater = check_rater(rater)
    item = next((i for i in items(v) if i["id"] == item_id), None)
    if item is None:
        raise registry.NotFound(f"{v.ref} has no held-out prompt {item_id!r} to rate")
    if set(scores) != set(SLOTS) or any(set(scores[s]) != set(CRITERIA) for s in SLOTS):
        raise RatingError(
            f"scores: for each of {', '.join(SLOTS)}, a grade for each of {', '.join(CRITERIA)}"
        )
    low, high = SCALE
    for slot in SLOTS:
        for c, g in scores[slot].items():
            if type(g) is not int or not low <= g <= high:
                raise RatingError(f"scores.{slot}.{c}: a whole number from {low} to {high}, not {g!r}")
    if preference not in PREFERENCES:
        raise RatingError(f"preference: one of {', '.join(PREFERENCES)}, not {preference!r}")
    first = first_model(v, item_id, rater)
    side_of = {"first": first, "second": SIDES[1 - SIDES.index(first)], "tie": "tie"}
    row = Rating(
        version_id=v.id,
        item_id=item_id,
        conversation_id=item["conversation_id"],
        rater=rater,
        first_model=first,
        scores={side_of[slot]: dict(scores[slot]) for slot in SLOTS},
        preference=side_of[preference],
    )
    try:
        with write_session(engine) as s:
            # The version's row locked first (PostgreSQL; SQLite's write lock is taken already): two raters
            # at once each count the other's rating in the mean they write, never a stale snapshot.
            s.get(registry.ModelVersion, v.id, with_for_update=True)
            s.add(row)
            s.flush()
            done = list(s.scalars(select(Rating).where(Rating.version_id == v.id)))
            # The plain mean (what summarize's human_eval_score is), no bootstrap inside the write lock.
            score = round(sum(grade(as_dict(r), "adapter") for r in done) / len(done), 4)
            # The customer's column (model_artifacts.human_eval_score, ours human_score): their app reads it.
            s.execute(
                update(ModelArtifact)
                .where(ModelArtifact.job_id == v.run_id, ModelArtifact.artifact_type == "adapter")
                .values(human_score=score)
            )
            s.commit()
    except IntegrityError:
        raise registry.Conflict(f"{rater} already rated {item_id} of {v.ref}") from None
    return as_dict(row)


def as_dict(r: Rating) -> dict:
    return {
        "item": r.item_id,
        "conversation": r.conversation_id,
        "rater": r.rater,
        "first_model": r.first_model,
        "scores": r.scores,
        "preference": r.preference,
        "created_at": r.created_at.isoformat(timespec="seconds") + "Z" if r.created_at else None,
    }


def grade(rating: dict, side: str, criteria: tuple[str, ...] = CRITERIA) -> float:
    """One rating's mean grade of one side's answer over the criteria."""
    return sum(rating["scores"][side][c] for c in criteria) / len(criteria)


def summarize(ratings: list[dict], judgements: list[dict] | None = None, seed: int = 0) -> dict:
    """The humans' figures for a version, each with its interval by held-out conversation:
    human_eval_score (the adapter's mean grade, 1-5 on the customer's 0-5 column), the base's, each
    criterion's paired difference, the adapter's human win rate, and the judge's agreement with the
    humans (same preferred answer; and Kendall's tau-b of its grades against theirs) where it judged."""
    out = {
        "n": len(ratings),
        "raters": sorted({r["rater"] for r in ratings}),
        "n_conversations": len({r["conversation"] for r in ratings}),
        "human_eval_score": stats.interval([(r["conversation"], grade(r, "adapter")) for r in ratings], seed),
        "base_score": stats.interval([(r["conversation"], grade(r, "base")) for r in ratings], seed),
        "criteria": {
            c: stats.interval(
                [(r["conversation"], r["scores"]["adapter"][c] - r["scores"]["base"][c]) for r in ratings],
                seed,
            )
            for c in CRITERIA
        },
        "win_rate": stats.interval([(r["conversation"], OUTCOME[r["preference"]]) for r in ratings], seed),
        # How often the answer shown first was preferred (0.5: the order did not sway the raters).
        "first_preferred": stats.mean_n(
            [float(r["preference"] == r["first_model"]) for r in ratings if r["preference"] != "tie"]
        ),
    }
    out["judge_agreement"] = judge_agreement(ratings, judgements or [], seed)
    return out


def judge_agreement(ratings: list[dict], judgements: list[dict], seed: int = 0) -> dict:
    """Does the judge see what people see? The judge's pick for a prompt (its two orders' mean: above 0.5
    the adapter, below the base, else a tie) against each rating's preference; and its pointwise grades
    (AGREEMENT_CRITERIA, as its check against quality_score reads) against the human ones, by rank."""
    outcomes: dict[str, list[float]] = {}
    grades: dict[tuple[str, str], float] = {}
    for j in judgements:
        if j.get("kind") == "pairwise" and j.get("winner_model") in OUTCOME:
            outcomes.setdefault(j["id"], []).append(OUTCOME[j["winner_model"]])
        if j.get("kind") == "pointwise" and j.get("status") == "ok" and j.get("model") in SIDES:
            judged = [j["scores"][c]["score"] for c in AGREEMENT_CRITERIA]
            grades[j["id"], j["model"]] = sum(judged) / len(judged)
    means = {i: sum(v) / len(v) for i, v in outcomes.items()}
    pick = {i: "adapter" if m > 0.5 else "base" if m < 0.5 else "tie" for i, m in means.items()}
    same = [
        (r["conversation"], float(pick[r["item"]] == r["preference"])) for r in ratings if r["item"] in pick
    ]
    ranked = [
        (r["conversation"], grades[r["item"], side], grade(r, side, AGREEMENT_CRITERIA))
        for r in ratings
        for side in SIDES
        if (r["item"], side) in grades
    ]
    return {"preference": stats.interval(same, seed), "grades": stats.rank_agreement(ranked, seed=seed)}


def judgements_of(v: registry.ModelVersion) -> list[dict]:
    """The version's own judge rows (eval/judgements.jsonl in its stored copy); none if it was not judged."""
    path = sides.cached(v, say=lambda _: None) / "eval" / "judgements.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def summary_of(engine: Engine, v: registry.ModelVersion) -> dict:
    """The summary with the verdict's own floor beside it (evals/gates.yaml judge.min_conversations): fewer
    rated conversations than the judge needs are too few to judge a version by, and it says so."""
    # A deleted version's ratings stay readable, without the judge's side (its files are gone).
    judgements = judgements_of(v) if v.complete and v.deleted_at is None else []
    found = summarize([as_dict(r) for r in rows_of(engine, v.id)], judgements)
    floor = load_gates().judge.min_conversations
    enough = found["n_conversations"] >= floor
    return {"ref": v.ref, **found, "min_conversations": floor, "sufficient": enough}


def counts(engine: Engine, version_ids: list[int]) -> dict[int, dict]:
    """Per version: how many ratings and the human_eval_score, for a list of versions (the models API)."""
    by: dict[int, list[dict]] = {i: [] for i in version_ids}
    with Session(engine) as s:
        for r in s.scalars(select(Rating).where(Rating.version_id.in_(version_ids))):
            by[r.version_id].append(as_dict(r))
    out = {}
    for i, rs in by.items():
        score = stats.interval([(r["conversation"], grade(r, "adapter")) for r in rs])
        out[i] = {"n": len(rs), "human_eval_score": score["mean"], "ci95": score["ci95"]}
    return out
