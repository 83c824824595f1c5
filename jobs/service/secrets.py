"""A job's webhook secret, sealed for the registry.

The customer's app sends `webhook_secret` in each start request (their TRAINING_WEBHOOK_SECRET). The
service needs it for as long as the job can send events: the run it starts, a replay after an outage, a
service restarted mid-run. So it is kept, but only sealed: Fernet (AES-128-CBC + HMAC-SHA256, from
`cryptography`) under a key derived with HKDF from the service's own TRAINING_WEBHOOK_SECRET, which lives
in the environment only. A copy of the registry (a backup, a dump, a read-only role) holds no secret a
reader can use; a wrong or rotated service secret makes `open_secret` fail loudly, never sign with garbage.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

INFO = (
    b"brightrun-lora job webhook secrets v1"  # the key's purpose: another use of the secret gets another key
)


class SealError(Exception):
    """A sealed value that this service's key cannot open (the service secret changed, or it was edited)."""


def _fernet(service_secret: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=INFO).derive(service_secret.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def seal(service_secret: str, value: str) -> str:
    return _fernet(service_secret).encrypt(value.encode("utf-8")).decode("ascii")


def open_secret(service_secret: str, sealed: str) -> str:
    try:
        return _fernet(service_secret).decrypt(sealed.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError):
        raise SealError(
            "a job's sealed webhook secret cannot be opened with this TRAINING_WEBHOOK_SECRET "
            "(was the service's secret changed while jobs were running?)"
        ) from None
