"""A/B results in the registry (table ab_tests, migration 0006): one row per A/B, found from either side.

A side that was a version (NAME@vN) is linked by the version's id; a side given as a run id by its run, so
the A/B shows on every version made from that run (the same adapter bytes). The row holds ab.json whole
(`result`) beside the columns a list needs; the files are in the folder `path` names.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from evals.verdict import loses
from jobs.registry import Base, now
from versions.registry import ModelVersion, in_transaction


class ABTest(Base):
    __tablename__ = "ab_tests"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    a_ref: Mapped[str] = mapped_column(String(128))
    a_run_id: Mapped[str] = mapped_column(ForeignKey("training_jobs.id"), index=True)
    a_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), nullable=True)
    b_ref: Mapped[str] = mapped_column(String(128))
    b_run_id: Mapped[str] = mapped_column(ForeignKey("training_jobs.id"), index=True)
    b_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), nullable=True)
    data_sha256: Mapped[str] = mapped_column(String(64))
    n_prompts: Mapped[int] = mapped_column(Integer)
    win_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    ci_low: Mapped[float | None] = mapped_column(Float, nullable=True)
    ci_high: Mapped[float | None] = mapped_column(Float, nullable=True)
    a_heldout_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    b_heldout_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    general: Mapped[dict | None] = mapped_column(
        JSON(none_as_null=True), nullable=True
    )  # SQL NULL, not 'null'
    judge_model: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[dict] = mapped_column(JSON)
    path: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)


def record(engine: Engine, result: dict, path: str) -> None:
    """ab.json's figures as a row (after its folder is whole: a row never points at half a folder)."""
    a, b = result["a"], result["b"]
    ci = result.get("ci95") or [None, None]
    row = ABTest(
        id=result["id"],
        a_ref=a["ref"],
        a_run_id=a["run_id"],
        a_version_id=a.get("version_id"),
        b_ref=b["ref"],
        b_run_id=b["run_id"],
        b_version_id=b.get("version_id"),
        data_sha256=result["data_sha256"],
        n_prompts=result["n_prompts"],
        win_rate=result.get("win_rate"),
        ci_low=ci[0],
        ci_high=ci[1],
        a_heldout_loss=a.get("heldout_loss"),
        b_heldout_loss=b.get("heldout_loss"),
        general=result.get("general"),
        judge_model=(result.get("judge") or {}).get("model"),
        result=result,
        path=path,
        created_by=result["created_by"],
    )
    in_transaction(engine, lambda s: s.add(row))


def summary(t: ABTest, side: str) -> dict:
    """One A/B as a version's list shows it: which side it was, the other side, B's win rate over A."""
    iso = t.created_at.isoformat(timespec="seconds") + "Z"
    return {
        "id": t.id,
        "side": side,
        "a": t.a_ref,
        "b": t.b_ref,
        "other": t.b_ref if side == "A" else t.a_ref,
        "n_prompts": t.n_prompts,
        "win_rate_b_over_a": t.win_rate,
        "ci95": [t.ci_low, t.ci_high] if t.win_rate is not None else None,
        "heldout_loss": {"A": t.a_heldout_loss, "B": t.b_heldout_loss},
        "general": t.general,
        "judge_model": t.judge_model,
        "created_by": t.created_by,
        "created_at": iso,
        "path": t.path,
    }


def for_versions(engine: Engine, versions: list[ModelVersion]) -> dict[int, list[dict]]:
    """Each version's A/B results (by version id), newest first."""
    if not versions:
        return {}
    ids, runs = [v.id for v in versions], [v.run_id for v in versions]
    with Session(engine) as s:
        tests = s.scalars(
            select(ABTest)
            .where(
                or_(
                    ABTest.a_version_id.in_(ids),
                    ABTest.b_version_id.in_(ids),
                    ABTest.a_run_id.in_(runs),
                    ABTest.b_run_id.in_(runs),
                )
            )
            .order_by(ABTest.created_at.desc(), ABTest.id.desc())
        ).all()
        out: dict[int, list[dict]] = {v.id: [] for v in versions}
        for t in tests:
            for v in versions:
                for side, version_id, run_id in (
                    ("A", t.a_version_id, t.a_run_id),
                    ("B", t.b_version_id, t.b_run_id),
                ):
                    if version_id == v.id or (version_id is None and run_id == v.run_id):
                        out[v.id].append(summary(t, side))
        return out


def against(engine: Engine, run_id: str, other: ModelVersion) -> dict | None:
    """The newest A/B between this run (either side) and the version `other` (by its id, or its run when
    the side was given as a run), from this run's side: {"ab", "other", "win_rate", "ci95", "loses"};
    "loses" when its win rate's 95% interval lies below 0.5. None when they were never compared."""
    ours_a = (ABTest.a_run_id == run_id) & (
        (ABTest.b_version_id == other.id)
        | ((ABTest.b_version_id.is_(None)) & (ABTest.b_run_id == other.run_id))
    )
    ours_b = (ABTest.b_run_id == run_id) & (
        (ABTest.a_version_id == other.id)
        | ((ABTest.a_version_id.is_(None)) & (ABTest.a_run_id == other.run_id))
    )
    with Session(engine) as s:
        t = s.scalars(
            select(ABTest).where(or_(ours_a, ours_b)).order_by(ABTest.created_at.desc(), ABTest.id.desc())
        ).first()
    if t is None:
        return None
    rate, lo, hi = t.win_rate, t.ci_low, t.ci_high  # B over A
    if t.b_run_id != run_id and None not in (rate, lo, hi):
        rate, lo, hi = 1 - rate, 1 - hi, 1 - lo  # this run was A
    known = None not in (rate, lo, hi)
    return {
        "ab": t.id,
        "other": other.ref,
        "win_rate": round(rate, 4) if known else None,
        "ci95": [round(lo, 4), round(hi, 4)] if known else None,
        "loses": known and loses((lo, hi)),
    }
