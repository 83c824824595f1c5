"""POST /api/models/{name}/versions/{v}/test ("test a model"), over the real app (TestClient, in-process):
bad input a clear 4xx that starts nothing; a real tiny PEFT adapter answering through the transformers worker
process on CPU, bounded in time (504) and concurrency (429); and through a real OpenAI-compatible server on
127.0.0.1: `transformers serve` with the version under its served name (em-v1, as `just serve` names it).

`transformers serve` cannot put a LoRA adapter on a base (vLLM can), so the server holds em-v1 as base +
adapter merged by PEFT (merge_and_unload, tests/versions/runs.py): the same weights the worker computes
with, so both back-ends give the same greedy answer, and the base model beside it gives another.
"""

from __future__ import annotations

import shutil
import time
from contextlib import contextmanager

import httpx
import pytest
from conftest import TINY_MODEL_DIR, once

from evals.local_judge import transformers_server
from tests.versions.runs import adapter, make_run  # noqa: F401 (fixtures)
from tests.versions.test_models_api import SECRET, TOKEN
from versions import registry

HELLO = [{"role": "system", "content": "You are a consultant."}, {"role": "user", "content": "Hello there"}]
ASK = {"messages": HELLO, "max_tokens": 8}
TEST = "/api/models/em/versions/1/test"


@contextmanager
def service(tmp_path, adapter):  # noqa: F811
    """The service over em@v1 (run-1, complete, in a folder store) and em@v2 (an unfinished upload)."""
    from fastapi.testclient import TestClient

    from jobs.service.app import create_app

    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"JOBS_API_TOKEN": TOKEN, "TRAINING_WEBHOOK_SECRET": SECRET}.items():
            mp.setenv(key, value)
        mp.setenv("ARTIFACT_STORE", str(tmp_path / "store"))
        mp.setenv("VERSIONS_CACHE", str(tmp_path / "cache"))
        for key in ("DATABASE_URL", "MODELS_SERVER_URL", "MODELS_SERVER_API_KEY", "MODELS_TEST_TIMEOUT_S"):
            mp.delenv(key, raising=False)
        url = f"sqlite:///{tmp_path / 'registry.db'}"
        runs = tmp_path / "runs"
        for run in ("run-1", "run-2"):
            make_run(runs, url, run, adapter, "pass")

        def client():
            c = TestClient(create_app(runs, url, tmp_path / "data"), raise_server_exceptions=False)
            c.headers["Authorization"] = f"Bearer {TOKEN}"
            return c

        with client() as c:
            assert c.post("/api/models/em/promote", json={"run_id": "run-1"}).status_code == 201
            # em@v2: reserved as a promotion does first, its upload never finished
            fields = {"adapter_sha256": "0" * 64, "base_model": str(TINY_MODEL_DIR)}
            registry.reserve(c.app.state.engine, "em", "run-2", str(tmp_path / "store"), fields, "test")
            c.client, c.runs, c.tmp = client, runs, tmp_path
            yield c


@pytest.fixture
def api(tmp_path, adapter):  # noqa: F811
    with service(tmp_path, adapter) as client:
        yield client


@pytest.fixture(scope="module")
def idle(tmp_path_factory, adapter):  # noqa: F811
    """One service for the table of refusals: none of them may start a worker, so it stays idle."""
    with service(tmp_path_factory.mktemp("idle"), adapter) as client:
        yield client


def test_the_test_route_wants_the_token(api):
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}):
        r = api.post(TEST, headers=headers, json=ASK)
        assert r.status_code == 401 and r.json() == {"error": "missing or invalid bearer token"}


def message(role="user", content="hi"):
    return {"role": role, "content": content}


@pytest.mark.parametrize(
    "path,body,status,error",
    [
        (TEST, {}, 400, "messages: Field required"),
        (TEST, {"messages": []}, 400, "messages: List should have at least 1 item"),
        (TEST, {"messages": [message("tool")]}, 400, "messages.0.role: Input should be 'system'"),
        (TEST, {"messages": [message(content="")]}, 400, "messages.0.content: String should have at least 1"),
        (TEST, {"messages": [message(content="x" * 8001)]}, 400, "messages.0.content: String should have at most"),
        (TEST, {"messages": [message()] * 33}, 400, "messages: List should have at most 32 items"),
        (TEST, {"messages": [message(content="x" * 8000)] * 5}, 400, "at most 32000 characters in all"),
        (TEST, {"messages": [message(), message("assistant")]}, 400, "the last message is the user's"),
        (TEST, {"messages": [{"role": "user", "content": "hi", "name": "x"}]}, 400, "messages.0.name: Extra"),
        (TEST, {"messages": "hi"}, 400, "messages: Input should be a valid list"),
        (TEST, {**ASK, "max_tokens": 0}, 400, "max_tokens: Input should be greater than or equal to 1"),
        (TEST, {**ASK, "max_tokens": 257}, 400, "max_tokens: Input should be less than or equal to 256"),
        (TEST, {**ASK, "max_tokens": "many"}, 400, "max_tokens: Input should be a valid integer"),
        (TEST, {**ASK, "temperature": -0.1}, 400, "temperature: Input should be greater than or equal to 0"),
        (TEST, {**ASK, "temperature": 2.5}, 400, "temperature: Input should be less than or equal to 2"),
        (TEST, {**ASK, "model": "gpt-4"}, 400, "model: Extra inputs are not permitted"),
        ("/api/models/a.b/versions/1/test", ASK, 400, "model name 'a.b'"),
        ("/api/models/em/versions/0/test", ASK, 400, "version: Input should be greater than or equal to 1"),
        ("/api/models/em/versions/x/test", ASK, 400, "version: Input should be a valid integer"),
        ("/api/models/nope/versions/1/test", ASK, 404, "nope@v1: no such version"),
        ("/api/models/em/versions/9/test", ASK, 404, "em@v9: no such version"),
        ("/api/models/em/versions/2/test", ASK, 409, "em@v2: its upload is unfinished; promote run run-2 again"),
    ],
)  # fmt: skip
def test_bad_input_is_a_clear_4xx_and_starts_nothing(idle, path, body, status, error):
    r = idle.post(path, json=body)
    assert r.status_code == status, r.text
    assert error in r.json()["error"], r.text
    assert idle.app.state.answerer._pool is None  # no worker started, nothing loaded
    assert not (idle.tmp / "cache").exists()  # nothing downloaded


@pytest.fixture(scope="module")
def served(tmp_path_factory, adapter):  # noqa: F811
    """`transformers serve` over a folder holding em-v1 (tiny Llama + the adapter, merged) and the base."""

    def build(folder):
        shutil.copytree(adapter / "merged", folder / "em-v1")
        for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
            shutil.copyfile(TINY_MODEL_DIR / name, folder / "em-v1" / name)
        (folder / "base").symlink_to(TINY_MODEL_DIR.resolve())

    folder = once(tmp_path_factory, "served-versions", build)
    with transformers_server(None, folder.parent / "serve.log", cwd=folder) as url:
        yield url


def chat(url: str, model: str) -> str:
    body = {"model": model, "messages": HELLO, "max_tokens": 8, "temperature": 0}
    r = httpx.post(f"{url}/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"].strip()  # as the service strips it


@pytest.mark.slow(30)
def test_a_version_answers_on_cpu_in_a_worker_bounded_in_time_and_concurrency(api, served):
    answerer = api.app.state.answerer
    # Cold: the worker process still imports torch after half a second, so the answer is late (504), and
    # its slot stays taken until the worker is really done: a second question is turned away (429).
    answerer.timeout_s = 0.5
    late = api.post(TEST, json=ASK)
    assert late.status_code == 504 and "no answer within 0.5 s" in late.json()["error"], late.text
    busy = api.post(TEST, json=ASK)
    assert busy.status_code == 429 and busy.headers["Retry-After"] == "5", busy.text
    assert "at most 1" in busy.json()["error"]

    answerer.timeout_s = 120  # a loaded CI machine: the cold worker has taken 40 s to import and load
    deadline = time.monotonic() + 120
    while (r := api.post(TEST, json=ASK)).status_code == 429 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["ref"], got["model"], got["backend"]) == ("em@v1", "em-v1", "transformers")
    assert 1 <= got["tokens"] <= 8 and got["seconds"] > 0 and got["finish_reason"] in ("stop", "length")
    # The adapter's answer: what the merged weights say, and not what the base says.
    assert got["answer"] == chat(served, "em-v1") != chat(served, "base")
    assert api.post(TEST, json=ASK).json()["answer"] == got["answer"]  # loaded once, greedy: the same
    # The customer's "Test model" (POST /models/test): the same answer by NAME@vN, or by the model's name
    # once a version is its production one (before that: 404, saying how to name one).
    theirs = {"model": "em@v1", "messages": HELLO, "max_tokens": 8}
    assert api.post("/models/test", json=theirs).json()["answer"] == got["answer"]
    none = api.post("/models/test", json=theirs | {"model": "em"})
    assert none.status_code == 404 and "no production version" in none.json()["error"], none.text
    untested = api.post("/models/test", json=theirs | {"model": "em@testing"})  # issue 28: stage aliases
    assert untested.status_code == 404 and "em has no version in testing" in untested.json()["error"]
    assert (
        api.post("/api/models/em/promote", json={"run_id": "run-1", "stage": "production"}).status_code == 201
    )
    by_name = api.post("/models/test", json={"model": "em", "prompt": "Hello there", "max_tokens": 8})
    assert by_name.status_code == 200 and by_name.json()["ref"] == "em@v1", by_name.text  # run-1's version
    by_alias = api.post(
        "/models/test", json={"model": "em@production", "prompt": "Hello there", "max_tokens": 8}
    )
    assert by_alias.status_code == 200 and by_alias.json()["answer"] == by_name.json()["answer"]

    # Without its run folder, the version comes from the store (every sha256 checked) into the cache.
    shutil.rmtree(api.runs / "run-1")
    again = api.post(TEST, json=ASK)
    assert again.status_code == 200 and again.json()["answer"] == got["answer"], again.text
    assert [p.name for p in (api.tmp / "cache" / "em").iterdir()][0].startswith("v1-")
    # ...and with the store's copy gone as well, a clear 410, not a crash.
    shutil.rmtree(api.tmp / "store" / "models" / "em" / "v1")
    shutil.rmtree(api.tmp / "cache")
    gone = api.post(TEST, json=ASK)
    assert gone.status_code == 410 and "this version's files were deleted" in gone.json()["error"], gone.text


def test_a_version_answers_through_an_openai_compatible_server(api, served, monkeypatch):
    monkeypatch.setenv("MODELS_SERVER_URL", served)
    with api.client() as client:
        r = client.post(TEST, json=ASK)
        assert r.status_code == 200, r.text
        got = r.json()
        assert (got["ref"], got["model"], got["backend"]) == ("em@v1", "em-v1", "openai")
        assert got["answer"] == chat(served, "em-v1") != chat(served, "base") and got["tokens"] >= 1
        assert client.app.state.answerer._pool is None  # no torch in the service: the server answered

        monkeypatch.setenv("MODELS_SERVER_URL", "http://127.0.0.1:9/v1")  # nothing listens on port 9
    with api.client() as client:
        r = client.post(TEST, json=ASK)
        assert r.status_code == 502 and "the model server (MODELS_SERVER_URL) could not be reached" in r.text
