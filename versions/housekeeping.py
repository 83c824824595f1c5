"""The store and the registry kept in agreement (issue 28, item 4): `versions check` lists what disagrees,
both ways, and `versions delete NAME@vN` removes a version's files for good, leaving its row as the record.

check, for the store ARTIFACT_STORE names:
- files without a row: a folder models/NAME/vN/ no registry row points at (another registry's, a
  restored database's, a deleted row's leftovers);
- rows without files: a complete version whose manifest or files are gone or changed (store.check);
- a deleted version whose files are still there (a delete cut short: run it again);
- an unfinished upload (a row without its manifest): said, not a problem of the store, as `promote`
  finishes it.
delete: refused for the production version (promote another, or retire it, first); otherwise the row is
marked deleted (and retired, archived: never served, downloaded or rolled back to again) and then every
object of its folder goes, the manifest first, so at no moment does it look complete. Run again, it
finishes a delete that was cut short. The A/B results and human ratings that name it keep their rows.
delete --evals-only: only eval/ goes (the held-out prompts and answers are the customer's conversations);
the version stays usable, its manifest rewritten without them (the new one first, so the version never
lists a file it lacks) and the registry's manifest sha256 moved to it. `prune_evals` does that for every
version past a retention age (EVAL_RETENTION_DAYS), the production version's included: its evaluation
is on its row (verdict, scores) either way.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from jobs.registry import now
from versions import registry, sides, store


def forget_copies(v: registry.ModelVersion) -> None:
    """This machine's cached copies of the version (sides.cached: one per manifest it had) go with what was
    deleted from the store: a copy in cache/ would keep the customer's conversations it was meant to drop."""
    for copy in (sides.cache_root() / v.model_name).glob(f"v{v.version}-*"):
        shutil.rmtree(copy, ignore_errors=True)


def all_versions(engine: Engine) -> list[registry.ModelVersion]:
    with Session(engine, expire_on_commit=False) as s:
        q = select(registry.ModelVersion).order_by(
            registry.ModelVersion.model_name, registry.ModelVersion.version
        )
        return list(s.scalars(q))


def folders(keys: list[str]) -> dict[str, int]:
    """models/NAME/vN folders in a key listing, with how many objects each holds."""
    found: dict[str, int] = {}
    for key in keys:
        parts = key.split("/")
        if len(parts) >= 4 and parts[0] == "models":
            folder = "/".join(parts[:3])
            found[folder] = found.get(folder, 0) + 1
    return found


def check(engine: Engine, st: store.Store) -> tuple[list[str], list[str]]:
    """(problems, notes) for the store st and the registry's versions in it."""
    root = st.url().rstrip("/")
    in_store = folders(st.keys("models/"))
    problems, notes = [], []
    mine = {}
    for v in all_versions(engine):
        folder = registry.folder(v.model_name, v.version)
        if v.store_url != f"{root}/{folder}":
            continue  # another store's version
        mine[folder] = v
        if v.deleted_at is not None:
            if folder in in_store:
                left = f"{in_store[folder]} file(s) are still in {root}/{folder}/"
                problems.append(f"{v.ref}: deleted, but {left} (deleting it again finishes it)")
        elif not v.complete:
            notes.append(
                f"{v.ref}: unfinished upload (`python -m versions promote {v.run_id} ...` finishes it)"
            )
        elif (state := store.check(st, folder, v.manifest_sha256)) != "ok":
            problems.append(f"{v.ref}: row without its files: {state}")
    for folder, count in sorted(in_store.items()):
        if folder not in mine:
            problems.append(f"{root}/{folder}/: {count} file(s) without a row in this registry")
    return problems, notes


def delete(engine: Engine, ref: str, who: str, say=print) -> registry.ModelVersion:
    v = registry.get_ref(engine, ref)
    if v.stage == "production":
        raise registry.Conflict(
            f"{v.ref} is {v.model_name}'s production version: promote another version to production, or "
            f"`python -m versions retire {v.ref}`, before deleting its files"
        )

    def mark(s: Session) -> registry.ModelVersion:
        row = s.get(registry.ModelVersion, v.id, with_for_update=True)
        if row.stage == "production":  # promoted since it was read
            raise registry.Conflict(f"{row.ref} is the production version now")
        if row.deleted_at is None:
            row.deleted_at, row.deleted_by = now(), who
        if row.retired_at is None:
            row.retired_at, row.retired_by = row.deleted_at, who
        if row.stage != "archived":
            row.stage, row.stage_changed_at, row.stage_changed_by = "archived", now(), who
            registry.mirror(s, row)
        return row

    row = registry.in_transaction(engine, mark)
    folder = registry.folder(row.model_name, row.version)
    st = store.store_of(row.store_url, folder)
    keys = st.keys(folder + "/")
    manifest = f"{folder}/{store.MANIFEST}"
    for key in sorted(keys, key=lambda k: k != manifest):  # the manifest first: never complete-looking
        st.delete(key)
    forget_copies(row)
    say(f"{row.ref}: deleted ({len(keys)} file(s) removed from {row.store_url}/); its row stays, marked")
    return row


EVAL_PREFIX = "eval/"


def drop_evals(engine: Engine, ref: str, who: str, say=print) -> registry.ModelVersion:
    """The version's eval/ files out of the store; the version itself kept, whole, by a new manifest."""
    v = registry.finished(registry.get_ref(engine, ref))
    folder = registry.folder(v.model_name, v.version)
    st = store.store_of(v.store_url, folder)
    raw = store.manifest_raw(st, folder)
    manifest = json.loads(raw)
    if hashlib.sha256(raw).hexdigest() != v.manifest_sha256:
        # Only a drop of ours cut short between its two writes is taken up again: a manifest that says so,
        # lists no eval/ file and pins the version's own adapter; anything else is a changed store.
        weights = manifest.get("files", {}).get("adapter/adapter_model.safetensors", {}).get("sha256")
        ours = "evals_dropped" in manifest and weights == v.adapter_sha256
        if not ours or any(n.startswith(EVAL_PREFIX) for n in manifest.get("files", {})):
            where = f"{st.url(folder)}/{store.MANIFEST}"
            raise store.Corrupt(f"{where}: its sha256 is not the one the registry recorded")
        return finish_drop(engine, v, st, folder, raw, st.keys(f"{folder}/{EVAL_PREFIX}"), say)
    gone = sorted(n for n in manifest["files"] if n.startswith(EVAL_PREFIX))
    if not gone:
        say(f"{v.ref}: no evaluation files to drop")
        return v
    kept = {n: f for n, f in manifest["files"].items() if not n.startswith(EVAL_PREFIX)}
    meta = {k: val for k, val in manifest.items() if k not in ("files", "format")}
    meta["evals_dropped"] = {"by": who, "at": now().isoformat(timespec="seconds") + "Z", "files": len(gone)}
    body = store.manifest_bytes(meta, kept)
    digest = hashlib.sha256(body).hexdigest()
    with tempfile.TemporaryDirectory() as tmp:  # the new manifest first: it lists only files still there
        (Path(tmp) / store.MANIFEST).write_bytes(body)
        st.put(Path(tmp) / store.MANIFEST, f"{folder}/{store.MANIFEST}", digest)
    return finish_drop(engine, v, st, folder, body, [f"{folder}/{n}" for n in gone], say)


def finish_drop(engine, v, st, folder: str, body: bytes, keys: list[str], say) -> registry.ModelVersion:
    """The registry on the new manifest, then the eval/ objects deleted."""
    digest = hashlib.sha256(body).hexdigest()

    def move(s: Session) -> registry.ModelVersion:
        row = s.get(registry.ModelVersion, v.id, with_for_update=True)
        row.manifest_sha256 = digest
        return row

    row = registry.in_transaction(engine, move)
    for key in keys:
        st.delete(key)
    forget_copies(row)
    say(
        f"{row.ref}: {len(keys)} evaluation file(s) dropped from the store; the version is whole without them"
    )
    return row


def prune_evals(engine: Engine, days: float, who: str, say=print) -> list[str]:
    """drop_evals for every complete version promoted more than `days` ago; the refs pruned."""
    cutoff = now() - timedelta(days=days)
    pruned = []
    for v in all_versions(engine):
        if v.complete and v.deleted_at is None and v.created_at < cutoff:
            before = v.manifest_sha256
            if drop_evals(engine, v.ref, who, say).manifest_sha256 != before:
                pruned.append(v.ref)
    return pruned


def remove_orphan(engine: Engine, st: store.Store, folder: str, say=print) -> int:
    """A folder of files no row of this registry points at (`check` lists them), out of the store: named
    one by one, never swept (on a store two registries share, the other's versions look like orphans
    from here). Refused for a folder a row points at, deleted or not (`delete NAME@vN` is for those)."""
    parts = folder.strip("/").split("/")
    if len(parts) != 3 or parts[0] != "models" or not parts[2].startswith("v"):
        raise registry.VersionError(f"{folder!r}: expected a version folder, models/NAME/vN")
    folder = "/".join(parts)
    root = st.url().rstrip("/")
    owner = next((v for v in all_versions(engine) if v.store_url == f"{root}/{folder}"), None)
    if owner is not None:
        raise registry.Conflict(f"{folder} is {owner.ref}'s: `python -m versions delete {owner.ref}` instead")
    keys = st.keys(folder + "/")
    for key in sorted(keys, key=lambda k: not k.endswith("/" + store.MANIFEST)):  # the manifest first
        st.delete(key)
    say(f"{root}/{folder}/: {len(keys)} file(s) without a row removed")
    return len(keys)
