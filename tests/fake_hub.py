"""A stand-in for the Hugging Face Hub's two answers preflight asks for (HF_ENDPOINT points here).

What the real Hub does, as huggingface_hub 1.17 (our lock) reads it:
  * GET /api/models/{repo}?blobs=True (HfApi.model_info, files_metadata=True): the repo's card, `gated`,
    and `siblings` with each file's `size` (hf_api.py model_info; ModelInfo's fields). A gated repo's
    card and file list are public: only the files need access.
  * GET /api/models/{repo}/auth-check (HfApi.auth_check): 200 when the token may read the repo; a gated repo
    without access answers 403 with the header X-Error-Code: GatedRepo, which hf_raise_for_status turns into
    GatedRepoError (utils/_http.py); an unknown repo X-Error-Code: RepoNotFound (404).
"""

from __future__ import annotations

import json

from tests import loopback


class FakeHub:
    def __init__(self, repo: str, shard_bytes: list[int], granted: set[str]):
        self.repo, self.shard_bytes, self.granted = repo, shard_bytes, granted
        self.asked: list[tuple[str, str | None]] = []  # (path, Authorization)

    def card(self) -> dict:
        n = len(self.shard_bytes)
        siblings = [
            {"rfilename": f"model-{i:05d}-of-{n:05d}.safetensors", "size": size}
            for i, size in enumerate(self.shard_bytes, 1)
        ]
        siblings += [
            {"rfilename": "config.json", "size": 654},
            {"rfilename": "original/consolidated.00.pth", "size": 1},
        ]
        return {
            "id": self.repo,
            "modelId": self.repo,
            "gated": "manual",
            "private": False,
            "siblings": siblings,
        }

    def answer(self, path: str, auth: str | None) -> tuple[int, dict, dict]:
        self.asked.append((path, auth))
        base = f"/api/models/{self.repo}"
        if not path.startswith(base):
            return 404, {"X-Error-Code": "RepoNotFound"}, {"error": "Repository not found"}
        if path.split("?")[0].endswith("/auth-check"):
            token = (auth or "").removeprefix("Bearer ")
            if token in self.granted:
                return 200, {}, {}
            return 403, {"X-Error-Code": "GatedRepo"}, {"error": "Access to this model is restricted"}
        return 200, {}, self.card()

    def __enter__(self) -> FakeHub:
        hub = self

        class Route(loopback.Quiet):
            def do_GET(self):  # noqa: N802 -- http.server's name
                status, headers, body = hub.answer(self.path, self.headers.get("Authorization"))
                self.answer(status, json.dumps(body).encode(), headers)

        self.server, self.url = loopback.start(Route)
        return self

    def __exit__(self, *exc) -> None:
        loopback.stop(self.server)
