"""What `ab` and `serve` take: a version (NAME@vN) or a run id, as an adapter folder on this machine.

Two steps, so that a refusal costs nothing: `lookup` reads what the registry (a version) or the run folder
(a run) says of it, without touching the store; `materialize` then finds its files: a version's run folder
when it is here and holds the very adapter promoted (same sha256), else the version downloaded from the
store into a local cache, every sha256 checked (store.download). A cached copy is used again only if every
file still matches the manifest it came with, and that manifest is the version's (its adapter sha256).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from sqlalchemy.engine import Engine

from jobs.runfolder import RUN_ID, sha256_file
from versions import registry, store


@dataclass
class Side:
    ref: str  # as asked: NAME@vN or a run id
    run_id: str
    base_model: str
    adapter_sha256: str
    data_sha256: str | None
    version: registry.ModelVersion | None = None
    folder: Path | None = None  # the run folder, or the version's downloaded folder (after materialize)
    lineage: dict = field(default_factory=dict)  # run.json, when the run folder is here

    @property
    def adapter_dir(self) -> Path:
        return self.folder / ("adapter" if self.downloaded else "output")

    @property
    def downloaded(self) -> bool:
        return self.folder is not None and (self.folder / store.MANIFEST).is_file()

    @property
    def served_name(self) -> str:
        """Its model name on the OpenAI API of `just serve`: elena-morales-v3, or brightrun-RUN."""
        return version_name(self.version) if self.version is not None else f"brightrun-{self.run_id}"

    def config(self) -> dict:
        path = self.folder / "config.yaml"
        return (yaml.safe_load(path.read_text("utf-8")) or {}) if path.is_file() else {}


def version_name(v: registry.ModelVersion) -> str:
    """A version's model name on the OpenAI API of `just serve` and the test endpoint: elena-morales-v3."""
    return f"{v.model_name}-v{v.version}"


def cache_root() -> Path:
    """Where versions downloaded to be used here are kept (ab, serve, the API's test endpoint):
    VERSIONS_CACHE, default cache/versions/."""
    return Path(os.environ.get("VERSIONS_CACHE") or store.ROOT / "cache" / "versions")


def cache_dir(v: registry.ModelVersion) -> Path:
    """The version's folder in the cache; its manifest's sha256 in the name, so another upload of the same
    NAME@vN (a store that was rebuilt) never passes for this one."""
    return cache_root() / v.model_name / f"v{v.version}-{v.manifest_sha256[:16]}"


def lookup(engine: Engine, runs_dir: Path | str, ref: str) -> Side:
    """The side's identity, from the registry (NAME@vN) or its run folder (a run id); nothing downloaded.
    NotFound / Conflict / VersionError name the ref."""
    if "@" in ref:
        # NAME@production / NAME@testing resolve now; the side is recorded as what they resolved to.
        v = registry.finished(registry.get_ref(engine, ref))
        return Side(v.ref, v.run_id, v.base_model, v.adapter_sha256, v.data_sha256, version=v)
    if not RUN_ID.fullmatch(ref):
        raise registry.VersionError(
            f"{ref!r}: expected NAME@vN (e.g. elena-morales@v3), NAME@production, NAME@testing or a run id"
        )
    run_dir = Path(runs_dir) / ref
    adapter = run_dir / "output" / "adapter_model.safetensors"
    if not (run_dir / "output" / "adapter_config.json").is_file() or not adapter.is_file():
        raise registry.NotFound(
            f"{ref}: no run folder with an adapter in {runs_dir}/ (see `just runs`); a version is NAME@vN"
        )
    lineage = (
        json.loads((run_dir / "run.json").read_text("utf-8")) if (run_dir / "run.json").is_file() else {}
    )
    manifest = run_dir / "data-manifest.json"
    data = (lineage.get("data") or {}).get("manifest_sha256") or (
        sha256_file(manifest) if manifest.is_file() else None
    )
    side = Side(ref, ref, "?", sha256_file(adapter), data, folder=run_dir, lineage=lineage)
    side.base_model = str(side.config().get("base_model") or "?")
    return side


def materialize(side: Side, runs_dir: Path | str, prefer_store: bool = False, say=print) -> Side:
    """side.folder set: the run folder (a run; a version whose run folder holds its adapter, unless
    prefer_store) or the version downloaded into the cache."""
    v = side.version
    if v is None:
        return side
    side.folder, downloaded = local_copy(v, runs_dir, prefer_store, say)
    if not downloaded:
        run_json = side.folder / "run.json"
        side.lineage = json.loads(run_json.read_text("utf-8")) if run_json.is_file() else {}
    return side


def local_copy(
    v: registry.ModelVersion, runs_dir: Path | str, prefer_store: bool = False, say=print
) -> tuple[Path, bool]:
    """(folder, downloaded): the version's run folder when it holds the very adapter promoted (its adapter
    in output/), else its copy in the cache (adapter/). One rule for ab, serve and the test endpoint."""
    run_dir = Path(runs_dir) / v.run_id
    if not prefer_store and same_file(run_dir / "output" / "adapter_model.safetensors", v.adapter_sha256):
        # Every adapter file, not the weights alone: a changed adapter_config.json (rank, alpha, modules)
        # or tokenizer file is another model. Checked against the version's manifest in the store.
        changed = [
            name
            for name, want in sorted(version_manifest(v)["files"].items())
            if name.startswith("adapter/")
            and not same_file(run_dir / "output" / name.removeprefix("adapter/"), want["sha256"])
        ]
        if not changed:
            return run_dir, False
        say(f"{v.ref}: the run folder's {', '.join(changed)} differ from the version's; the store's copy")
    return cached(v, say), True


@functools.lru_cache(maxsize=64)
def _manifest(store_url: str, folder: str, manifest_sha256: str) -> dict:
    return store.read_manifest(store.store_of(store_url, folder), folder, manifest_sha256)


def version_manifest(v: registry.ModelVersion) -> dict:
    """The version's manifest from the store, checked by its sha256 (once per version: it never changes)."""
    return _manifest(v.store_url, registry.folder(v.model_name, v.version), v.manifest_sha256)


def cached(v: registry.ModelVersion, say=print) -> Path:
    """The version's files in the local cache, downloaded (sha256-checked) unless a whole copy is there."""
    dest = cache_dir(v)
    if dest.is_dir():
        problem = damaged(dest, v)
        if problem is None:
            say(f"{v.ref}: from the cache, {dest}/ (every sha256 checked)")
            return dest
        say(f"{v.ref}: the cached copy is damaged ({problem}); downloading it again")
        shutil.rmtree(dest, ignore_errors=True)
    folder = registry.folder(v.model_name, v.version)
    try:
        store.download(store.store_of(v.store_url, folder), folder, v.manifest_sha256, dest, say=say)
    except store.StoreError:
        # store.download lands by one rename into a folder that must not exist: a concurrent caller (the
        # service answers requests in threads) may have put the same version there first.
        if not dest.is_dir() or damaged(dest, v) is not None:
            raise
    return dest


@functools.lru_cache(maxsize=64)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    return sha256_file(Path(path))  # keyed by mtime and size: a changed file is hashed again


def same_file(path: Path, sha256: str) -> bool:
    """Whether path holds those bytes, hashed once per change of the file (the service asks per request)."""
    if not path.is_file():
        return False
    st = path.stat()
    return _sha256(str(path), st.st_mtime_ns, st.st_size) == sha256


def damaged(dest: Path, v: registry.ModelVersion) -> str | None:
    """What is wrong with a cached copy of v, or None when every file matches the version's manifest."""
    # The manifest first, by the sha256 the registry recorded: a copy edited together with its manifest
    # (config and manifest both changed) is still caught.
    if not same_file(dest / store.MANIFEST, v.manifest_sha256):
        return "its manifest is not the version's"
    try:
        manifest = json.loads((dest / store.MANIFEST).read_text("utf-8"))
    except (OSError, ValueError):
        return "no readable manifest"
    if manifest.get("adapter_sha256") != v.adapter_sha256:
        return "another adapter"
    for name, want in sorted(manifest.get("files", {}).items()):
        if not same_file(dest / name, want["sha256"]):
            return f"{name} differs"
    return None
