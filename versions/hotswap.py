"""A running vLLM follows its models' stages (issue 28, item 3): promote, rollback and retire swap adapters
in place, so `NAME-production` answers from the new version without a restart.

vLLM loads and unloads LoRA adapters at runtime when started with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True
(vLLM docs, features/lora.md, "Dynamically serving LoRA Adapters"): `POST /v1/load_lora_adapter` with
`{"lora_name", "lora_path"}` and `POST /v1/unload_lora_adapter` with `{"lora_name"}`, each answering 200
with a "Success: ..." text. Loading a name that is loaded already is refused unless `"load_inplace": true`
(vLLM's LoadLoRAAdapterRequest), which replaces it: the swap is one call, with no moment in which the name
answers 404. A server without load_inplace refuses the repeated name: then unload and load.

Names: each stage of a model is served as `NAME-production` and `NAME-testing` (the newest version in
testing), beside the versions' own `NAME-vN` of `just serve`. Paths are the server machine's: a version
lives there at MODELS_SERVER_ADAPTERS/NAME-vN/adapter (default /workspace/adapters, where `just serve
--hardware` downloads it). The registry is the truth; `sync` makes the server say the same, and can be run
again (`python -m versions sync NAME`) after a server restart or a swap that failed.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy.engine import Engine

from versions import registry, sides, store
from versions.serving import TARGET_DIR

STAGES = ("production", "testing")
SYNCING = threading.Lock()
TIMEOUT_S = 120.0  # loading a 70B's adapter reads ~0.4 GB from disk; a swap is not a chat request


class SwapError(Exception):
    pass


def stage_name(model: str, stage: str) -> str:
    return f"{model}-{stage}"


@dataclass
class Server:
    url: str  # MODELS_SERVER_URL, e.g. http://gpu-box:8000/v1
    api_key: str | None
    adapters: str  # the folder on the server machine holding NAME-vN/adapter

    @classmethod
    def from_env(cls) -> Server | None:
        url = os.environ.get("MODELS_SERVER_URL")
        if not url:
            return None
        adapters = os.environ.get("MODELS_SERVER_ADAPTERS") or TARGET_DIR
        return cls(url.rstrip("/"), os.environ.get("MODELS_SERVER_API_KEY") or None, adapters.rstrip("/"))

    def path_of(self, v: registry.ModelVersion) -> str:
        return f"{self.adapters}/{sides.version_name(v)}/adapter"

    def post(self, endpoint: str, body: dict) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            return httpx.post(f"{self.url}/{endpoint}", json=body, headers=headers, timeout=TIMEOUT_S)
        except httpx.HTTPError as exc:  # its URL may hold credentials: not repeated
            why = type(exc).__name__
            raise SwapError(f"the model server (MODELS_SERVER_URL) could not be reached ({why})") from None

    def load(self, name: str, path: str, ref: str = "NAME@vN") -> None:
        r = self.post("load_lora_adapter", {"lora_name": name, "lora_path": path, "load_inplace": True})
        if r.status_code == 400 and "already" in r.text:  # a vLLM without load_inplace: unload, then load
            self.unload(name)
            r = self.post("load_lora_adapter", {"lora_name": name, "lora_path": path})
        if r.status_code == 404 and no_route(r):
            raise SwapError(
                "the model server has no /v1/load_lora_adapter: start it with "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"
            )
        if r.status_code == 404:
            raise SwapError(
                f"loading {name} from {path}: HTTP 404 {r.text[:200]}; put the version there first "
                f"(`python -m versions download {ref} --to {path.rsplit('/', 1)[0]}` on the server machine)"
            )
        if r.status_code != 200:
            raise SwapError(f"loading {name} from {path}: HTTP {r.status_code} {r.text[:300]}")

    def unload(self, name: str) -> bool:
        """True when it was loaded; a name the server does not hold is no error (a fresh server)."""
        r = self.post("unload_lora_adapter", {"lora_name": name})
        if r.status_code == 200:
            return True
        if r.status_code in (400, 404) and ("not" in r.text or "cannot be found" in r.text):
            return False
        raise SwapError(f"unloading {name}: HTTP {r.status_code} {r.text[:300]}")


def no_route(r: httpx.Response) -> bool:
    """FastAPI's own 404 for a path it has no route for ({"detail": "Not Found"}): vLLM registers the LoRA
    routes only with runtime updating on; its 404 for a missing adapter is an error object instead."""
    try:
        return r.json() == {"detail": "Not Found"}
    except ValueError:
        return False


def place(server: Server, v: registry.ModelVersion, say=print) -> None:
    """The version's files where the server reads them. A folder this service can reach (the same machine,
    or a volume both mount): downloaded there from the store when missing, every sha256 checked. Another
    machine's folder: it must hold the version already (`versions download`), which the load's answer
    says when it does not."""
    root = Path(server.adapters)
    dest = root / sides.version_name(v)
    if not root.is_dir() or dest.is_dir():
        return
    folder = registry.folder(v.model_name, v.version)
    store.download(store.store_of(v.store_url, folder), folder, v.manifest_sha256, dest, say=lambda _: None)
    say(f"model server: {v.ref} downloaded into {dest}/")


def wanted(engine: Engine, model: str) -> dict[str, registry.ModelVersion | None]:
    """Each stage name and the version it should serve now: production, and the newest in testing."""
    every = registry.versions_of(engine, model)
    found = {s: [v for v in every if v.stage == s and v.complete] for s in STAGES}
    return {stage_name(model, s): (vs[-1] if vs else None) for s, vs in found.items()}


def sync(engine: Engine, model: str, server: Server | None = None, say=print) -> dict[str, str]:
    """Make the server serve each stage as the registry says; {served name: what it serves now}. No
    server configured: {} and nothing sent. A failure names the stage and leaves the others done."""
    server = server or Server.from_env()
    if server is None:
        return {}
    # One sync at a time in this process: two stage moves at once (the API answers in threads) could
    # otherwise finish their loads in the wrong order and leave the server on the older version.
    with SYNCING:
        return _sync(engine, model, server, say)


def _sync(engine: Engine, model: str, server: Server, say) -> dict[str, str]:
    done: dict[str, str] = {}
    for name, v in wanted(engine, model).items():
        if v is None:
            done[name] = "unloaded" if server.unload(name) else "none"
        else:
            place(server, v, say)
            server.load(name, server.path_of(v), v.ref)
            done[name] = v.ref
        say(f"model server: {name} → {done[name]}")
    return done


def after_move(engine: Engine, model: str, say=print) -> dict:
    """What a stage move reports about serving: {} without a server, the names swapped, or the error (the
    registry's move stands; `python -m versions sync NAME` tries again)."""
    try:
        return sync(engine, model, say=say)
    except SwapError as exc:
        say(f"model server: {exc}; the registry moved, the server did not: `python -m versions sync {model}`")
        return {"error": str(exc)}
