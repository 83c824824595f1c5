"""Human ratings through the jobs service (versions/ratings.py; issue 27, item 6): the rating page
(static/rate.html) asks for the next blind prompt of a version, posts a rating, and reads the summary.

Behind the same bearer token as the rest of the API. Refusals are 4xx with {"error": ...}: an unknown
version or prompt 404, a version with no evaluation answers 409, a prompt the rater already rated 409, a
grade off the 1-5 scale, a missing one or an unknown preference 400 (the service's answer to any body
its model refuses).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from evals.rubrics import CRITERIA
from jobs.service.models_api import Version, refusal
from versions import ratings, registry, store

Grade = Annotated[int, Field(strict=True, ge=ratings.SCALE[0], le=ratings.SCALE[1])]


class Grades(BaseModel):
    """One answer's grade on each of the judge's criteria (evals/rubrics.py CRITERIA)."""

    model_config = ConfigDict(extra="forbid")
    on_brand: Grade
    emotional_intelligence: Grade
    helpful: Grade


assert tuple(Grades.model_fields) == CRITERIA  # the page, the judge and the table grade the same things


class Rate(BaseModel):
    """POST /api/models/{name}/versions/{v}/ratings: one prompt's rating, answers by the slot shown."""

    model_config = ConfigDict(extra="forbid")
    rater: str = Field(min_length=1, max_length=ratings.MAX_RATER)
    item: str = Field(min_length=1, max_length=128)
    scores: dict[Literal["first", "second"], Grades]
    preference: Literal["first", "second", "tie"]


def router(engine: Engine, authorized: Callable, public: Callable[[str], str]) -> APIRouter:
    api = APIRouter(prefix="/api/models", tags=["ratings"], dependencies=[Depends(authorized)])

    def find(name: str, number: int) -> registry.ModelVersion:
        return registry.finished(registry.get_version(engine, registry.check_name(name), number))

    async def guarded(work):
        # The registry and the store (the version's eval files come from its stored copy) in the threadpool.
        try:
            return await run_in_threadpool(work)
        except (registry.VersionError, store.StoreError, SQLAlchemyError) as exc:
            raise refusal(exc, public) from None

    @api.get("/{name}/versions/{version}/ratings/next")
    async def next_prompt(
        name: str,
        version: int = Version,
        rater: str = Query(min_length=1, max_length=ratings.MAX_RATER, description="who is rating"),
    ):
        return await guarded(lambda: ratings.next_item(engine, find(name, version), rater))

    @api.post("/{name}/versions/{version}/ratings", status_code=201)
    async def rate(body: Rate, name: str, version: int = Version):
        def work():
            v = find(name, version)
            scores = {slot: grades.model_dump() for slot, grades in body.scores.items()}
            ratings.submit(engine, v, body.rater, body.item, scores, body.preference)
            # Not the stored row: it names which answer was the adapter, and the page stays blind.
            return {"saved": body.item, "next": ratings.next_item(engine, v, body.rater)}

        return await guarded(work)

    @api.get("/{name}/versions/{version}/ratings")
    async def summary(name: str, version: int = Version):
        # Not `find`: a deleted version's ratings are the record of what people said of it.
        def read():
            v = registry.get_version(engine, registry.check_name(name), version)
            return ratings.summary_of(engine, v)

        return await guarded(read)

    return api
