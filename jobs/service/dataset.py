"""The customer's dataset, fetched from the signed URL of POST /training/start, at once and safely.

Their app signs a Supabase Storage download URL for 3,600 s: a queued job may start after it expired, so
the service fetches the file when the request arrives, before anything is rented or created. The query
string carries the signing token, a secret for that hour: no message, log line or return value holds it
(redact() is how a URL is shown). Only https is fetched (plain http to this machine alone, for tests),
redirects are followed by hand so that every hop meets the same rule, the read stops at a size and a
time, and the file is stored by its content hash, so that nothing half-written ever has the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path

import httpx

MAX_URL = 8192
TIMEOUT = 30.0  # seconds without progress, connecting or reading; Storage answers well within it
DEADLINE = 300.0  # the whole fetch: the start request waits on it (200 MB at under 1 MB/s is refused)
CHUNK = 1 << 16
REDIRECTS = {301, 302, 303, 307, 308}
EXPIRED = "the signed URL may have expired; make a new one"
HINTS = {400: EXPIRED, 401: EXPIRED, 403: EXPIRED, 404: "no such file (was it deleted?)"}
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class FetchError(Exception):
    """Why the dataset could not be fetched, for a person (the service answers it as HTTP 422)."""


def limit_from_env(environ=os.environ) -> int:
    """DATASET_MAX_BYTES, read here alone; a bad value stops the service at start, not a customer later."""
    raw = environ.get("DATASET_MAX_BYTES", "").strip()
    if not raw:
        return 200_000_000
    if not raw.isdigit() or int(raw) <= 0:
        raise ValueError(f"DATASET_MAX_BYTES: a whole number of bytes above 0, got {raw[:32]!r}")
    return int(raw)


DEFAULT_MAX_BYTES = limit_from_env()


def redact(url: str) -> str:
    """The URL without query string, fragment or user info: what a message or a log line may show.
    Plain string work (never raises, whatever it is given), control characters made visible."""
    shown = re.split(r"[?#]", str(url), maxsplit=1)[0]
    shown = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/]*@", r"\1", shown)
    shown = CONTROL.sub("?", shown)
    return shown if len(shown) <= 200 else shown[:199] + "…"


def _quiet_tokens(record: logging.LogRecord) -> bool:
    # httpx logs every request's whole URL at INFO ("HTTP Request: GET https://...?token=..."): whoever
    # turns INFO on for the service must not find the signing token in its log.
    if isinstance(record.args, tuple):
        record.args = tuple(redact(str(a)) if isinstance(a, httpx.URL) else a for a in record.args)
    return True


logging.getLogger("httpx").addFilter(_quiet_tokens)


def loopback(host: str | None) -> bool:
    """localhost, 127.0.0.0/8 or ::1: the one place plain http is allowed (tests on this machine)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback  # 127.0.0.0/8, ::1
    except ValueError:
        return False


def _check(url: str, prefix: str) -> httpx.URL:
    """The URL as it will be requested, or FetchError: decided before any connection. httpx parses it
    both here and when connecting, so what is checked is what is reached."""
    if len(url) > MAX_URL:
        raise FetchError(f"{prefix}: longer than {MAX_URL} characters")
    if CONTROL.search(url):
        raise FetchError(f"{prefix}: control characters in the URL")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise FetchError(f"{prefix}: not a URL") from None
    if parsed.userinfo:
        raise FetchError(f"{prefix}: a user name or password in the URL is refused")
    if parsed.scheme not in ("https", "http"):
        raise FetchError(f"{prefix}: only https URLs are fetched (not {parsed.scheme or 'this'})")
    if not parsed.host:
        raise FetchError(f"{prefix}: no host in the URL")
    if parsed.scheme == "http" and not loopback(parsed.host):
        raise FetchError(f"{prefix}: plain http is refused; only https URLs are fetched")
    return parsed


def _scrub(text: str, secrets: set[str]) -> str:
    """A server's or a library's words in a message: one short line, any query string taken out."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "…")
    text = " ".join(CONTROL.sub(" ", text).split())
    return text if len(text) <= 160 else text[:159] + "…"


def _secrets(url: httpx.URL) -> set[str]:
    query = url.query.decode("ascii", "replace")
    parts = {query, *(value for _, value in url.params.multi_items())}
    return {part for part in parts if len(part) >= 6}


def _server_says(response: httpx.Response, secrets: set[str], end: float) -> str:
    """Storage's own reason (e.g. InvalidJWT: "exp" claim timestamp check failed), from at most 2 KB."""
    body = b""
    for chunk in response.iter_bytes(2048):
        body += chunk
        if len(body) > 2048 or time.monotonic() > end:
            return ""
    try:
        said = json.loads(body)
        words = [str(said[k]) for k in ("error", "message") if isinstance(said.get(k), str | int)]
    except (ValueError, AttributeError):
        return ""
    return _scrub(": ".join(words), secrets)


def _status(response: httpx.Response, prefix: str, secrets: set[str], end: float) -> FetchError:
    code = response.status_code
    said = _server_says(response, secrets, end)
    hint = HINTS.get(code) or response.reason_phrase or "refused"
    return FetchError(f"{prefix}: HTTP {code} ({hint})" + (f"; the server said: {said}" if said else ""))


def _why(exc: httpx.HTTPError, url: httpx.URL, seconds: float, secrets: set[str]) -> str:
    host = url.netloc.decode("ascii", "replace")
    if isinstance(exc, httpx.ConnectTimeout):
        return f"timed out connecting to {host} (after {seconds:g} s)"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out: {host} sent nothing for {seconds:g} s"
    if isinstance(exc, httpx.ConnectError):
        return f"could not connect to {host}: {_scrub(str(exc), secrets) or 'no reason given'}"
    return f"{host}: {type(exc).__name__}: {_scrub(str(exc), secrets) or 'no reason given'}"


def _store(
    response: httpx.Response, dest_dir: Path, max_bytes: int, end: float, prefix: str
) -> tuple[Path, str]:
    """The body into a temp file beside its final name, then renamed: a refused or broken read leaves
    nothing, and a reader of sha256-<hex>.json only ever sees a whole file."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FetchError(f"{prefix}: {int(declared):,} bytes, over the {max_bytes:,}-byte limit")
    digest, size = hashlib.sha256(), 0
    fd, temp = tempfile.mkstemp(dir=dest_dir, prefix=".fetch-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in response.iter_bytes(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise FetchError(f"{prefix}: over the {max_bytes:,}-byte limit")
                if time.monotonic() > end:
                    raise FetchError(f"{prefix}: timed out: the whole download took too long")
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())  # whole on disk before it has the name a job trusts
        if size == 0:
            raise FetchError(f"{prefix}: the file is empty")
        final = dest_dir / f"sha256-{digest.hexdigest()}.json"
        if final.exists():
            os.unlink(temp)  # the same content, stored already
        else:
            os.replace(temp, final)  # atomic; a racing fetch of the same content writes the same bytes
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return final, digest.hexdigest()


def fetch(
    url: str,
    dest_dir: Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float = TIMEOUT,
    max_redirects: int = 3,
    deadline: float = DEADLINE,
) -> tuple[Path, str]:
    """Fetch the dataset at `url` into dest_dir/sha256-<hex>.json: (that path, the hex), or FetchError."""
    prefix = f"dataset_url {redact(url)}"
    current = _check(url, prefix)
    secrets = _secrets(current)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    end = time.monotonic() + deadline
    # trust_env=False: no proxy from the environment sees the token, no ~/.netrc login is sent anywhere.
    headers = {"Accept-Encoding": "identity", "Accept": "application/json, */*"}
    with httpx.Client(follow_redirects=False, trust_env=False, headers=headers) as client:
        for hop in range(max_redirects + 1):
            seconds = min(timeout, end - time.monotonic())
            if seconds <= 0:
                raise FetchError(f"{prefix}: timed out: the whole download took too long")
            try:
                with client.stream("GET", current, timeout=httpx.Timeout(seconds)) as response:
                    if response.status_code not in REDIRECTS:
                        if not response.is_success:
                            raise _status(response, prefix, secrets, end)
                        return _store(response, dest_dir, max_bytes, end, prefix)
                    location = response.headers.get("location")
            except httpx.HTTPError as exc:
                raise FetchError(f"{prefix}: {_why(exc, current, seconds, secrets)}") from None
            if not location:
                raise FetchError(f"{prefix}: HTTP {response.status_code} without a Location to follow")
            try:
                target = str(current.join(location))
            except (httpx.InvalidURL, ValueError):
                raise FetchError(f"{prefix}: redirect {hop + 1} to an unreadable location") from None
            current = _check(target, f"{prefix}: redirect {hop + 1} to {redact(target)}")
            secrets |= _secrets(current)
    raise FetchError(f"{prefix}: more than {max_redirects} redirects; refused")
