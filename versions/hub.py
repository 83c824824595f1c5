"""A version pushed to the Hugging Face Hub (issue 28, item 7): `just push NAME@vN --hub ORG/REPO`, for
customers who keep their adapters there.

What goes up is the version as promoted, read from its sha256-checked copy (sides.cached): the adapter's
files at the repo's root (so `PeftModel.from_pretrained("ORG/REPO")` loads it), the tokenizer files saved
with it, and the model card (README.md, versions/card.py). Never `eval/` (the customer's held-out
conversations) nor the run's config and data manifest (local paths). The repo is private unless
`--public`; the token is HF_TOKEN from the environment only. Through huggingface_hub's own `create_repo`
and `upload_folder` (one commit, its message naming the version and its adapter's sha256).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from versions import registry, sides

CARD = "README.md"
REPO = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}"


class HubError(registry.VersionError):
    status = 502


def push(v: registry.ModelVersion, repo: str, public: bool = False, say=print) -> str:
    """The version up to the Hub repo; the commit's URL."""
    import re

    if not re.fullmatch(REPO, repo or ""):
        raise registry.VersionError(f"--hub {repo!r}: expected ORG/REPO (a Hub model repo id)")
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise registry.VersionError("HF_TOKEN is not set: the Hub needs a token with write access to push")
    import httpx
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    if constants.HF_HUB_OFFLINE:
        raise registry.VersionError("HF_HUB_OFFLINE is set: the Hub is switched off on this machine")
    folder = sides.cached(registry.finished(v), say)  # every sha256 checked against the manifest
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp)
        for path in sorted((folder / "adapter").iterdir()):
            if path.is_file():
                shutil.copyfile(path, staged / path.name)
        if (folder / CARD).is_file():
            shutil.copyfile(folder / CARD, staged / CARD)
        api = HfApi(token=token)
        message = f"{v.ref}: adapter sha256 {v.adapter_sha256[:12]}"
        try:
            api.create_repo(repo, private=not public, exist_ok=True)
            commit = api.upload_folder(repo_id=repo, folder_path=str(staged), commit_message=message)
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            raise HubError(
                f"the Hub refused the push to {repo} (HTTP {status}): check HF_TOKEN's access"
            ) from None
        except (OSError, httpx.HTTPError) as exc:  # the Hub unreachable: a connection error
            raise HubError(f"the Hub could not be reached ({type(exc).__name__})") from None
    say(f"{v.ref}: pushed to {repo} ({'public' if public else 'private'}): {commit}")
    return str(commit)
