"""/api/models in the jobs service (FastAPI's TestClient over the real app, in-process): the token, names
that are names, every bad input a clear 4xx that changes nothing, promote / rollback / download URLs over a
folder store and over S3 on loopback (moto), deleted files answered 410, a failing store 502.
"""

from __future__ import annotations

import hashlib

import httpx
import pytest
from sqlalchemy import text

from tests.s3_server import s3_server
from tests.versions.runs import adapter, make_run, s3_env

TOKEN, SECRET = "tok-models-1", "whsec-models-1"
ROUTES = [
    ("GET", "/api/models"),
    ("GET", "/api/models/em"),
    ("POST", "/api/models/em/promote"),
    ("POST", "/api/models/em/rollback"),
    ("GET", "/api/models/em/versions/1/download"),
]


@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        yield server


@pytest.fixture
def api(tmp_path, monkeypatch, adapter):
    from fastapi.testclient import TestClient

    from jobs.service.app import create_app

    monkeypatch.setenv("JOBS_API_TOKEN", TOKEN)
    monkeypatch.setenv("TRAINING_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("ARTIFACT_STORE", str(tmp_path / "store"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    runs = tmp_path / "runs"
    for run, verdict in [("run-1", "pass"), ("run-2", "pass"), ("run-bad", "fail")]:
        make_run(runs, url, run, adapter, verdict)
    client = TestClient(create_app(runs, url, tmp_path / "data"), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {TOKEN}"
    client.url, client.tmp = url, tmp_path
    return client


def rows(api) -> int:
    with api.app.state.engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM model_versions")).scalar()


def promote(api, name="em", **body):
    return api.post(f"/api/models/{name}/promote", json=body)


@pytest.mark.parametrize("method,path", ROUTES)
def test_every_models_route_wants_the_token(api, method, path):
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}):
        r = api.request(method, path, headers=headers, json={"run_id": "run-1"})
        assert r.status_code == 401 and r.json() == {"error": "missing or invalid bearer token"}
    assert rows(api) == 0


@pytest.mark.parametrize(
    "path,body,status,message",
    [
        (
            "/api/models/..%2F..%2Fetc/promote",
            {"run_id": "run-1"},
            404,
            "Not Found",
        ),  # no route: never a path
        ("/api/models/%2E%2E/promote", {"run_id": "run-1"}, 400, "model name '..'"),
        ("/api/models/a.b/promote", {"run_id": "run-1"}, 400, "model name 'a.b'"),
        ("/api/models/-em/promote", {"run_id": "run-1"}, 400, "model name '-em'"),
        ("/api/models/" + "m" * 65 + "/promote", {"run_id": "run-1"}, 400, "model name"),
        ("/api/models/em/promote", {"run_id": "../runs/run-1"}, 400, "a run id is 1-64 of"),
        ("/api/models/em/promote", {"run_id": "/etc"}, 400, "a run id is 1-64 of"),
        ("/api/models/em/promote", {"run_id": "run-1", "stage": "archived"}, 400, "stage"),
        ("/api/models/em/promote", {"run_id": "run-1", "force": [1]}, 400, "force"),
        ("/api/models/em/promote", {"run_id": "run-1", "path": "/tmp"}, 400, "path: Extra inputs"),
        ("/api/models/em/promote", {"run_id": "run-1", "note": "x" * 2001}, 400, "note"),
        (
            "/api/models/em/promote",
            {"run_id": "run-1", "note": "bell\x07"},
            400,
            "note: at most 2000 printable",
        ),
        ("/api/models/em/promote", {}, 400, "run_id: Field required"),
        ("/api/models/em/promote", {"run_id": "no-such-run"}, 404, "run no-such-run: not in the registry"),
        ("/api/models/em/promote", {"run_id": "run-bad"}, 409, "run run-bad failed its evaluation; --force"),
    ],
)
def test_bad_input_is_a_clear_4xx_and_writes_nothing(api, path, body, status, message):
    r = api.post(path, json=body)
    assert r.status_code == status, r.text
    assert message in r.json().get("error", r.json().get("detail", "")), r.text
    assert rows(api) == 0
    assert not (api.tmp / "store").exists()


def test_promote_show_rollback_and_download_urls_over_a_folder_store(api):
    assert api.get("/api/models").json() == {"models": []}
    assert api.get("/api/models/em").status_code == 404
    r = promote(api, run_id="run-1", stage="production", note="first")
    assert r.status_code == 201, r.text
    v1 = r.json()
    assert (v1["ref"], v1["stage"], v1["verdict"], v1["created_by"], v1["complete"]) == (
        "em@v1",
        "production",
        "pass",
        "api",
        True,
    )
    assert "store_url" not in v1  # a server path is not the API's to tell
    assert promote(api, run_id="run-bad", force=True).json()["forced"] is True
    assert promote(api, run_id="run-2", stage="production").status_code == 201

    shown = api.get("/api/models/em").json()
    assert shown["production"] == 3 and [v["stage"] for v in shown["versions"]] == [
        "archived",
        "stored",
        "production",
    ]
    assert api.get("/api/models").json()["models"][0] == {
        "name": "em", "versions": 3, "latest": 3, "production": 3, "production_verdict": "pass"
    }  # fmt: skip
    r = api.post("/api/models/em/rollback")
    assert r.status_code == 200 and (r.json()["production"]["ref"], r.json()["archived"]["ref"]) == (
        "em@v1",
        "em@v3",
    )
    again = api.post("/api/models/em/rollback")
    assert again.status_code == 409 and "em@v1 is the only version" in again.json()["error"]
    retired = api.post("/api/models/em/versions/3/retire")  # issue 28: out of use on purpose
    assert (
        retired.status_code == 200
        and retired.json()["retired"]["by"]
        and retired.json()["stage"] == "archived"
    )
    assert api.post("/api/models/em/versions/3/retire").status_code == 409
    assert api.post("/api/models/em/versions/9/retire").status_code == 404

    r = api.get("/api/models/em/versions/1/download")
    assert r.status_code == 409 and "a folder store (store/) has no URL" in r.json()["error"]
    for path, status in [("/api/models/em/versions/9/download", 404), ("/api/models/em/versions/0/download", 400),
                         ("/api/models/em/versions/x/download", 400), ("/api/models/em/versions/1/download?expires=5", 400),
                         ("/api/models/nope/versions/1/download", 404)]:  # fmt: skip
        assert api.get(path).status_code == status, path


def test_download_urls_from_s3_deleted_files_410_and_a_failing_store_502(api, s3, monkeypatch):
    for key, value in s3_env(s3, "model-artifacts-api").items():
        monkeypatch.setenv(key, value)
    assert promote(api, run_id="run-1").status_code == 201
    r = api.get("/api/models/em/versions/1/download?expires=300")
    assert r.status_code == 200, r.text
    files = r.json()["files"]
    assert r.json()["expires_in"] == 300 and "adapter/adapter_model.safetensors" in files
    weights = files["adapter/adapter_model.safetensors"]
    assert hashlib.sha256(httpx.get(weights["url"], timeout=30).content).hexdigest() == weights["sha256"]

    client = s3.client()
    listing = client.list_objects_v2(Bucket="model-artifacts-api")["Contents"]
    for obj in listing:
        client.delete_object(Bucket="model-artifacts-api", Key=obj["Key"])
    gone = api.get("/api/models/em/versions/1/download")
    assert gone.status_code == 410 and "this version's files were deleted" in gone.json()["error"]

    monkeypatch.setenv("ARTIFACT_STORE", "s3://no-such-bucket/x")
    failed = promote(api, run_id="run-2")
    assert failed.status_code == 502, failed.text
    assert (
        "no such bucket" in failed.json()["error"]
        and "the same promote command finishes it" in failed.json()["error"]
    )
    v2 = api.get("/api/models/em").json()["versions"][1]
    assert (v2["ref"], v2["complete"]) == ("em@v2", False)  # marked unfinished, never looks complete
    r = api.get("/api/models/em/versions/2/download")
    assert r.status_code == 409 and "its upload is unfinished" in r.json()["error"]
    # The store put right, the same request finishes em@v2 there (not in the bucket that never was).
    monkeypatch.setenv("ARTIFACT_STORE", "s3://model-artifacts-api/fixed")
    done = promote(api, run_id="run-2")
    assert done.status_code == 201 and (done.json()["ref"], done.json()["complete"]) == ("em@v2", True)
    assert api.get("/api/models/em/versions/2/download").status_code == 200


def test_openapi_lists_the_models_routes(api):
    paths = api.get("/openapi.json").json()["paths"]
    assert set(paths["/api/models"]) == {"get"} and set(paths["/api/models/{name}"]) == {"get"}
    assert set(paths["/api/models/{name}/promote"]) == {"post"} and set(
        paths["/api/models/{name}/rollback"]
    ) == {"post"}
    assert set(paths["/api/models/{name}/versions/{version}/download"]) == {"get"}


def test_named_tokens_say_who_moved_a_version(tmp_path, monkeypatch, adapter):  # noqa: F811
    """JOBS_API_TOKENS (issue 28, item 5): each person or app its own token, the registry records the name;
    the single JOBS_API_TOKEN still works (as "api"); a malformed list stops the service from starting."""
    from fastapi.testclient import TestClient

    from jobs.service.app import create_app

    maria, bot = "maria-token-0123456789", "ci-bot-token-9876543210"
    monkeypatch.setenv("JOBS_API_TOKEN", TOKEN)
    monkeypatch.setenv("JOBS_API_TOKENS", f"maria:{maria}, ci-bot:{bot}")
    monkeypatch.setenv("TRAINING_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("ARTIFACT_STORE", str(tmp_path / "store"))
    url, runs = f"sqlite:///{tmp_path / 'registry.db'}", tmp_path / "runs"
    for run in ("run-1", "run-2"):
        make_run(runs, url, run, adapter)
    client = TestClient(create_app(runs, url, tmp_path / "data"), raise_server_exceptions=False)
    as_ = lambda token: {"Authorization": f"Bearer {token}"}  # noqa: E731
    body = {"run_id": "run-1", "stage": "production"}
    assert (
        client.post("/api/models/em/promote", json=body, headers=as_(maria)).json()["created_by"] == "maria"
    )
    body = {"run_id": "run-2", "stage": "production"}
    assert client.post("/api/models/em/promote", json=body, headers=as_(TOKEN)).json()["created_by"] == "api"
    back = client.post("/api/models/em/rollback", headers=as_(bot)).json()
    assert back["production"]["stage_changed_by"] == "ci-bot"
    assert client.get("/api/models", headers=as_(bot + "x")).status_code == 401

    for bad in ("maria", "maria:short", "ma ria:" + maria, f"a:{maria},b:{maria}"):
        monkeypatch.setenv("JOBS_API_TOKENS", bad)
        with pytest.raises(RuntimeError, match="JOBS_API_TOKENS"):
            create_app(runs, url, tmp_path / "data")
