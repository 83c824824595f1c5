"""The artifact store: a version's files under models/<name>/v<N>/, a manifest of their sha256s written last.

ARTIFACT_STORE picks it: unset = artifacts/ in the repo; a path (or file://...) = that folder; s3://bucket/
prefix = any S3-compatible bucket (AWS, Supabase Storage's S3 endpoint, R2, MinIO, RunPod's S3 API), with
AWS_ENDPOINT_URL (unset for AWS itself), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION from the
environment. The S3 client is the RunPod volume's (jobs/pod/volume.py: path-style, retries, checksums only
where an API needs one, which S3-compatible services that are not AWS have refused otherwise).

Whole or absent: a version counts only once its manifest is there, and the manifest goes up after every
file it lists, so an upload cut short never looks complete. Uploads skip an object whose sha256 (kept in
its metadata on S3; recomputed from the file on a folder) already matches, so running one again after an
interruption sends only what is missing. Downloads check every sha256 and land in place by one rename.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlparse

from jobs.runfolder import ROOT, sha256_file

MANIFEST = "manifest.json"
CLAIM = "claim.txt"  # the manifest sha256 a version's folder is being filled for (upload)
FORMAT = "brightrun-model-version/1"
MAX_URL_SECONDS = 7 * 24 * 3600  # S3's own limit on a presigned URL (SigV4)


class StoreError(Exception):
    """The store could not be read or written; the message names the store and the object."""


class Missing(StoreError):
    """An object the version needs is not in the store (deleted, or never finished uploading)."""


class Corrupt(StoreError):
    """An object's bytes do not match the sha256 the manifest (or the registry) holds for it."""


class NoUrl(StoreError):
    """A folder store has no URL to hand to another machine."""


class Taken(StoreError):
    """A version's place in the store was claimed by another promotion (another registry's v1)."""


class TooLarge(StoreError):
    """The bucket refused an object over its file-size limit (HTTP 413 EntityTooLarge: Supabase Storage's
    answer to a PutObject or UploadPart over the project's or the bucket's limit, 50 MB on its free plan)."""


SIZE_LIMIT = (
    "over its file-size limit; raise it in Supabase: Storage → Settings → Upload file size limit "
    "(and the bucket's own limit)"
)


class LocalStore:
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    def __str__(self) -> str:
        return f"{self.root}/"

    def url(self, key: str = "") -> str:
        return f"{self.root.as_uri()}/{key}".rstrip("/")

    def stored_sha256(self, key: str) -> str | None:
        path = self.root / key
        return sha256_file(path) if path.is_file() else None

    def put(self, src: Path, key: str, sha256: str) -> None:
        dest = self.root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")  # two uploaders never share one
        shutil.copyfile(src, tmp)
        tmp.replace(dest)

    def put_new(self, body: bytes, key: str) -> bool:
        """Create key holding body only if nothing is there: True if created. os.link fails on an existing
        name, atomically: of two writers at once, one creates, the other is told."""
        dest = self.root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
        tmp.write_bytes(body)
        try:
            os.link(tmp, dest)
            return True
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links (some FUSE/SMB mounts): an exclusive create
            try:
                with open(dest, "xb") as f:
                    f.write(body)
                return True
            except FileExistsError:
                return False
        finally:
            tmp.unlink()

    def hashed(self, key: str) -> str | None:
        return self.stored_sha256(key)  # a folder's stored_sha256 reads the bytes already

    def keys(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())

    def delete(self, key: str) -> None:
        path = self.root / key
        path.unlink(missing_ok=True)
        for parent in path.parents:  # folders left empty go too, as an S3 "folder" does with its last key
            if parent == self.root or not parent.is_relative_to(self.root) or any(parent.iterdir()):
                break
            parent.rmdir()

    def get(self, key: str, dest: Path) -> None:
        if not (self.root / key).is_file():
            raise Missing(f"{self}: {key} is not there")
        shutil.copyfile(self.root / key, dest)

    def presign(self, key: str, seconds: int) -> str:
        raise NoUrl(
            f"a folder store ({self.root.name}/) has no URL another machine can use; set ARTIFACT_STORE=s3://..."
        )


class S3Store:
    def __init__(self, bucket: str, prefix: str = ""):
        from jobs.pod.volume import s3_client

        self.bucket, self.prefix = bucket, prefix.strip("/")
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        # Keys unset: boto3's own chain (profile, instance role). Path-style for every non-AWS endpoint.
        self.client = s3_client(
            endpoint,
            region,
            os.environ.get("AWS_ACCESS_KEY_ID"),
            os.environ.get("AWS_SECRET_ACCESS_KEY"),
            path_style=endpoint is not None,
        )
        self.endpoint = endpoint or "AWS"

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix + '/' if self.prefix else ''} ({self.endpoint})"

    def url(self, key: str = "") -> str:
        return "/".join(p for p in (f"s3://{self.bucket}", self.prefix, key) if p)

    def key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, fn, **kw):
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kw)
        except Boto3Error as exc:  # upload_file wraps the service's answer in S3UploadFailedError
            answer = exc.__cause__ or exc.__context__  # the ClientError it was raised in
            if isinstance(answer, ClientError) and too_large(answer):
                raise TooLarge(f"{self}: {what}: {SIZE_LIMIT}") from None
            reason = "no such bucket at this endpoint" if "NoSuchBucket" in str(exc) else str(exc)
            raise StoreError(f"{self}: {what} failed: {reason}") from None
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if too_large(exc):
                raise TooLarge(f"{self}: {what}: {SIZE_LIMIT}") from None
            if code in ("NoSuchKey", "404", "NotFound") or (status == 404 and code != "NoSuchBucket"):
                raise Missing(f"{self}: {what}: not there") from None
            if code == "NoSuchBucket":
                raise StoreError(f"{self}: no such bucket at this endpoint") from None
            if status == 403 or code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"):
                raise StoreError(
                    f"{self}: {what}: refused ({code or status}); "
                    "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                ) from None
            raise StoreError(f"{self}: {what} failed: {code or status}") from None
        except BotoCoreError as exc:
            raise StoreError(f"{self}: {what} failed: {exc}") from None

    def put_new(self, body: bytes, key: str) -> bool:
        """Create key holding body only if nothing is there (S3's conditional write, `If-None-Match: *`:
        412 Precondition Failed when the key exists; AWS since 2024-08, also R2 and MinIO). True if
        created. A server that ignores the header overwrites, as a plain put would."""
        from botocore.exceptions import ClientError

        def attempt() -> bool:
            try:
                self.client.put_object(Bucket=self.bucket, Key=self.key(key), Body=body, IfNoneMatch="*")
                return True
            except ClientError as exc:
                # 409: a conditional write racing another on the same key (AWS's conditional-writes docs).
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412):
                    return False
                raise  # _call maps it

        return self._call(f"claiming {key}", attempt)

    def hashed(self, key: str) -> str | None:
        """The sha256 of the object's bytes, streamed in 1 MiB reads; None when it is not there."""

        def stream() -> str:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(key))["Body"]
            digest = hashlib.sha256()
            for chunk in iter(lambda: body.read(1 << 20), b""):
                digest.update(chunk)
            return digest.hexdigest()

        try:
            return self._call(f"reading {key}", stream)
        except Missing:
            return None

    def keys(self, prefix: str) -> list[str]:
        def listing() -> list[str]:  # the paginator fetches lazily: inside _call, so its errors are mapped
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.key(prefix)
            )
            return [o["Key"] for page in pages for o in page.get("Contents", [])]

        cut = len(self.prefix) + 1 if self.prefix else 0
        return sorted(k[cut:] for k in self._call(f"listing {prefix}", listing))

    def delete(self, key: str) -> None:
        self._call(f"deleting {key}", self.client.delete_object, Bucket=self.bucket, Key=self.key(key))

    def stored_sha256(self, key: str) -> str | None:
        try:
            head = self._call(
                f"checking {key}", self.client.head_object, Bucket=self.bucket, Key=self.key(key)
            )
        except Missing:
            return None
        return head.get("Metadata", {}).get("sha256") or "unknown"  # there, put by something else

    def put(self, src: Path, key: str, sha256: str) -> None:
        extra = {"Metadata": {"sha256": sha256}}
        try:
            self._call(
                f"uploading {key}",
                self.client.upload_file,
                Filename=str(src),
                Bucket=self.bucket,
                Key=self.key(key),
                ExtraArgs=extra,
            )
        except TooLarge:
            raise TooLarge(
                f"{self}: the bucket refused {key} ({size(src.stat().st_size)}): {SIZE_LIMIT}"
            ) from None

    def get(self, key: str, dest: Path) -> None:
        self._call(
            f"downloading {key}",
            self.client.download_file,
            Bucket=self.bucket,
            Key=self.key(key),
            Filename=str(dest),
        )

    def presign(self, key: str, seconds: int) -> str:
        params = {"Bucket": self.bucket, "Key": self.key(key)}
        return self._call(
            f"signing {key}",
            self.client.generate_presigned_url,
            ClientMethod="get_object",
            Params=params,
            ExpiresIn=seconds,
        )


Store = LocalStore | S3Store


def too_large(exc) -> bool:
    """A ClientError that is the bucket's file-size limit (a proxy's bare 413 included)."""
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return exc.response.get("Error", {}).get("Code") in ("EntityTooLarge", "413") or status == 413


def open_store(url: str | None = None) -> Store:
    """The store at url, else ARTIFACT_STORE, else artifacts/ in the repo."""
    url = url or os.environ.get("ARTIFACT_STORE") or str(ROOT / "artifacts")
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StoreError(f"{url}: expected s3://bucket[/prefix]")
        return S3Store(parsed.netloc, parsed.path)
    if parsed.scheme == "file":
        return LocalStore(parsed.path)
    if parsed.scheme:
        raise StoreError(f"{url}: ARTIFACT_STORE is a folder or s3://bucket[/prefix]")
    return LocalStore(url)


def store_of(version_url: str, folder: str) -> Store:
    """The store a version was uploaded to, from its recorded folder URL (.../models/NAME/vN)."""
    if not version_url.endswith("/" + folder):
        raise StoreError(f"{version_url}: not a version folder ({folder})")
    return open_store(version_url[: -len(folder) - 1] or "/")


def size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def manifest_bytes(meta: dict, files: dict[str, dict]) -> bytes:
    return (json.dumps({"format": FORMAT, **meta, "files": files}, indent=2, sort_keys=True) + "\n").encode()


def upload(
    store: Store, folder: str, files: list[tuple[str, Path]], meta: dict, say=print
) -> tuple[str, int]:
    """files (name in the version, local path) under folder/, then the manifest. Returns (the manifest's
    sha256, objects sent). A version already complete with the same files sends nothing; one complete with
    other files is refused (a version is immutable)."""
    listed = {}
    for name, path in files:
        listed[name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    body = manifest_bytes(meta, listed)
    existing = read_manifest(store, folder, missing_ok=True)
    if existing is not None:
        if existing.get("files") != listed:
            raise Taken(
                f"{store.url(folder)} already holds another version's files (another registry made this "
                "version first, or it was promoted from another run): versions are immutable"
            )
        say(f"store: {store.url(folder)} is already complete")
        return hashlib.sha256(manifest_raw(store, folder)).hexdigest(), 0
    claim(store, folder, hashlib.sha256(body).hexdigest())
    sent = 0
    for i, (name, path) in enumerate(files, 1):
        digest = listed[name]["sha256"]
        if store.stored_sha256(f"{folder}/{name}") == digest:
            say(f"store: {i}/{len(files)} {name}: already there")
            continue
        store.put(path, f"{folder}/{name}", digest)
        sent += 1
        say(f"store: {i}/{len(files)} {name}: {size(listed[name]['bytes'])} sent")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / MANIFEST).write_bytes(body)
        store.put(Path(tmp) / MANIFEST, f"{folder}/{MANIFEST}", hashlib.sha256(body).hexdigest())
    say(f"store: manifest written: {store.url(folder)} complete")
    return hashlib.sha256(body).hexdigest(), sent + 1


def claim(store: Store, folder: str, manifest_sha256: str) -> None:
    """Before any file of a version goes up: its folder claimed for this manifest (CLAIM, created only if
    absent). Two registries on one store (or a restored database) both make "v1": the second finds the
    claim of another manifest and is refused before it overwrites a file of the first. The same
    promotion resumed finds its own claim and goes on."""
    if store.put_new(manifest_sha256.encode() + b"\n", f"{folder}/{CLAIM}"):
        return
    with tempfile.TemporaryDirectory() as tmp:
        store.get(f"{folder}/{CLAIM}", Path(tmp) / CLAIM)
        holder = (Path(tmp) / CLAIM).read_text().strip()
    if holder != manifest_sha256:
        raise Taken(
            f"{store.url(folder)} is another promotion's (its manifest sha256 {holder[:12]}, ours "
            f"{manifest_sha256[:12]}): another registry made this version first; two registries cannot "
            "share one store's version numbers (give each its own ARTIFACT_STORE prefix)"
        )


def manifest_raw(store: Store, folder: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        store.get(f"{folder}/{MANIFEST}", Path(tmp) / MANIFEST)
        return (Path(tmp) / MANIFEST).read_bytes()


def read_manifest(
    store: Store, folder: str, sha256: str | None = None, missing_ok: bool = False
) -> dict | None:
    """The version's manifest, checked against the sha256 the registry recorded when one is given."""
    try:
        return json.loads(manifest_bytes_checked(store, folder, sha256))
    except Missing:
        if missing_ok:
            return None
        raise


def manifest_bytes_checked(store: Store, folder: str, sha256: str | None) -> bytes:
    try:
        raw = manifest_raw(store, folder)
    except Missing:
        raise Missing(
            f"{store.url(folder)}: the manifest is not in the store: this version's files were deleted "
            "(or its upload never finished)"
        ) from None
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise Corrupt(f"{store.url(folder)}/{MANIFEST}: its sha256 is not the one the registry recorded")
    return raw


def download(store: Store, folder: str, manifest_sha256: str, dest: Path, say=print) -> dict:
    """Every file of the version into dest/ (which must not exist yet), each sha256 checked; the files land
    in a hidden sibling first and move into place by one rename, so a refused or failed download leaves
    nothing behind. Returns the manifest."""
    dest = Path(dest)
    if dest.exists():
        raise StoreError(f"{dest} already exists; download into a new folder")
    raw = manifest_bytes_checked(store, folder, manifest_sha256)
    manifest = json.loads(raw)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        for name, want in sorted(manifest["files"].items()):
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise Corrupt(f"{store.url(folder)}: the manifest names {name!r}, outside the version")
            local = tmp / name
            local.parent.mkdir(parents=True, exist_ok=True)
            try:
                store.get(f"{folder}/{name}", local)
            except Missing:
                raise Missing(
                    f"{store.url(folder)}/{name}: listed in the manifest but deleted from the store"
                ) from None
            if sha256_file(local) != want["sha256"]:
                raise Corrupt(
                    f"{store.url(folder)}/{name}: sha256 mismatch (the stored file is not the one promoted)"
                )
            say(f"download: {name} ok ({size(want['bytes'])}, sha256 {want['sha256'][:12]})")
        # The manifest's own bytes: their sha256 is the registry's, so a copy can be checked later whole.
        (tmp / MANIFEST).write_bytes(raw)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return manifest


def check(store: Store, folder: str, manifest_sha256: str) -> str:
    """What the store holds of a version: "ok", or what is missing or changed. Each object's bytes are
    read and hashed (streamed, nothing kept): the sha256 an uploader wrote into S3 metadata is its claim,
    not the object's (issue 28, item 6)."""
    try:
        manifest = read_manifest(store, folder, manifest_sha256)
    except StoreError as exc:
        return str(exc)
    missing, changed = [], []
    for name, want in sorted(manifest["files"].items()):
        got = store.hashed(f"{folder}/{name}")
        (missing if got is None else changed if got != want["sha256"] else []).append(name)
    if missing or changed:
        parts = [f"{len(missing)} file(s) deleted ({', '.join(missing[:3])})"] if missing else []
        parts += [f"{len(changed)} file(s) changed ({', '.join(changed[:3])})"] if changed else []
        return "; ".join(parts)
    return "ok"


def presign_all(store: Store, folder: str, manifest_sha256: str, seconds: int) -> dict[str, dict]:
    """A time-limited GET URL for each file of a version, with its sha256 to check it by."""
    if not 1 <= seconds <= MAX_URL_SECONDS:
        raise StoreError(f"expires: 1 to {MAX_URL_SECONDS} seconds (S3's limit)")
    manifest = read_manifest(store, folder, manifest_sha256)
    return {
        name: {"url": store.presign(f"{folder}/{name}", seconds), **want}
        for name, want in sorted(manifest["files"].items())
    }
