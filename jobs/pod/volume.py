"""The pod's volume, seen from the launcher's machine: the converted data goes up before the pod starts,
the pod's progress (its registry row, its checkpoints) is read while it runs, the adapter comes down after.

Two kinds, one set of functions:
  * LocalVolume: a directory here that *is* the pod's volume (BRIGHTRUN_VOLUME_DIR: tests/fake_runpod.py's
    workspace, or a network filesystem mounted on this machine). Pods see the same path.
  * S3Volume: a RunPod network volume through RunPod's S3-compatible API (docs.runpod.io/storage/s3-api):
    one endpoint per datacenter, https://s3api-<datacenter>.runpod.io/, the volume id as the bucket, keys
    = paths under the volume's root, path-style addressing, the datacenter (lower case) as the region
    (github.com/runpod/examples s3-api-downloader/downloader_boto.py). Credentials are the account's S3
    API keys (console → Settings → S3 API Keys), not the RunPod API key: RUNPOD_S3_ACCESS_KEY
    (user_...) and RUNPOD_S3_SECRET_KEY (rps_...), from the environment only. RUNPOD_S3_ENDPOINT
    overrides the endpoint (tests: an S3 server on loopback). Pods mount the volume at
    /workspace/data (launch.POD_VOLUME, or `jobs launch --volume-path`), so key `datasets/x/train.jsonl`
    is the pod's /workspace/data/datasets/x/train.jsonl.

Listings go one folder level at a time (Delimiter="/"): RunPod's S3 API has repeated a continuation token
on deep recursive listings ("The same next token was received twice", runpod/examples
s3-api-downloader/readme.md), and one level of a run folder is small.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from jobs import runfolder

ENDPOINT = "https://s3api-{datacenter}.runpod.io/"
KEY_VARS = ("RUNPOD_S3_ACCESS_KEY", "RUNPOD_S3_SECRET_KEY")
DONE_MARKER = "manifest.json"  # the converter's manifest goes up last: present = the upload is complete


def s3_client(endpoint: str | None, region: str, access_key: str, secret_key: str, path_style: bool = True):
    """A boto3 S3 client for S3-compatible services that are not AWS (RunPod's S3 API here, the artifact
    store in versions/store.py): one configuration for both."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(
            s3={"addressing_style": "path" if path_style else "auto"},
            # SigV4 everywhere, presigned URLs included: botocore may presign with SigV2, which R2 and
            # Supabase Storage refuse (and whose URLs say nothing of their expiry limit).
            signature_version="s3v4",
            retries={"max_attempts": 6, "mode": "standard"},  # 5xx, throttling, dropped connections
            connect_timeout=10,
            read_timeout=60,
            # botocore >= 1.36 adds CRC32 checksums to every upload by default, which S3-compatible
            # services that are not AWS have refused (boto3 issue 4392): only where an API needs one.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


class VolumeError(Exception):
    """A volume could not be read or written; the message names the volume and the path."""


class LocalVolume:
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.pod_root = str(self.root)  # a pod on this machine sees the same path

    def __str__(self) -> str:
        return f"{self.root}/"

    def has(self, key: str) -> bool:
        return (self.root / key).is_file()

    def folders(self, prefix: str) -> list[str]:
        folder = self.root / prefix
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def files(self, prefix: str) -> list[str]:
        folder = self.root / prefix
        return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []

    def get(self, key: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.root / key, dest)

    def put(self, src: Path, key: str) -> None:
        dest = self.root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        shutil.copyfile(src, tmp)
        tmp.replace(dest)  # a reader never sees half a file

    @contextmanager
    def sqlite_path(self, key: str) -> Iterator[Path | None]:
        """The registry read in place, read-only: no copy needed on a local volume."""
        path = self.root / key
        yield path if path.is_file() else None


class S3Volume:
    def __init__(self, volume_id: str, datacenter: str, endpoint: str | None = None):
        missing = [name for name in KEY_VARS if not os.environ.get(name)]
        if missing:
            raise VolumeError(
                f"network volume {volume_id}: set {' and '.join(missing)} (RunPod console → Settings → "
                "S3 API Keys; they are not the RunPod API key) so the launcher can put the data on the "
                "volume and read the run's progress from it"
            )
        self.volume_id, self.datacenter = volume_id, datacenter
        self.endpoint = (
            endpoint or os.environ.get("RUNPOD_S3_ENDPOINT") or ENDPOINT.format(datacenter=datacenter.lower())
        )
        self.pod_root = None  # pods mount it wherever the pod spec says (launch.py's volumeMountPath)
        self.client = s3_client(
            self.endpoint, datacenter.lower(), os.environ[KEY_VARS[0]], os.environ[KEY_VARS[1]]
        )

    def __str__(self) -> str:
        return f"network volume {self.volume_id} ({self.datacenter}, {self.endpoint})"

    def _call(self, what: str, fn: Callable, **kw):
        """botocore retries 5xx, throttling and dropped connections (s3_client), s3transfer a transfer cut
        short; what is still failing after those becomes a VolumeError here, never a traceback: boto3's own
        S3UploadFailedError and RetriesExceededError are not botocore's (issue 25; RunPod's S3 docs list
        "EOF errors with 200 OK responses")."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.volume_id, **kw)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchKey", "404") or (status == 404 and code != "NoSuchBucket"):
                raise FileNotFoundError(f"{self}: {kw.get('Key') or kw.get('Prefix')}") from None
            if code == "NoSuchBucket":
                raise VolumeError(
                    f"{self}: no such volume at this endpoint (is {self.datacenter} its datacenter?)"
                ) from None
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied") or status == 403:
                raise VolumeError(
                    f"{self}: the S3 API refused RUNPOD_S3_ACCESS_KEY/RUNPOD_S3_SECRET_KEY ({code or status})"
                ) from None
            raise VolumeError(f"{self}: {what} failed: {code or status} {exc}") from None
        except BotoCoreError as exc:
            raise VolumeError(
                f"{self}: {what} failed: {exc} (RunPod's S3 API exists only in some datacenters: "
                "docs.runpod.io/storage/s3-api)"
            ) from None
        except Boto3Error as exc:  # after s3transfer's own retries
            raise VolumeError(f"{self}: {what} failed after retries: {type(exc).__name__}: {exc}") from None

    def _level(self, prefix: str) -> tuple[list[str], list[str]]:
        """(folders, files) directly under prefix, names only."""
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        folders, files, token = [], [], None
        while True:
            kw = {"Prefix": prefix, "Delimiter": "/", **({"ContinuationToken": token} if token else {})}
            page = self._call(f"listing {prefix}", self.client.list_objects_v2, **kw)
            folders += [p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes") or []]
            files += [o["Key"][len(prefix) :] for o in page.get("Contents") or [] if o["Key"] != prefix]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return sorted(folders), sorted(files)

    def has(self, key: str) -> bool:
        try:
            self._call(f"checking {key}", self.client.head_object, Key=key)
            return True
        except FileNotFoundError:
            return False

    def folders(self, prefix: str) -> list[str]:
        return self._level(prefix)[0]

    def files(self, prefix: str) -> list[str]:
        return self._level(prefix)[1]

    def get(self, key: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        self._call(f"downloading {key}", lambda Bucket: self.client.download_file(Bucket, key, str(tmp)))
        tmp.replace(dest)

    def put(self, src: Path, key: str) -> None:
        self._call(f"uploading {key}", lambda Bucket: self.client.upload_file(str(src), Bucket, key))

    @contextmanager
    def sqlite_path(self, key: str) -> Iterator[Path | None]:
        """A private copy of the pod's registry, removed afterwards: SQLite cannot read over S3, and a
        copy never blocks the pod."""
        with tempfile.TemporaryDirectory(prefix="brightrun-volume-") as tmp:
            copy: Path | None = Path(tmp) / "registry.db"
            try:
                self.get(key, copy)
            except FileNotFoundError:
                copy = None
            yield copy


Volume = LocalVolume | S3Volume


def put_dir(volume: Volume, local: Path, prefix: str, say: Callable[[str], None] = print) -> int:
    """Upload a converted data folder; the manifest last, so its presence means complete. A folder whose
    manifest is already there (same content: the name carries the manifest's hash) is not sent again.
    Returns the number of files sent."""
    if volume.has(f"{prefix}/{DONE_MARKER}"):
        say(f"data: already on {volume} at {prefix}/")
        return 0
    files = sorted(p for p in Path(local).rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name == DONE_MARKER)
    total = sum(p.stat().st_size for p in files)
    sent = 0
    for i, path in enumerate(files, 1):
        volume.put(path, f"{prefix}/{path.relative_to(local).as_posix()}")
        sent += path.stat().st_size
        say(f"data: {i}/{len(files)} files, {sent / 1e6:.1f}/{total / 1e6:.1f} MB -> {volume} {prefix}/")
    return len(files)


ROW_QUERY = "SELECT status, step, total_steps, metrics, error_message FROM training_jobs WHERE id = ?"


def registry_row(volume: Volume, vrun: str) -> dict | None:
    """The pod's own registry row for the run (read-only, no migrations), or None (not there yet, or
    caught mid-write: the next poll reads it)."""
    try:
        with volume.sqlite_path("runs/registry.db") as db:
            if db is None:
                return None
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                row = con.execute(ROW_QUERY, (vrun,)).fetchone()
            finally:
                con.close()
    except (VolumeError, sqlite3.Error):
        return None
    if row is None:
        return None
    metrics = json.loads(row[3]) if row[3] else {}
    return {"status": row[0], "step": row[1] or 0, "total_steps": row[2], "metrics": metrics, "error": row[4]}


def checkpoint_step(volume: Volume, vrun: str) -> int | None:
    """The newest complete checkpoint-N (its trainer_state.json written) of the run on the volume."""
    out = f"runs/{vrun}/output"
    try:
        return runfolder.newest_complete(volume.folders(out), lambda rel: volume.has(f"{out}/{rel}"))
    except VolumeError:
        return None


def run_exists(volume: Volume, vrun: str) -> bool:
    try:
        return bool(volume.files(f"runs/{vrun}") or volume.folders(f"runs/{vrun}"))
    except VolumeError:
        return True  # unknown: assume it is there (a retry then starts under a fresh id)


def event_sequence(volume: Volume, vrun: str) -> int:
    """The last event number the pod's run handed out (its events.seq; 0 when there is none yet): the
    launcher numbers its own events for the same job above it, so a receiver that orders by sequence
    (jobs service) takes the launcher's give-up or cost cap as the newer event it is."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            volume.get(f"runs/{vrun}/events.seq", Path(tmp) / "seq")
            return int((Path(tmp) / "seq").read_text().strip() or 0)
        except (VolumeError, OSError, ValueError):
            return 0


# The pod's copies of what the launcher keeps itself are saved beside ours under a pod- prefix.
# The webhook spool too: the launcher's own events (and their numbering) must not be replaced by the pod's.
POD_COPIES = {
    "run.json",
    "config.yaml",
    "data-manifest.json",
    "events.jsonl",
    "events.seq",
    "events-delivered.txt",
    "events.lock",
}


def fetch_run(
    volume: Volume, vrun: str, dest: Path, say: Callable[[str], None] = print, checkpoints: bool = False
) -> int:
    """Bring the pod's run folder home: the adapter (output/, without checkpoint-N/ unless asked), logs,
    metrics. Returns the number of files fetched."""
    count = 0

    def walk(prefix: str, rel: str) -> None:
        nonlocal count
        folders, files = volume.folders(prefix), volume.files(prefix)
        for name in files:
            if name.startswith(".") and name.endswith(".part"):
                continue  # a file the pod is still writing
            local = f"pod-{name}" if not rel and name in POD_COPIES else name
            volume.get(f"{prefix}/{name}", dest / rel / local)
            count += 1
        for name in folders:
            if rel == "output" and name.startswith("checkpoint-") and not checkpoints:
                continue
            walk(f"{prefix}/{name}", f"{rel}/{name}" if rel else name)

    walk(f"runs/{vrun}", "")
    say(f"fetched {count} file(s) of runs/{vrun}/ from {volume} into {dest}/")
    return count
