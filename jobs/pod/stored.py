"""A completed pod run's files in the artifact store, sent from the pod itself, so that an adapter exists
off the pod before the pod (and a pod's own volume) is gone.

On the pod (docker/entrypoint.sh, after the job and before its exit mark; again on a restarted container):
    python -m jobs.pod.stored RUNS_DIR RUN_ID
uploads what promotion takes from a run folder (jobs/runfolder.py version_files: adapter/, config.yaml,
data-manifest.json, report.html, eval/), its run.json and logs/train.log, and adapter.zip (the adapter's
files in one zip: what the customer's "Download LoRA adapters" button signs, its key the completed event's
lora_artifact_path), under runs/<job id>/ in ARTIFACT_STORE, with versions/store.py's upload: every
object's sha256 checked, the manifest last, so a restarted container sends only what is missing and a
complete upload sends nothing. Then it writes runs/RUN_ID/stored.json on the volume: the folder, the
manifest's and the adapter's sha256s, the zip's key in the bucket, sha256 and size, or the error. A failed
upload changes nothing about the run (completed, its adapter still on the volume): it is said, and the
marker says it. A bucket's file-size limit (HTTP 413 EntityTooLarge) is said as such, with the setting.

A local run (jobs/run.py execute) with ARTIFACT_STORE set calls the same upload_run once it completed,
before its completed event, which then names the zip's key; a pod's launcher (jobs/pod/follow.py) does the
same with the pod's marker.

Where the store is (ARTIFACT_STORE, AWS_ENDPOINT_URL) and its keys reach the pod as secrets, by name
(jobs/pod/launch.py): nothing here writes them, to the volume or to the pod's log. The marker names the
folder relative to the store (the launcher, which has the same environment, resolves it) and the zip's
key in the bucket, which holds the store's prefix but never the bucket, the endpoint or a key.

On the launcher: `read_marker` (the follower at the run's end), `fill_run_folder` (`promote` of a pod run
whose adapter was never fetched: the store's copy, every sha256 checked, into runs/RUN/ as a fetch would).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path

from jobs import registry
from jobs.runfolder import plain_file, sha256_file, version_files, write_json

MARKER = "stored.json"
ZIP = "adapter.zip"  # the adapter in one file, beside the folder's copy: runs/<job id>/adapter.zip
LOG = "logs/train.log"
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold: no clock in the zip's bytes
# Where the store is and how to get in: secrets, passed to the pod by name and never written down there.
STORE_VARS = (
    "ARTIFACT_STORE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)


def folder(job_id: str) -> str:
    return f"runs/{job_id}"


def pod_vars() -> list[str]:
    """The store's variables a pod gets, from this environment: none unless ARTIFACT_STORE is an S3 URL
    (a folder here is not a folder on the pod)."""
    if not os.environ.get("ARTIFACT_STORE", "").startswith("s3://"):
        return []
    return [name for name in STORE_VARS if os.environ.get(name)]


def redact(text: str) -> str:
    """text with the store's location and keys replaced by their variables' names (the pod's log and the
    volume are read by more people than the bucket's owner)."""
    for name in STORE_VARS:
        value = os.environ.get(name, "").rstrip("/")
        if len(value) >= 4 and name not in ("AWS_REGION", "AWS_DEFAULT_REGION"):
            text = text.replace(value, f"${name}")
    return text


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# -- on the pod ------------------------------------------------------------------------------------------


def zip_adapter(files: list[tuple[str, Path]], dest: Path) -> Path:
    """The adapter's files (version_files' adapter/...: weights, adapter_config.json, the tokenizer and chat
    template saved beside them) at the root of one zip, the same bytes for the same files: names sorted,
    one fixed time and mode, no extra fields. STORED, not DEFLATED: the weights are nearly all the bytes,
    and deflate saves a smoke adapter's only 9% in fp32 (24% cast to bf16) at ~25 MB/s of a billed pod's
    CPU (~16 s for a 70B rank-16 adapter's 0.4 GB); stored bytes also do not depend on the zlib build, so
    a zip made again (a restarted container, another machine) has the same sha256 and the store skips it."""
    members = sorted(
        (name.removeprefix("adapter/"), path) for name, path in files if name.startswith("adapter/")
    )
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zf:
        for name, path in members:
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3  # Unix, wherever it is made
            info.external_attr = 0o100644 << 16
            info.file_size = path.stat().st_size  # zip64 or not decided by the size alone
            with path.open("rb") as src, zf.open(info, "w") as out:
                shutil.copyfileobj(src, out, 1 << 20)
    return dest


def object_key(target, key: str) -> str:
    """key (under the store) as the bucket names it: the store's prefix included, no bucket, no s3://; for
    a folder store, the path under its root."""
    from versions import store

    return target.key(key) if isinstance(target, store.S3Store) else key


def upload_errors() -> tuple[type[BaseException], ...]:
    """What an upload may raise that is the upload failing, never the caller's crash: the store's own errors
    (versions/store.py turns boto's into StoreError inside each call) and, for what happens outside a call
    (the client made from a bad endpoint), botocore's and boto3's own."""
    from versions import store
    from versions.registry import VersionError

    errors: tuple[type[BaseException], ...] = (store.StoreError, VersionError, OSError, ValueError)
    try:
        from boto3.exceptions import Boto3Error  # S3UploadFailedError, RetriesExceededError
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return errors
    return (*errors, Boto3Error, BotoCoreError, ClientError)


def upload_run(run_dir: Path, job_id: str, say=print, completed: bool = False) -> dict | None:
    """The completed run's files to ARTIFACT_STORE under runs/<job_id>/, adapter.zip among them; the marker
    written and returned. None: nothing to do (no store, the run not completed). completed: the caller saw
    the run complete and its row does not say so yet (jobs/run.py, before its completed event)."""
    from versions import store

    if not os.environ.get("ARTIFACT_STORE"):
        return None
    if not completed:
        job = registry.get_job(run_dir.name)
        if job is None or job.status != "completed":
            return None
    marker = run_dir / MARKER
    done = json.loads(marker.read_text()) if marker.is_file() else {}
    if done.get("manifest_sha256"):
        say(f"store: {done['folder']}/ is already complete (manifest sha256 {done['manifest_sha256'][:12]})")
        return done
    where = folder(job_id)
    record = {"folder": where, "at": now()}
    on = "the volume" if os.environ.get("RUNPOD_POD_ID") else "this machine"
    try:
        files, missing = version_files(run_dir)
        if missing:  # said as promote says it; caught below with the store's own errors
            raise ValueError(f"{', '.join(missing)} missing in the run folder")
        files += [("run.json", run_dir / "run.json")]
        log = plain_file(run_dir / LOG)  # the customer's training_log_path
        files += [(LOG, run_dir / LOG)] if log else []
        adapter = sha256_file(run_dir / "output" / "adapter_model.safetensors")
        meta = {"run_id": job_id, "volume_run_id": run_dir.name, "adapter_sha256": adapter}
        target = store.open_store()
        with tempfile.TemporaryDirectory(prefix="brightrun-zip-") as tmp:
            zipped = zip_adapter(files, Path(tmp) / ZIP)
            files.append((ZIP, zipped))
            digest, _ = store.upload(target, where, files, meta, lambda line: say(redact(line)))
            zipped_sha256, zipped_bytes = sha256_file(zipped), zipped.stat().st_size
        record |= {"manifest_sha256": digest, "adapter_sha256": adapter, "files": len(files)}
        record |= {
            "zip_key": object_key(target, f"{where}/{ZIP}"),
            "zip_sha256": zipped_sha256,
            "zip_bytes": zipped_bytes,
        }
        if log:
            record["log_key"] = object_key(target, f"{where}/{LOG}")
        say(f"store: the adapter is in the store at $ARTIFACT_STORE/{where}/ (manifest sha256 {digest[:12]})")
        say(f"store: adapter.zip ({store.size(zipped_bytes)}) is {record['zip_key']} in the bucket")
    # The store refusing or failing, files missing in the run folder: the run stays completed, its adapter
    # where it is; said here, kept in the marker for the launcher.
    except upload_errors() as exc:
        record["error"] = redact(f"{type(exc).__name__}: {exc}")
        say(
            f"warning: the upload to the artifact store failed ({record['error']}); the run is completed "
            f"and its adapter stays on {on} (runs/{run_dir.name}/output/); "
            + (
                "a restarted container tries again"
                if on == "the volume"
                else f"`python -m jobs.pod.stored RUNS_DIR {run_dir.name}` tries again"
            )
        )
    write_json(marker, record)
    return record


def main(argv: list[str]) -> int:
    """`python -m jobs.pod.stored RUNS_DIR RUN_ID` (docker/entrypoint.sh): 0 stored or nothing to do, 1 the
    upload failed (the entrypoint says so and goes on), 2 bad arguments."""
    if len(argv) != 2:
        print("usage: python -m jobs.pod.stored RUNS_DIR RUN_ID", file=sys.stderr)
        return 2
    run_dir = Path(argv[0]) / argv[1]
    if not (run_dir / "run.json").is_file():
        print(f"stored: {run_dir}: not a run folder", file=sys.stderr)
        return 2
    job_id = os.environ.get("BRIGHTRUN_JOB_ID") or argv[1]
    record = upload_run(run_dir, job_id, say=lambda line: print(line, file=sys.stderr, flush=True))
    return 1 if record and record.get("error") else 0


# -- on the launcher -------------------------------------------------------------------------------------


def read_marker(volume, vrun: str) -> dict | None:
    """The pod's stored.json for its run, or None (no store, not written yet, or the volume unreadable)."""
    from jobs.pod import volume as vol

    with tempfile.TemporaryDirectory() as tmp:
        try:
            volume.get(f"runs/{vrun}/{MARKER}", Path(tmp) / MARKER)
            return json.loads((Path(tmp) / MARKER).read_text())
        except (vol.VolumeError, OSError, ValueError):
            return None


def describe(record: dict) -> str:
    """One line for the launcher's terminal and `jobs status`; the store's URL from this environment."""
    from versions import store

    if not record.get("manifest_sha256"):
        return f"warning: not in the artifact store ({record.get('error')}); the adapter is on the volume"
    try:
        root = store.open_store().url()
    except store.StoreError:
        root = "$ARTIFACT_STORE"
    digest = record["manifest_sha256"][:12]
    line = f"adapter in the store at {root}/{record['folder']}/ (manifest sha256 {digest})"
    return line + (f"; as one zip: {record['zip_key']} in the bucket" if record.get("zip_key") else "")


def event_field(record: dict) -> dict:
    """The completed event's `artifact_store` (docs/webhook-contract.md): the folder in the customer's
    store, its manifest's sha256 and the zip's key, sha256 and size, or the upload's error."""
    if record.get("manifest_sha256"):
        field = {"status": "stored", "folder": record["folder"], "manifest_sha256": record["manifest_sha256"]}
        return field | {k: record[k] for k in ("zip_key", "zip_sha256", "zip_bytes") if k in record}
    return {"status": "failed", "error": record.get("error") or "unknown"}


def event_fields(record: dict, local_path: str) -> dict:
    """What a completed event says of an upload's record: lora_artifact_path the zip's key in the bucket
    (what the customer's dashboard signs) when it is there, else local_path (the adapter where it stays);
    training_log_path the log's key; artifact_store."""
    stored = bool(record.get("manifest_sha256"))
    fields = {"lora_artifact_path": (stored and record.get("zip_key")) or local_path}
    if stored and record.get("log_key"):
        fields["training_log_path"] = record["log_key"]
    return fields | {"artifact_store": event_field(record)}


def fill_run_folder(run_dir: Path, say=print) -> bool:
    """A pod run whose adapter never came here: its store copy (run.json's `stored`, recorded by the
    launcher) into run_dir as `jobs fetch` would put it (output/, eval/, report.html where missing),
    every sha256 checked against the manifest recorded at the run's end. False when there is none.
    Downloaded then uploaded again by promote, not copied inside the store: the store a version goes to
    may be another (or a folder), and only bytes read here can be checked against their sha256s."""
    from versions import store

    lineage = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    record = lineage.get("stored") or {}
    if not record.get("manifest_sha256"):
        return False
    staged = run_dir / ".stored"
    if staged.exists():
        shutil.rmtree(staged)  # a copy that an earlier promote left half moved
    say(
        f"run {run_dir.name}: its adapter was never fetched; taking its copy in the store "
        f"({record['folder']}/)"
    )
    try:
        store.download(store.open_store(), record["folder"], record["manifest_sha256"], staged, say)
    except store.StoreError as exc:
        raise type(exc)(f"run {run_dir.name}: its copy in the artifact store: {exc}") from None
    out = run_dir / "output"
    out.mkdir(exist_ok=True)
    # The weights last: their presence is what says the folder holds the adapter.
    for path in sorted((staged / "adapter").iterdir(), key=lambda p: p.name == "adapter_model.safetensors"):
        path.replace(out / path.name)
    for name in ("eval", "report.html"):
        if (staged / name).exists() and not (run_dir / name).exists():
            (staged / name).replace(run_dir / name)
    shutil.rmtree(staged)
    return True


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
