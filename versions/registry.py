"""Model versions in the registry (table model_versions, migration 0005): names, numbers, stages, rollback.

A version is immutable once made: its run, sha256s, verdict and scores never change; only its stage moves
(the customer's `deployment_status` words: stored, testing, production, archived). It is reserved first
(number taken, manifest_sha256 NULL) and completed once its files are in the store, so a promotion that
died half-way leaves a row that says so, and running the same promotion again finishes that version.

One production version per model is the database's rule (a partial unique index, SQLite and PostgreSQL):
two promotions at once cannot both leave theirs in production; the loser's transaction is retried.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String, Text, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Mapped, Session, mapped_column

from axolotl_configs.profiles import NAME
from jobs.registry import Base, ModelArtifact, now
from jobs.service.db import write_session

STAGES = ("stored", "testing", "production", "archived")
PROMOTE_STAGES = ("stored", "testing", "production")  # archived is where versions end, not where they start
ATTEMPTS = 8  # concurrent promotions of one model: each conflict is one retry


class VersionError(Exception):
    """A refusal with the HTTP status the API answers it with (the CLI exits 2 for 4xx, 1 otherwise)."""

    status = 400


class NotFound(VersionError):
    status = 404


class Conflict(VersionError):
    status = 409


class Gone(VersionError):
    status = 410


class ModelVersion(Base):
    __tablename__ = "model_versions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[str] = mapped_column(ForeignKey("training_jobs.id"), index=True)
    adapter_sha256: Mapped[str] = mapped_column(String(64))
    data_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    config_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    base_model: Mapped[str] = mapped_column(Text)
    verdict: Mapped[str | None] = mapped_column(String(16), nullable=True)
    scores: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)
    stage: Mapped[str] = mapped_column(String(16), default="stored")
    stage_changed_at: Mapped[datetime] = mapped_column(DateTime, default=now)
    stage_changed_by: Mapped[str] = mapped_column(String(128))
    production_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    rolled_back_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # Retired on purpose (migration 0008): archived, and never a rollback's target again.
    retired_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    retired_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # Its files deleted from the store on purpose (migration 0010; versions/housekeeping.py delete): the
    # row stays, for the record and the A/B results and ratings that name it.
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    deleted_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    store_url: Mapped[str] = mapped_column(Text)
    manifest_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)

    @property
    def complete(self) -> bool:
        return self.manifest_sha256 is not None

    @property
    def ref(self) -> str:
        return f"{self.model_name}@v{self.version}"


def check_name(name: str) -> str:
    """A model name is a name (a folder in the store, a URL segment), never a path."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise VersionError(f"model name {name!r}: 1-64 of A-Z a-z 0-9 _ -, starting with a letter or digit")
    return name


REF = re.compile(r"(?P<name>[^@]+)@v(?P<version>[1-9][0-9]{0,8})")


def parse_ref(ref: str) -> tuple[str, int]:
    """NAME@vN (get_ref also takes NAME@production and NAME@testing)."""
    m = REF.fullmatch(ref or "")
    if not m:
        raise VersionError(
            f"{ref!r}: expected NAME@vN, NAME@production or NAME@testing, e.g. elena-morales@v3"
        )
    return check_name(m["name"]), int(m["version"])


# The customer's stages a version can be named by (issue 28): NAME@production, NAME@testing.
ALIASES = ("production", "testing")


def get_ref(engine: Engine, ref: str) -> ModelVersion:
    """The version a ref names: NAME@vN, or NAME@production (its production version) or NAME@testing (its
    newest version in testing), resolved now: what it resolved to is the version's own `ref`, which
    callers record. NotFound when the stage is empty, saying what exists."""
    name, _, alias = (ref or "").partition("@")
    if alias not in ALIASES:
        return get_version(engine, *parse_ref(ref))
    check_name(name)
    with Session(engine, expire_on_commit=False) as s:
        found = s.scalars(
            select(ModelVersion)
            .where(ModelVersion.model_name == name, ModelVersion.stage == alias)
            .order_by(ModelVersion.version.desc())
        ).first()
    if found is None:
        raise NotFound(f"{ref}: {name} has no version in {alias} (`python -m versions model {name}`)")
    return found


def transient(exc: OperationalError) -> bool:
    code = getattr(exc.orig, "sqlstate", None)
    return code in ("40001", "40P01", "55P03") or "database is locked" in str(exc.orig)


def in_transaction(engine: Engine, work: Callable[[Session], object]):
    """work(session) in one write transaction, retried when a concurrent one won a unique index (the
    version number, the production slot) or the database asks for a retry; the last conflict is raised."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with write_session(engine) as s:
                result = work(s)
                s.commit()
                return result
        except IntegrityError as exc:
            if attempt == ATTEMPTS:
                why = str(exc.orig).splitlines()[0]
                raise Conflict(f"another promotion of this model kept winning ({why}); try again") from None
        except OperationalError as exc:
            if not transient(exc) or attempt == ATTEMPTS:
                raise


def reserve(engine: Engine, name: str, run_id: str, store_root: str, fields: dict, who: str) -> ModelVersion:
    """The run's version of this model: the existing one (complete, or an unfinished upload to resume), or
    a new number (highest + 1) with no manifest yet. fields: the version's identity (sha256s, verdict...)."""

    def work(s: Session) -> ModelVersion:
        row = s.scalar(
            select(ModelVersion).where(ModelVersion.model_name == name, ModelVersion.run_id == run_id)
        )
        if row is not None:
            return row
        top = s.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.model_name == name)) or 0
        row = ModelVersion(
            model_name=name,
            version=top + 1,
            run_id=run_id,
            created_by=who,
            stage="stored",
            stage_changed_by=who,
            store_url=f"{store_root.rstrip('/')}/{folder(name, top + 1)}",
            **fields,
        )
        s.add(row)
        s.flush()
        return row

    return in_transaction(engine, work)


def relocate(engine: Engine, row_id: int, store_url: str) -> ModelVersion:
    """An unfinished version goes to another store (ARTIFACT_STORE changed since, e.g. after a wrong
    bucket): nothing of it is complete anywhere, so where it lives is not yet part of what it is."""

    def work(s: Session) -> ModelVersion:
        row = s.get(ModelVersion, row_id, with_for_update=True)
        if row is None or row.complete:
            raise Conflict("this version was completed meanwhile; its store stays")
        row.store_url = store_url
        return row

    return in_transaction(engine, work)


def folder(name: str, version: int) -> str:
    """The version's folder in the store."""
    return f"models/{name}/v{version}"


def move(s: Session, row: ModelVersion, stage: str, who: str) -> None:
    """row to `stage` inside s's transaction; to production: the current production one is archived
    first (flushed, so the unique index sees one production row at every moment)."""
    if stage == "production":
        current = s.scalar(
            select(ModelVersion)
            .where(ModelVersion.model_name == row.model_name, ModelVersion.stage == "production")
            .with_for_update()
        )
        if current is not None and current.id != row.id:
            current.stage, current.stage_changed_at, current.stage_changed_by = "archived", now(), who
            s.flush()
            mirror(s, current)
        row.production_at = now()
        row.rolled_back_at = None  # in production again on purpose: a later rollback may come back to it
    row.stage, row.stage_changed_at, row.stage_changed_by = stage, now(), who
    s.flush()
    mirror(s, row)


def mirror(s: Session, row: ModelVersion) -> None:
    """The run's adapter row in model_artifacts (the customer's table) says the same deployment_status:
    their app reads that column. A run promoted into two models shows the stage it was last moved to."""
    s.execute(
        update(ModelArtifact)
        .where(ModelArtifact.job_id == row.run_id, ModelArtifact.artifact_type == "adapter")
        .values(deployment_status=row.stage)
    )


def complete(engine: Engine, row_id: int, manifest_sha256: str, stage: str, who: str) -> ModelVersion:
    """The upload finished: the manifest's sha256 recorded, the version moved to its stage."""

    def work(s: Session) -> ModelVersion:
        row = s.get(ModelVersion, row_id, with_for_update=True)
        if row is None:
            raise NotFound(f"version row {row_id} is gone")
        row.manifest_sha256 = manifest_sha256
        if stage != row.stage:
            move(s, row, stage, who)
        else:
            mirror(s, row)
        return row

    return in_transaction(engine, work)


def allowed_move(row: ModelVersion, stage: str) -> None:
    """The stage rules (issue 28, item 5), in one place: the production version leaves production only
    for another (a promote, a rollback) or by `retire`, never by a move that leaves its model with none;
    a retired version stays out of use: no stage move brings it back."""
    if row.stage == "production" and stage != "production":
        raise Conflict(
            f"{row.ref} is {row.model_name}'s production version: moving it to {stage} would leave none; "
            f"promote another version to production, or `python -m versions retire {row.ref}`"
        )
    if row.retired_at is not None:
        raise Conflict(f"{row.ref} was retired by {row.retired_by} at {row.retired_at:%Y-%m-%d %H:%M}Z")


def retire(engine: Engine, ref: str, who: str) -> ModelVersion:
    """Take a version out of use on purpose: archived, marked retired (who, when), never a rollback's
    target again. Retiring the production version leaves its model with none: that is what was asked."""

    def work(s: Session) -> ModelVersion:
        found = finished(get_ref(engine, ref))  # an unfinished upload is no version to retire yet
        row = s.get(ModelVersion, found.id, with_for_update=True)
        if row.retired_at is not None:
            raise Conflict(
                f"{row.ref} is retired already ({row.retired_by}, {row.retired_at:%Y-%m-%d %H:%M}Z)"
            )
        row.retired_at, row.retired_by = now(), who
        if row.stage != "archived":
            row.stage, row.stage_changed_at, row.stage_changed_by = "archived", now(), who
            s.flush()
            mirror(s, row)
        return row

    return in_transaction(engine, work)


def set_stage(
    engine: Engine, name: str, version: int, stage: str, who: str, scores: dict | None = None, forced=False
) -> ModelVersion:
    """Move a complete version's stage (allowed_move's rules). scores: what the move adds to them (a move
    into production: its A/B against the version it replaces); forced: the move was forced, and a forced
    version stays marked."""
    if stage not in STAGES:
        raise VersionError(f"stage {stage!r}: one of {', '.join(STAGES)}")

    def work(s: Session) -> ModelVersion:
        row = s.scalar(
            select(ModelVersion).where(ModelVersion.model_name == name, ModelVersion.version == version)
        )
        if row is None:
            raise NotFound(f"{name}@v{version}: no such version")
        finished(row)
        if row.stage != stage:
            allowed_move(row, stage)
            move(s, row, stage, who)
            if scores:
                row.scores = {**(row.scores or {}), **scores}
            row.forced = row.forced or bool(forced)
        return row

    return in_transaction(engine, work)


def rollback(engine: Engine, name: str, who: str) -> tuple[ModelVersion, ModelVersion]:
    """The version that was production before the current one goes back to production; the current one
    is archived and marked rolled back, so it is never a rollback's target again (a second rollback goes
    one further back, not forth). Returns (archived, restored)."""

    def work(s: Session):
        versions = list(
            s.scalars(select(ModelVersion).where(ModelVersion.model_name == name).with_for_update())
        )
        if not versions:
            raise NotFound(f"no model named {name!r}")
        current = next((v for v in versions if v.stage == "production"), None)
        if current is None:
            raise Conflict(f"{name} has no production version to roll back")
        earlier = [
            v
            for v in versions
            if v.id != current.id
            and v.production_at
            and v.rolled_back_at is None
            and v.retired_at is None  # retired on purpose: never revived by a rollback
            and v.complete
        ]
        if not earlier:
            raise Conflict(f"{current.ref} is the only version of {name} that was ever in production")
        target = max(earlier, key=lambda v: v.production_at)
        current.rolled_back_at = now()
        move(s, target, "production", who)  # archives current first
        return current, target

    return in_transaction(engine, work)


def versions_of(engine: Engine, name: str) -> list[ModelVersion]:
    with Session(engine, expire_on_commit=False) as s:
        return list(
            s.scalars(
                select(ModelVersion).where(ModelVersion.model_name == name).order_by(ModelVersion.version)
            )
        )


def get_version(engine: Engine, name: str, version: int) -> ModelVersion:
    with Session(engine, expire_on_commit=False) as s:
        row = s.scalar(
            select(ModelVersion).where(ModelVersion.model_name == name, ModelVersion.version == version)
        )
    if row is None:
        raise NotFound(f"{name}@v{version}: no such version")
    return row


def finished(v: ModelVersion) -> ModelVersion:
    """v, if its files are all in the store: a half upload is never downloaded, served nor answered."""
    if v.deleted_at is not None:
        raise Gone(f"{v.ref}: its files were deleted by {v.deleted_by} at {v.deleted_at:%Y-%m-%d %H:%M}Z")
    if not v.complete:
        raise Conflict(f"{v.ref}: its upload is unfinished; promote run {v.run_id} again to finish it")
    return v


def models(engine: Engine) -> list[dict]:
    """Every model: how many versions, the latest, the production one."""
    with Session(engine) as s:
        rows = s.scalars(select(ModelVersion).order_by(ModelVersion.model_name, ModelVersion.version)).all()
        out: dict[str, dict] = {}
        for v in rows:
            m = out.setdefault(
                v.model_name,
                {
                    "name": v.model_name,
                    "versions": 0,
                    "latest": None,
                    "production": None,
                    "production_verdict": None,
                },
            )
            m["versions"] += 1
            m["latest"] = v.version
            if v.stage == "production":
                m["production"] = v.version
                m["production_verdict"] = v.verdict
        return list(out.values())


def as_dict(v: ModelVersion) -> dict:
    """A version as the API and `model NAME` show it."""
    iso = lambda t: t.isoformat(timespec="seconds") + "Z" if t else None  # noqa: E731  (naive UTC)
    return {
        "model": v.model_name,
        "version": v.version,
        "ref": v.ref,
        "stage": v.stage,
        "complete": v.complete,
        "run_id": v.run_id,
        "verdict": v.verdict,
        "forced": v.forced,
        "scores": v.scores,
        "adapter_sha256": v.adapter_sha256,
        "data_sha256": v.data_sha256,
        "config_sha256": v.config_sha256,
        "base_model": v.base_model,
        "note": v.note,
        "created_by": v.created_by,
        "created_at": iso(v.created_at),
        "stage_changed_by": v.stage_changed_by,
        "stage_changed_at": iso(v.stage_changed_at),
        "rolled_back": v.rolled_back_at is not None,
        "retired": {"by": v.retired_by, "at": iso(v.retired_at)} if v.retired_at else None,
        "deleted": {"by": v.deleted_by, "at": iso(v.deleted_at)} if v.deleted_at else None,
        "manifest_sha256": v.manifest_sha256,
    }
