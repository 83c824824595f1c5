"""The jobs service's named models (versions/): list, show, promote, roll back, hand out download URLs,
and answer chat messages with a version ("test a model": versions/answer.py does the generating).

Behind the same bearer token as the jobs API (app.py passes its check in). Names are names (a model name
as versions.registry.check_name says, a run id as jobs.runfolder.RUN_ID), never paths; every refusal is a
4xx with {"error": ...} and changes nothing. A promotion that the store fails half-way leaves its version
marked unfinished (502, and the same request finishes it), never one that looks complete.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, Query
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException

from versions import abtests, answer, hotswap, ratings, registry, store
from versions.promote import MAX_NOTE, promote

log = logging.getLogger("jobs.service")
Version = PathParam(ge=1, le=10**9, description="the version number N of NAME@vN")


class Promote(BaseModel):
    """POST /api/models/{name}/promote: what `python -m versions promote` takes."""

    model_config = ConfigDict(extra="forbid")
    run_id: str = Field(min_length=1, max_length=64)
    note: str | None = Field(default=None, max_length=MAX_NOTE)
    stage: Literal["stored", "testing", "production"] | None = None
    force: bool = Field(
        default=False, description="promote a run whose verdict failed or is missing (recorded)"
    )


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1, max_length=answer.MAX_CHARS)


class Ask(BaseModel):
    """POST /api/models/{name}/versions/{v}/test: a conversation for the version to answer."""

    model_config = ConfigDict(extra="forbid")
    messages: list[Message] = Field(min_length=1, max_length=answer.MAX_MESSAGES)
    max_tokens: int = Field(128, ge=1, le=answer.MAX_TOKENS)
    temperature: float = Field(0.0, ge=0, le=2, description="0: greedy, the same answer every time")

    @model_validator(mode="after")
    def a_question_last(self) -> Ask:
        if self.messages[-1].role != "user":
            raise ValueError("the last message is the user's: the version answers it")
        if sum(len(m.content) for m in self.messages) > answer.MAX_TOTAL_CHARS:
            raise ValueError(f"at most {answer.MAX_TOTAL_CHARS} characters in all messages")
        return self


def swapped(engine: Engine, model: str, public: Callable[[str], str]) -> dict:
    """What a stage move did to the model server (versions/hotswap.py), its error with paths redacted."""
    done = hotswap.after_move(engine, model, log.info)
    return {**done, "error": public(done["error"])} if "error" in done else done


def refusal(exc: Exception, public: Callable[[str], str]) -> HTTPException:
    """A refusal as its answer: the registry's own status, 502 for the store, 503 for the database."""
    if isinstance(exc, registry.VersionError):
        return HTTPException(exc.status, public(str(exc)))
    if isinstance(exc, store.Missing):
        return HTTPException(410, public(str(exc)))
    if isinstance(exc, store.NoUrl):
        return HTTPException(409, public(str(exc)))
    if isinstance(exc, store.StoreError):
        log.warning("artifact store: %s", public(str(exc)))
        return HTTPException(502, "artifact store: " + public(str(exc)))
    log.error("models: database error %s", type(exc).__name__)
    return HTTPException(503, "the registry database is unavailable; try again")


async def answer_with(
    engine: Engine,
    runs: Path,
    public: Callable[[str], str],
    answerer: answer.Answerer,
    name: str,
    version: int | None,
    body: Ask,
) -> dict:
    """A version's answer (None: the model's production version), for both test routes."""

    def pick():
        if version is not None:
            return registry.get_version(engine, name, version)
        production = [v for v in registry.versions_of(engine, name) if v.stage == "production"]
        if not production:
            raise registry.NotFound(f"{name} has no production version; name one as {name}@vN")
        return production[-1]

    # async: the registry read goes to the threadpool, the generation to a worker process or the
    # model server; the event loop only waits.
    try:
        v = registry.finished(await run_in_threadpool(pick))
    except (registry.VersionError, SQLAlchemyError) as exc:
        raise refusal(exc, public) from None
    messages = [m.model_dump() for m in body.messages]
    try:
        # Asked by its model name alone: the production stage's name on a hot-swapping server first.
        served = (hotswap.stage_name(v.model_name, "production"),) if version is None else ()
        result = await answerer.answer(v, runs, messages, body.max_tokens, body.temperature, served)
    except answer.Busy as exc:
        raise HTTPException(exc.status, str(exc), {"Retry-After": str(answer.RETRY_AFTER_S)}) from None
    except answer.Unanswered as exc:
        log.warning("test %s: %s", v.ref, public(str(exc)))
        raise HTTPException(exc.status, public(str(exc))) from None
    except store.StoreError as exc:
        raise refusal(exc, public) from None
    log.info(
        "test %s: %s tokens in %.1f s (%s)", v.ref, result["tokens"], result["seconds"], result["backend"]
    )
    return {"ref": v.ref, **result}


def router(
    engine: Engine, runs: Path, authorized: Callable, public: Callable[[str], str], answerer: answer.Answerer
) -> APIRouter:
    api = APIRouter(prefix="/api/models", tags=["models"], dependencies=[Depends(authorized)])

    def refused(exc: Exception) -> HTTPException:
        return refusal(exc, public)

    def named(name: str) -> str:
        try:
            return registry.check_name(name)
        except registry.VersionError as exc:
            raise refused(exc) from None

    @api.get("")
    def list_models():
        return {"models": registry.models(engine)}

    @api.get("/{name}")
    def get_model(name: str):
        versions = registry.versions_of(engine, named(name))
        if not versions:
            raise HTTPException(404, "no such model")
        production = next((v.version for v in versions if v.stage == "production"), None)
        tests = abtests.for_versions(engine, versions)  # each version's A/B results (versions/ab.py)
        rated = ratings.counts(engine, [v.id for v in versions])  # people's grades (versions/ratings.py)
        listed = [registry.as_dict(v) | {"ab": tests[v.id], "human": rated[v.id]} for v in versions]
        return {"name": name, "production": production, "versions": listed}

    @api.post("/{name}/promote", status_code=201)
    def promote_run(name: str, body: Promote, who: str = Depends(authorized)):
        try:
            row = promote(
                engine, runs, body.run_id, named(name), body.stage, body.note, body.force, who, say=log.info
            )
        except (registry.VersionError, store.StoreError, SQLAlchemyError) as exc:
            raise refused(exc) from None
        log.info("promoted run %s to %s (%s)", body.run_id, row.ref, row.stage)
        return registry.as_dict(row) | {"serving": swapped(engine, row.model_name, public)}

    @api.post("/{name}/rollback")
    def roll_back(name: str, who: str = Depends(authorized)):
        try:
            archived, restored = registry.rollback(engine, named(name), who)
        except (registry.VersionError, SQLAlchemyError) as exc:
            raise refused(exc) from None
        log.info("rollback %s: %s production, %s archived", name, restored.ref, archived.ref)
        return {
            "production": registry.as_dict(restored),
            "archived": registry.as_dict(archived),
            "serving": swapped(engine, name, public),
        }

    @api.post("/{name}/versions/{version}/retire")
    def retire(name: str, version: int = Version, who: str = Depends(authorized)):
        try:
            row = registry.retire(engine, f"{named(name)}@v{version}", who)
        except (registry.VersionError, SQLAlchemyError) as exc:
            raise refused(exc) from None
        log.info("retired %s", row.ref)
        return registry.as_dict(row) | {"serving": swapped(engine, row.model_name, public)}

    @api.get("/{name}/versions/{version}/download")
    def download_urls(
        name: str,
        version: int = Version,
        expires: int = Query(3600, ge=60, le=store.MAX_URL_SECONDS, description="seconds the URLs work"),
    ):
        try:
            v = registry.finished(registry.get_version(engine, named(name), version))
            folder = registry.folder(v.model_name, v.version)
            files = store.presign_all(store.store_of(v.store_url, folder), folder, v.manifest_sha256, expires)
        except (registry.VersionError, store.StoreError, SQLAlchemyError) as exc:
            raise refused(exc) from None
        return {"ref": v.ref, "expires_in": expires, "manifest_sha256": v.manifest_sha256, "files": files}

    @api.post(
        "/{name}/versions/{version}/test",
        responses={
            429: {"description": "as many answers as allowed are being generated; see Retry-After"},
            504: {"description": "no answer within the time allowed"},
        },
    )
    async def test_version(body: Ask, name: str, version: int = Version):
        return await answer_with(engine, runs, public, answerer, named(name), version, body)

    return api
