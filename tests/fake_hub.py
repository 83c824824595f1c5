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


class HubUploads:
    """A stand-in for the calls `HfApi.create_repo` + `upload_folder` make (huggingface_hub 1.17, read
    from hf_api.py create_repo and _commit_api.py _fetch_upload_modes / create_commit, and watched against
    this stand-in): POST /api/repos/create {"name", "organization", "visibility"} → {"url"}; POST
    /api/validate-yaml {"content", "repoType"} (a README.md with metadata, before the commit) → no errors;
    POST /api/models/{repo}/preupload/{revision} {"files": [{"path", "sample", "size"}]} → each file's
    "uploadMode"; POST /api/models/{repo}/commit/{revision}, NDJSON: a header line, then a line per file
    with its content in base64 → {"commitUrl", "commitOid"}. Every file is answered "regular" (inline in
    the commit): the real Hub sends weights (*.safetensors) through LFS/Xet uploads, which this does not
    model. `repos` keeps what was created, `commits` each commit's files (path → bytes), `auth` the
    Authorization headers seen."""

    def __init__(self):
        self.repos: dict[str, dict] = {}
        self.commits: list[dict] = []
        self.auth: set[str | None] = set()
        self.cards: list[str] = []  # README.md contents sent to /api/validate-yaml
        self.unmodelled: list[str] = []  # calls this does not answer (404): a test shows them when it fails

    def __enter__(self) -> HubUploads:
        import base64

        hub = self

        class Handler(loopback.Quiet):
            def do_POST(self):  # noqa: N802 -- http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hub.auth.add(self.headers.get("Authorization"))
                if self.path == "/api/repos/create":
                    asked = json.loads(body)
                    repo = f"{asked['organization']}/{asked['name']}"
                    hub.repos[repo] = asked
                    return self.answer(200, json.dumps({"url": f"{hub.url}/{repo}"}).encode())
                if (
                    self.path == "/api/validate-yaml"
                ):  # a README.md with metadata is checked first (hf_api.py)
                    card = json.loads(body)["content"]
                    hub.cards.append(card)
                    return self.answer(200, json.dumps({"errors": [], "warnings": []}).encode())
                if "/preupload/" in self.path:
                    files = [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                        for f in json.loads(body)["files"]
                    ]
                    return self.answer(200, json.dumps({"files": files}).encode())
                if "/commit/" in self.path:
                    repo = self.path.removeprefix("/api/models/").split("/commit/")[0]
                    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                    files = {
                        x["value"]["path"]: base64.b64decode(x["value"]["content"])
                        for x in lines
                        if x["key"] == "file"
                    }
                    header = next(x["value"] for x in lines if x["key"] == "header")
                    hub.commits.append({"repo": repo, "summary": header["summary"], "files": files})
                    oid = f"{len(hub.commits):040x}"
                    return self.answer(200, json.dumps({"commitUrl": f"{hub.url}/{repo}/commit/{oid}",
                                                        "commitOid": oid}).encode())  # fmt: skip
                hub.unmodelled.append(self.path)
                self.answer(404, b'{"error": "not modelled"}')

        self.server, self.url = loopback.start(Handler)
        return self

    def __exit__(self, *exc) -> None:
        loopback.stop(self.server)
