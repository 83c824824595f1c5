"""Hot swap (issue 28, item 3): a running model server follows the stages. The real service (SQLite, a folder
store) with MODELS_SERVER_URL on a vLLM stand-in (tests/vllm_standin.py: runtime LoRA loading as vLLM's docs
give it, each answer naming the adapter folder it came from): promote, promote again, roll back and retire
through the API, and the customer's "test model" call answers from the version in production each time,
the stand-in never restarted. Then the server cases vLLM has: one without runtime updating (the stage
moves, the swap is reported failed with what to do), one without load_inplace (unload, then load)."""

from __future__ import annotations

import os
import shutil

import httpx
import pytest
from conftest import free_port, start_service, stop_process

from jobs import registry as jobs_registry
from tests.versions.runs import adapter, adapter_b, make_run  # noqa: F401 (fixtures)
from tests.vllm_standin import VllmStandIn
from versions import hotswap, registry
from versions.promote import promote

TOKEN = "hotswap-token-71d2"


def on_server(adapters, folder, *names: str) -> None:
    """What `just serve --hardware` leaves on the GPU machine: each version's adapter in ADAPTERS/NAME-vN/."""
    for name in names:
        shutil.copytree(folder, adapters / name / "adapter")


def test_promote_and_rollback_change_what_the_server_answers_without_a_restart(tmp_path, adapter, adapter_b):  # noqa: F811
    runs, url, adapters = (
        tmp_path / "runs",
        f"sqlite:///{tmp_path / 'runs' / 'registry.db'}",
        tmp_path / "gpu",
    )
    make_run(runs, url, "run-1", adapter)
    make_run(runs, url, "run-2", adapter_b)
    on_server(adapters, adapter, "em-v1")  # what `just serve --hardware` put there; em-v2 is not there yet
    with VllmStandIn() as server:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "WEBHOOK_URL")}
        env |= {"JOBS_API_TOKEN": TOKEN, "TRAINING_WEBHOOK_SECRET": "whsec-hotswap", "ARTIFACT_STORE":
                str(tmp_path / "store"), "MODELS_SERVER_URL": server.url, "MODELS_SERVER_ADAPTERS": str(adapters)}  # fmt: skip
        proc = start_service(["-m", "jobs", "--runs-dir", str(runs), "service", "--port", str(port)], env,
                             tmp_path / "service.log", port)  # fmt: skip
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"},
                              timeout=60) as api:  # fmt: skip

                def answered() -> str:
                    r = api.post("/models/test", json={"model": "em", "prompt": "Hello"})
                    assert r.status_code == 200, r.text
                    return r.json()["answer"]

                r = api.post("/api/models/em/promote", json={"run_id": "run-1", "stage": "production"})
                assert r.status_code == 201 and r.json()["serving"] == {
                    "em-production": "em@v1",
                    "em-testing": "none",
                }
                assert answered() == f"answered by {adapters}/em-v1/adapter"
                r = api.post("/api/models/em/promote", json={"run_id": "run-2", "stage": "production"})
                assert r.status_code == 201 and r.json()["serving"]["em-production"] == "em@v2"
                assert answered() == f"answered by {adapters}/em-v2/adapter"
                # A version promoted after the server started: fetched from the store into its folder.
                got = (adapters / "em-v2" / "adapter" / "adapter_model.safetensors").read_bytes()
                assert got == (adapter_b / "adapter_model.safetensors").read_bytes()
                r = api.post("/api/models/em/rollback")
                assert r.status_code == 200 and r.json()["serving"]["em-production"] == "em@v1"
                assert answered() == f"answered by {adapters}/em-v1/adapter"
                # Swapped in place: never a moment without em-production (no unload between the loads).
                swaps = [(p, b.get("lora_name")) for p, b in server.calls if "lora_adapter" in p]
                assert ("/v1/unload_lora_adapter", "em-production") not in swaps
                assert all(b.get("load_inplace") for p, b in server.calls if p == "/v1/load_lora_adapter")

                r = api.post("/api/models/em/versions/1/retire")
                assert r.status_code == 200 and r.json()["serving"]["em-production"] == "unloaded"
                assert "em-production" not in server.loaded
                assert api.post("/models/test", json={"model": "em", "prompt": "Hi"}).status_code == 404
        finally:
            stop_process(proc)


@pytest.fixture
def staged(tmp_path, adapter):  # noqa: F811
    runs, url = tmp_path / "runs", f"sqlite:///{tmp_path / 'registry.db'}"
    make_run(runs, url, "run-1", adapter)
    engine = jobs_registry.engine(url)
    promote(engine, runs, "run-1", "em", "production", store_url=str(tmp_path / "store"), say=lambda _: None)
    on_server(tmp_path / "gpu", adapter, "em-v1")
    return engine, tmp_path / "gpu"


def test_a_server_without_runtime_updating_is_said_and_an_old_one_is_swapped_by_unload_and_load(staged):
    engine, adapters = staged
    said: list[str] = []
    with VllmStandIn(runtime_updating=False) as server:
        target = hotswap.Server(server.url, None, str(adapters))
        with pytest.raises(hotswap.SwapError, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"):
            hotswap.sync(engine, "em", target, say=said.append)
    with VllmStandIn(load_inplace=False) as server:  # an older vLLM: a loaded name is refused outright
        target = hotswap.Server(server.url, None, str(adapters))
        assert hotswap.sync(engine, "em", target, say=said.append) == {
            "em-production": "em@v1",
            "em-testing": "none",
        }
        assert (
            hotswap.sync(engine, "em", target, say=said.append)["em-production"] == "em@v1"
        )  # again: a reload
        paths = [p for p, b in server.calls if b.get("lora_name") == "em-production"]
        assert paths[-3:] == ["/v1/load_lora_adapter", "/v1/unload_lora_adapter", "/v1/load_lora_adapter"]
        assert server.loaded == {"em-production": f"{adapters}/em-v1/adapter"}
    with VllmStandIn() as server:  # the version is not on the server machine: said, with its path
        target = hotswap.Server(server.url, None, str(adapters / "elsewhere"))
        with pytest.raises(
            hotswap.SwapError, match="elsewhere/em-v1/adapter: HTTP 404.*versions download em@v1"
        ):
            hotswap.sync(engine, "em", target, say=said.append)
    assert registry.get_version(engine, "em", 1).stage == "production"  # the registry is the truth throughout
