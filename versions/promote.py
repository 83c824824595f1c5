"""Promotion: a finished, evaluated run becomes version N of a named model, with its files in the store.

Steps: the run and its evaluation are checked (a verdict other than pass, i.e. fail, incomplete or none, is
refused unless forced, and a forced promotion says so on the version for good); the version's number is
reserved in the registry; the files go to the store, the manifest last; the version is completed and moved
to its stage. Promoting the same run to the same model again returns that version: it finishes an
interrupted upload, or moves the stage when one is asked for.
"""

from __future__ import annotations

import getpass
import json
import os
import tempfile
from pathlib import Path

import yaml
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from jobs.registry import ModelArtifact, TrainingJob
from jobs.runfolder import ADAPTER, RUN_ID, plain_file, sha256_file, version_files, yaml_load
from versions import card, registry, store

# Only a passed evaluation promotes by itself: "incomplete" (a gate not run, e.g. no judge) is evidence
# missing, as much as no evaluation at all.
PROMOTES = "pass"
MAX_NOTE = 2000
MANIFEST_FIELDS = (
    "model_name",
    "version",
    "run_id",
    "adapter_sha256",
    "data_sha256",
    "config_sha256",
    "base_model",
    "verdict",
    "forced",
)


def who(by: str | None) -> str:
    name = by or os.environ.get("USER") or os.environ.get("LOGNAME")
    if not name:
        try:
            name = getpass.getuser()  # the account's name, where the environment names none (a container)
        except (KeyError, OSError):
            name = "unknown"
    if len(name) > 128 or not name.isprintable():
        raise registry.VersionError("--by: at most 128 printable characters")
    return name


def run_files(run_id: str, run_dir: Path) -> list[tuple[str, Path]]:
    """What a version holds from a run folder (jobs/runfolder.py version_files); a run folder without its
    adapter or config is a Conflict naming what is missing."""
    files, missing = version_files(run_dir)
    if missing:
        raise registry.Conflict(
            f"run {run_id}: nothing to promote ({', '.join(missing)} missing in its run folder, and no "
            "copy in the artifact store; a pod run: `just fetch RUN` first)"
        )
    return files


def verdict_of(job: TrainingJob, run_dir: Path) -> tuple[str | None, dict | None]:
    """The registry's verdict and figures; eval/verdict.json when the row has none (evaluated elsewhere)."""
    if job.verdict:
        return job.verdict, job.evaluation
    path = run_dir / "eval" / "verdict.json"
    if path.is_file():
        data = json.loads(path.read_text("utf-8"))
        return data.get("verdict"), {"verdict": data.get("verdict"), "gates": data.get("gates")}
    return None, None


def identity(s: Session, job: TrainingJob, run_dir: Path) -> dict:
    """What the version is, fixed at promotion: sha256s of adapter, data and config, and the base model."""
    lineage = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    adapter = sha256_file(run_dir / "output" / "adapter_model.safetensors")
    recorded = (lineage.get("adapter") or {}).get("sha256")
    if recorded and recorded != adapter:
        raise registry.Conflict(
            f"run {job.id}: output/ holds another adapter than the run recorded in run.json"
        )
    manifest = run_dir / "data-manifest.json"
    data = (lineage.get("data") or {}).get("manifest_sha256") or (
        sha256_file(manifest) if manifest.is_file() else None
    )
    config = (lineage.get("config") or {}).get("sha256") or sha256_file(run_dir / "config.yaml")
    artifact = s.scalar(
        select(ModelArtifact).where(ModelArtifact.job_id == job.id, ModelArtifact.artifact_type == "adapter")
    )
    base = artifact.base_model if artifact else (yaml_load(run_dir / "config.yaml") or {}).get("base_model")
    return {
        "adapter_sha256": adapter,
        "data_sha256": data,
        "config_sha256": config,
        "base_model": str(base or "?"),
    }


def against_production(engine: Engine, model: str, run_id: str, force: bool, scores, say) -> dict | None:
    """Into production, a run must not lose to the version it replaces (issue 27, item 5): the newest A/B
    between them (versions/ab.py) is read from this run's side; a loss (its win rate's 95% interval below
    0.5) is refused unless forced. Never compared: allowed, said, and recorded as such with the scores."""
    from versions import abtests

    current = next((v for v in registry.versions_of(engine, model) if v.stage == "production"), None)
    if current is None or current.run_id == run_id:
        return scores
    found = abtests.against(engine, run_id, current)
    if found is None:
        say(
            f"note: run {run_id} was never compared with {current.ref}, in production now: "
            f"`python -m versions ab {current.ref} {run_id}` says whether it loses"
        )
        found = {"ab": None, "other": current.ref}
    elif found["loses"] and not force:
        raise registry.Conflict(
            f"run {run_id} lost its A/B against {current.ref}, in production now: win rate "
            f"{found['win_rate']:.2f}, 95% interval [{found['ci95'][0]:.2f}, {found['ci95'][1]:.2f}] (A/B "
            f"{found['ab']}); --force promotes it anyway, and the version records that"
        )
    return {**(scores or {}), "vs_production": found}


def promote(
    engine: Engine,
    runs_dir: str | Path,
    run_id: str,
    model: str,
    stage: str | None = None,
    note: str | None = None,
    force: bool = False,
    by: str | None = None,
    store_url: str | None = None,
    say=print,
) -> registry.ModelVersion:
    registry.check_name(model)
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise registry.VersionError(f"run {run_id!r}: a run id is 1-64 of 0-9 A-Z a-z . _ -")
    if stage is not None and stage not in registry.PROMOTE_STAGES:
        raise registry.VersionError(f"stage {stage!r}: one of {', '.join(registry.PROMOTE_STAGES)}")
    if note is not None and (len(note) > MAX_NOTE or not note.replace("\n", " ").isprintable()):
        raise registry.VersionError(f"note: at most {MAX_NOTE} printable characters")
    person = who(by)
    run_dir = Path(runs_dir) / run_id
    if not plain_file(run_dir / "output" / ADAPTER[0]):
        from jobs.pod import stored

        stored.fill_run_folder(run_dir, say)  # a pod run never fetched: its copy in the store, if any

    # 1. The run: finished, its adapter there, its evaluation good enough (or forced, and recorded).
    with Session(engine) as s:
        job = s.get(TrainingJob, run_id)
        if job is None:
            raise registry.NotFound(f"run {run_id}: not in the registry")
        if job.status != "completed":
            raise registry.Conflict(f"run {run_id}: status {job.status}; only a completed run is promoted")
        files = run_files(run_id, run_dir)
        try:
            verdict, scores = verdict_of(job, run_dir)
            fields = identity(s, job, run_dir)
        except (OSError, ValueError, yaml.YAMLError) as exc:  # a damaged run.json, verdict.json, config.yaml
            raise registry.Conflict(
                f"run {run_id}: its run folder could not be read ({type(exc).__name__})"
            ) from None
    if verdict != PROMOTES and not force:
        why = {
            None: "has no evaluation verdict (`just eval RUN` first)",
            "fail": "failed its evaluation",
            "incomplete": "has an incomplete evaluation (a gate was not run: `just verdict RUN`)",
            "insufficient": "has too few held-out conversations or items for a verdict (`just verdict RUN`)",
            "inconclusive": "has an inconclusive evaluation (an interval straddles its bar: hold out more)",
            "judge_unreliable": "was judged by a judge that failed its own checks (another judge model)",
        }.get(verdict, f"has the verdict {verdict!r}")
        raise registry.Conflict(
            f"run {run_id} {why}; --force promotes it anyway, and the version records that"
        )
    lost = False  # to the production version it replaces, in their newest A/B
    if stage == "production":
        scores = against_production(engine, model, run_id, force, scores, say)
        lost = bool(((scores or {}).get("vs_production") or {}).get("loses"))
    fields |= {
        "verdict": verdict,
        "scores": scores,
        "forced": force and (verdict != PROMOTES or lost),
        "note": note,
    }

    # 2. The number: this run's version of the model if it has one, else the next.
    root = store.open_store(store_url).url()
    row = registry.reserve(engine, model, run_id, root, fields, person)
    if row.deleted_at is not None:  # its files were deleted on purpose: never quietly "promoted" again
        registry.finished(row)  # raises Gone, saying who deleted them and when
    if row.adapter_sha256 != fields["adapter_sha256"]:
        raise registry.Conflict(
            f"{row.ref} was made from run {run_id} with another adapter; versions are immutable"
        )
    if row.complete:
        say(f"{row.ref} is run {run_id} already ({row.stage})")
        if stage is not None and stage != row.stage:
            added = {"vs_production": scores["vs_production"]} if "vs_production" in (scores or {}) else None
            row = registry.set_stage(engine, model, row.version, stage, person, added, force and lost)
            say(f"{row.ref}: stage {row.stage}")
        return row

    # 3. The files to ARTIFACT_STORE (an unfinished version moves there if it began elsewhere), manifest last.
    folder = registry.folder(model, row.version)
    if row.store_url != f"{root.rstrip('/')}/{folder}":
        say(f"{row.ref}: its unfinished upload began at {row.store_url}; it goes to {root} now")
        row = registry.relocate(engine, row.id, f"{root.rstrip('/')}/{folder}")
    say(f"{row.ref}: run {run_id}, verdict {row.verdict or 'none'}{' (forced)' if row.forced else ''}")
    # The row's own fields (a resumed upload writes the manifest the first attempt would have written).
    meta = {key: getattr(row, key) for key in MANIFEST_FIELDS}
    scratch = tempfile.TemporaryDirectory()
    readme = Path(scratch.name) / "README.md"  # the model card (versions/card.py), from the row and config
    readme.write_text(card.card(row, yaml_load(run_dir / "config.yaml") or {}), "utf-8")
    try:
        files = [*files, ("README.md", readme)]
        digest, _ = store.upload(store.store_of(row.store_url, folder), folder, files, meta, say)
    except store.Taken as exc:  # another registry's version in the same place: retrying cannot finish it
        raise registry.Conflict(f"{exc}; {row.ref} stays unfinished in this registry") from None
    except store.StoreError as exc:
        raise store.StoreError(
            f"{exc}; {row.ref} stays unfinished: the same promote command finishes it"
        ) from None
    finally:
        scratch.cleanup()

    # 4. Complete, in its stage (production: the previous production version archived in the same step).
    row = registry.complete(engine, row.id, digest, stage or "stored", person)
    say(f"{row.ref}: complete, stage {row.stage}, manifest sha256 {digest[:12]}")
    return row
