"""The jobs service over real HTTP: a real uvicorn server (a subprocess, its log captured) on a free
port, real signed webhook events, a real registry on SQLite and on PostgreSQL (TEST_POSTGRES_URL; a
schema of its own). One server per database for the whole module, to stay fast.

Every attack must be refused and write nothing: the row counts of training_jobs, webhook_events and
training_metrics_history are compared before and after each one. The last test greps the server's log,
every response body and every database row for the token and the secret.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from conftest import free_port, postgres_url, start_service, stop_process
from sqlalchemy import create_engine, text

from jobs import registry, webhooks
from jobs.service.receiver import MAX_BODY

TABLES = ("training_jobs", "webhook_events", "training_metrics_history")

# The server process: the real jobs.service.main, with jobs.service.start.start_run wrapped so that the
# preset "fake-ok" records its arguments instead of launching a training run (the real function runs
# for anything else, e.g. an unknown preset).
BOOT = """
import json, sys
from pathlib import Path
from jobs.service import start as start_mod
real = start_mod.start_run
def start(preset, *args, **kw):
    if preset != "fake-ok":
        return real(preset, *args, **kw)
    Path(sys.argv[4]).write_text(json.dumps([preset, *args, {k: str(v) for k, v in kw.items()}]))
    return "fake-run-id"
start_mod.start_run = start
import jobs.service
sys.exit(jobs.service.main(host="127.0.0.1", port=int(sys.argv[1]), runs_dir=sys.argv[2], db_url=sys.argv[3]))
"""


class Service:
    def __init__(self, base: str, db_url: str, token: str, secret: str, log: Path, workdir: Path):
        self.base, self.db_url, self.token, self.secret, self.log = base, db_url, token, secret, log
        self.workdir = workdir
        self.client = httpx.Client(base_url=base, timeout=30.0)
        self.engine = create_engine(registry.database_url(db_url))
        self.bodies: list[str] = []  # every response body, for the leak check
        self.lock = threading.Lock()

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        response = self.client.request(method, path, **kwargs)
        with self.lock:
            self.bodies.append(response.text)
        return response

    def api(self, method: str, path: str, token: str | None = "", **kwargs) -> httpx.Response:
        token = self.token if token == "" else token
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return self.request(method, path, headers=headers, **kwargs)

    def send(self, event: dict, secret: str | None = None, **kwargs) -> httpx.Response:
        body = webhooks.encode(event)
        return self.post_raw(body, webhooks.sign(secret or self.secret, body), **kwargs)

    def post_raw(self, body, signature: str | None, content_type: str = "application/json", client=None):
        headers = {"Content-Type": content_type}
        if signature is not None:
            headers[webhooks.SIGNATURE_HEADER] = signature
        response = (client or self.client).post("/api/training/webhook", content=body, headers=headers)
        with self.lock:
            self.bodies.append(response.text)
        return response

    def counts(self) -> dict:
        with self.engine.connect() as c:
            return {t: c.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in TABLES}

    def job(self, job_id: str) -> dict:
        response = self.api("GET", f"/api/training/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(request, tmp_path_factory):
    work = tmp_path_factory.mktemp(f"service-{request.param}")
    schema = None
    if request.param == "sqlite":
        db_url = f"sqlite:///{work / 'registry.db'}"
    else:
        # A schema of our own (first on the search_path): exact row counts, nothing left behind.
        base = postgres_url()
        schema = f"svc_{uuid.uuid4().hex[:12]}"
        admin = create_engine(registry.database_url(base))
        with admin.begin() as c:
            c.execute(text(f"CREATE SCHEMA {schema}"))
        db_url = base + ("&" if "?" in base else "?") + f"options=-csearch_path%3D{schema}"
    token, secret = f"tok-{secrets.token_hex(16)}", f"whsec-{secrets.token_hex(16)}"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "WEBHOOK_URL")}
    env |= {"JOBS_API_TOKEN": token, "TRAINING_WEBHOOK_SECRET": secret}
    port = free_port()
    log = work / "service.log"
    boot = ["-c", BOOT, str(port), str(work / "runs"), db_url, str(work / "started.json")]
    proc = start_service(boot, env, log, port)
    svc = Service(f"http://127.0.0.1:{port}", db_url, token, secret, log, work)
    yield svc
    stop_process(proc)
    svc.client.close()
    svc.engine.dispose()
    if schema:
        with admin.begin() as c:
            c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def new_id(prefix: str = "job") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def event(job_id: str, sequence: int, status: str, **fields) -> dict:
    out = {
        "event_id": uuid.uuid4().hex,
        "sequence": sequence,
        "job_id": job_id,
        "status": status,
        "step": fields.pop("step", None),
        "total_steps": fields.pop("total_steps", None),
        "metrics": fields.pop("metrics", {}),
        "timestamp": int(time.time()),
    }
    if status == "queued" and "job" not in fields:
        fields["job"] = {
            "preset": "balanced",
            "model": "smoke",
            "hardware": "cpu",
            "estimated_cost": 0.25,
            "hyperparameters": {"lora_r": 16, "learning_rate": 2e-4},
        }
    return out | fields


def registered(svc: Service, job_id: str | None = None) -> str:
    job_id = job_id or new_id()
    response = svc.send(event(job_id, 1, "queued"))
    assert response.status_code == 200, response.text
    return job_id


# -- health, schema, dashboard files -------------------------------------------------------------------


def test_health_reports_database_and_gpus(service, request):
    response = service.request("GET", "/health")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    assert body["database"] == request.node.callspec.params["service"]
    assert isinstance(body["gpu"]["present"], bool) and isinstance(body["gpu"]["count"], int)
    assert body["gpu"]["present"] == (body["gpu"]["count"] > 0)
    # The customer's plan's shape (customer-start-flow.md, "Test model"), from the same figures.
    assert body["status"] == "healthy" and body["registry"] is True
    assert (body["gpu_available"], body["gpu_count"]) == (body["gpu"]["present"], body["gpu"]["count"])


def test_openapi_lists_the_routes(service):
    schema = service.request("GET", "/openapi.json").json()
    paths = schema["paths"]
    assert set(paths["/api/training/webhook"]) == {"post"}
    assert set(paths["/api/training/jobs"]) == {"get", "post"}
    assert set(paths["/api/training/jobs/{job_id}"]) == {"get", "delete"}
    assert "get" in paths["/health"]
    webhook = paths["/api/training/webhook"]["post"]
    assert "event_id" in webhook["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert {"401", "409", "413", "415"} <= set(webhook["responses"])


def test_dashboard_page_and_static_files_need_no_token(service):
    page = service.request("GET", "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert service.request("GET", "/static/index.html").status_code == 200
    assert service.request("GET", "/static/..%2Fapp.py").status_code == 404
    assert service.request("GET", "/static/..%2F..%2Fregistry.py").status_code == 404
    missing = service.request("GET", "/static/no-such-file.js")
    assert missing.status_code == 404


# -- webhook: what an accepted event does --------------------------------------------------------------


def test_queued_event_registers_the_job_and_training_events_fill_its_history(service):
    job_id = new_id()
    first = service.send(event(job_id, 1, "queued"))
    assert first.status_code == 200 and first.json() == {"ok": True, "applied": True}
    for seq, step, loss in [(2, 1, 3.0), (3, 2, 2.5), (4, 3, 2.2)]:
        metrics = {"loss": loss, "learning_rate": 2e-4, "grad_norm": 0.9, "epoch": step / 10}
        r = service.send(event(job_id, seq, "training", step=step, total_steps=10, metrics=metrics))
        assert r.status_code == 200, r.text
    r = service.send(event(job_id, 5, "training", step=3, total_steps=10, metrics={"eval_loss": 2.4}))
    assert r.status_code == 200
    # Step 3 logged again (after a resume): replaced, not doubled.
    again = {"loss": 2.1, "learning_rate": 1e-4, "grad_norm": 0.8, "epoch": 0.3}
    assert (
        service.send(event(job_id, 6, "training", step=3, total_steps=10, metrics=again)).status_code == 200
    )

    job = service.job(job_id)
    assert (job["status"], job["step"], job["total_steps"], job["epoch"]) == ("training", 3, 10, 0.3)
    assert (job["preset"], job["model"], job["hardware"], job["estimated_cost"]) == (
        "balanced",
        "smoke",
        "cpu",
        0.25,
    )
    assert job["hyperparameters"] == {"lora_r": 16, "learning_rate": 2e-4}
    assert job["started_at"] and job["created_at"].endswith("+00:00")
    assert job["last_loss"] == 2.1 and job["eval_loss"] == 2.4
    history = [(p["step"], p["loss"], p["eval_loss"]) for p in job["metrics_history"]]
    assert history == [(1, 3.0, None), (2, 2.5, None), (3, None, 2.4), (3, 2.1, None)]
    assert set(job["metrics_history"][0]) == {
        "step",
        "epoch",
        "loss",
        "learning_rate",
        "grad_norm",
        "eval_loss",
    }
    assert job["artifacts"] == []

    listed = {j["id"]: j for j in service.api("GET", "/api/training/jobs").json()["jobs"]}
    assert listed[job_id]["last_loss"] == 2.1 and listed[job_id]["eval_loss"] == 2.4
    assert "metrics_history" not in listed[job_id]


def test_an_older_sequence_never_moves_status_or_step_back(service):
    job_id = registered(service)
    late = service.send(event(job_id, 5, "training", step=40, total_steps=100, metrics={"loss": 1.5}))
    assert late.json() == {"ok": True, "applied": True}
    early = service.send(event(job_id, 3, "preprocessing", step=2, total_steps=100))
    assert early.status_code == 200 and early.json() == {"ok": True, "applied": False}
    # An older training event fills a gap in the history but does not replace a newer point.
    gap = service.send(event(job_id, 4, "training", step=20, total_steps=100, metrics={"loss": 1.9}))
    assert gap.json()["applied"] is False
    stale = service.send(event(job_id, 2, "training", step=40, total_steps=100, metrics={"loss": 9.9}))
    assert stale.json()["applied"] is False
    job = service.job(job_id)
    assert (job["status"], job["step"]) == ("training", 40)
    assert [(p["step"], p["loss"]) for p in job["metrics_history"]] == [(20, 1.9), (40, 1.5)]
    assert job["last_loss"] == 1.5


def test_terminal_states_stay_terminal_and_later_events_still_record_metrics(service):
    job_id = registered(service)
    service.send(event(job_id, 2, "training", step=10, total_steps=10, metrics={"loss": 1.2}))
    done = event(
        job_id,
        3,
        "completed",
        step=10,
        total_steps=10,
        metrics={"heldout_base_loss": 2.7, "heldout_adapter_loss": 2.4, "heldout_adapter_perplexity": 11.0},
        artifact_path="runs/x/output",
    )
    assert service.send(done).status_code == 200
    later = service.send(event(job_id, 4, "training", step=12, total_steps=12, metrics={"loss": 1.1}))
    assert later.status_code == 200
    failed = service.send(event(job_id, 5, "failed", step=12, error="boom"))
    assert failed.status_code == 200
    job = service.job(job_id)
    assert (job["status"], job["step"], job["total_steps"]) == ("completed", 10, 10)
    assert job["artifact_path"] == "runs/x/output" and job["error_message"] is None and job["completed_at"]
    assert job["metrics"]["heldout_adapter_loss"] == 2.4 and job["eval_loss"] == 2.4
    # Nothing merges into a job that has ended (issue 13): the later step is not recorded, its loss not
    # merged. (This test asserted the opposite, [10, 12], before.)
    assert [p["step"] for p in job["metrics_history"]] == [10] and job["metrics"].get("loss") == 1.2


def test_the_customer_compatible_payload_is_applied_as_the_old_one_was(service, tmp_path):
    """What jobs/webhooks.py sends now (the customer's names, ISO times, our status in brightrun_status,
    evaluation numbers under `eval`) moves our registry exactly as the older payload did."""
    from jobs import payload

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    job_id = new_id()

    def send(status, sent=None, **fields):
        spooled = webhooks.spool(run_dir, job_id, status, **fields)
        return service.send({**spooled, "timestamp": sent or payload.iso()})

    job = {"preset": "balanced", "model": "smoke", "hardware": "cpu", "estimated_cost": 0.25}
    assert send("queued", job=job).status_code == 200
    train = {"loss": 1.5, "learning_rate": 1e-4, "grad_norm": 0.5, "epoch": 0.25}
    assert send("training", step=1, total_steps=4, metrics=train).status_code == 200
    assert (
        send("training", step=1, total_steps=4, metrics={"eval_loss": 1.4, "epoch": 0.25}).status_code == 200
    )
    assert send("interrupted", step=1, error_message="stopped by a signal").status_code == 200
    got = service.job(job_id)
    assert (got["status"], got["error_message"]) == ("interrupted", "stopped by a signal")
    assert send("preprocessing", step=1, total_steps=4, error_message=None, retry_count=1).status_code == 200
    got = service.job(job_id)
    assert (got["status"], got["error_message"], got["retry_count"]) == ("preprocessing", None, 1)
    done = {"heldout_base_loss": 2.6, "heldout_adapter_loss": 2.2, "loss": 1.3}
    finished = send("completed", step=4, total_steps=4, metrics=done, lora_artifact_path="runs/x/output")
    assert finished.status_code == 200
    got = service.job(job_id)
    assert (got["status"], got["step"], got["artifact_path"]) == ("completed", 4, "runs/x/output")
    assert got["metrics"]["heldout_adapter_loss"] == 2.2 and got["metrics"]["loss"] == 1.3
    assert [(p["step"], p["loss"], p["eval_loss"]) for p in got["metrics_history"]] == [
        (1, 1.5, None),
        (1, None, 1.4),
    ]
    # The replay window is checked on the ISO time as it was on unix seconds.
    stale = payload.iso(time.time() - 600)
    assert send("training", sent=stale, step=4).status_code == 401
    assert send("training", sent="2026-12-01T10:30:00", step=4).status_code == 400  # no zone
    assert send("training", occurred_at="0001-01-01T00:00:00Z", step=4).status_code == 400  # before 1970


def test_a_replayed_event_keeps_when_it_happened(service):
    """`timestamp` is the sending time (checked against the 5-minute window); `occurred_at` dates the job."""
    job_id = new_id()
    hour_ago = int(time.time()) - 3600
    assert service.send(event(job_id, 1, "queued", occurred_at=hour_ago)).status_code == 200
    assert service.send(event(job_id, 2, "failed", occurred_at=hour_ago + 60, error="x")).status_code == 200
    job = service.job(job_id)
    assert job["created_at"] == datetime.fromtimestamp(hour_ago, UTC).isoformat()
    assert job["completed_at"] == datetime.fromtimestamp(hour_ago + 60, UTC).isoformat()


def test_failed_and_cancelled_events_keep_the_error(service):
    job_id = registered(service)
    service.send(event(job_id, 2, "training", step=1, total_steps=5))
    service.send(event(job_id, 3, "interrupted", step=1, error="stopped by a signal"))
    assert service.job(job_id)["status"] == "interrupted"  # not terminal: a resume goes on
    service.send(event(job_id, 4, "preprocessing", step=1, total_steps=5))
    job = service.job(job_id)
    assert (job["status"], job["error_message"], job["completed_at"]) == ("preprocessing", None, None)
    service.send(event(job_id, 5, "cancelled", step=1, error="cancelled on request"))
    job = service.job(job_id)
    assert (job["status"], job["error_message"]) == ("cancelled", "cancelled on request")


def test_sql_in_a_valid_event_is_stored_verbatim(service):
    job_id = registered(service)
    nasty = "x'); DROP TABLE training_jobs;-- \" OR 1=1 ; DELETE FROM webhook_events"
    assert service.send(event(job_id, 2, "failed", error=nasty)).status_code == 200
    assert service.job(job_id)["error_message"] == nasty
    assert all(n >= 1 for n in service.counts().values())  # every table still there


# -- webhook: every attack refused, nothing written ----------------------------------------------------


def assert_refused(service, response: httpx.Response, status: int, before: dict, says: str = "") -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert says in response.json()["error"]
    assert service.counts() == before


def test_the_state_machine_only_moves_forward_and_numbers_are_bounded(service):
    """Issue 13, item 11: a later `queued` does not move a started job back; nothing merges into an
    ended job; step past total_steps is refused; metrics are capped per event and per job."""
    job_id = registered(service)
    assert (
        service.send(event(job_id, 2, "training", step=2, total_steps=5, metrics={"loss": 2.0})).status_code
        == 200
    )
    assert service.send(event(job_id, 3, "queued", retry_count=1)).status_code == 200
    job = service.job(job_id)
    assert (job["status"], job["retry_count"]) == ("training", 1)
    past = service.send(event(job_id, 4, "training", step=6, total_steps=5))
    assert past.status_code == 400 and "step is past total_steps" in past.json()["error"]
    too_many = service.send(event(job_id, 4, "training", step=3, metrics={f"m{i}": 1.0 for i in range(65)}))
    assert too_many.status_code == 400
    for seq in range(4, 9):  # 5 × 64 new keys: the job keeps at most 256
        numbers = {f"k{seq}_{i}": float(i) for i in range(64)}
        assert (
            service.send(
                event(job_id, seq, "training", step=3, total_steps=5, other_metrics=numbers)
            ).status_code
            == 200
        )
    assert len(service.job(job_id)["metrics"]) == 256
    assert service.send(event(job_id, 9, "failed", step=3, error="boom")).status_code == 200
    late = event(job_id, 10, "training", step=4, total_steps=5, metrics={"loss": 0.5, "zzz_new": 1.0})
    assert service.send(late).status_code == 200
    job = service.job(job_id)
    assert job["status"] == "failed" and job["metrics"]["loss"] == 2.0 and "zzz_new" not in job["metrics"]
    assert [p["step"] for p in job["metrics_history"]] == [2]


def test_a_trickling_body_is_cut_off_and_answers_carry_security_headers(service):
    import socket

    from jobs.service import MAX_CONNECTIONS

    port = int(service.base.rsplit(":", 1)[1])
    head = b"POST /api/training/webhook HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    started = time.monotonic()
    # Greedy: more trickling clients than the service serves at once. Those past the limit get a 503 at
    # once (uvicorn's limit_concurrency), the others their 408 when their 10 s are up; none is held longer.
    slow = []
    try:
        for _ in range(MAX_CONNECTIONS + 8):  # one at a time, each request under way before the next
            slow.append(socket.create_connection(("127.0.0.1", port), timeout=30))
            slow[-1].sendall(head + b"Content-Length: 100\r\n\r\n{")
            time.sleep(0.02)
        answers = [conn.recv(4096)[:12] for conn in slow]
    finally:
        for conn in slow:
            conn.close()
    codes = [a.removeprefix(b"HTTP/1.1 ") for a in answers]
    assert set(codes) == {b"503", b"408"} and codes.count(b"408") <= MAX_CONNECTIONS, codes
    assert time.monotonic() - started < 25
    assert service.request("GET", "/health").status_code == 200  # served again once they are gone
    page = service.request("GET", "/")
    for name in ("content-security-policy", "x-frame-options", "x-content-type-options", "referrer-policy"):
        assert name in page.headers, name
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert service.request("GET", "/health").headers["x-content-type-options"] == "nosniff"


def test_attacks_are_refused_and_write_nothing(service):
    job_id = registered(service)
    before = service.counts()
    good = event(job_id, 2, "training", step=1, total_steps=5, metrics={"loss": 2.0})
    body = webhooks.encode(good)

    forged = service.send(good, secret="not-the-secret")
    assert_refused(service, forged, 401, before, "X-Webhook-Signature")
    assert_refused(service, service.post_raw(body, None), 401, before)
    assert_refused(service, service.post_raw(body, ""), 401, before)
    # The signature of other bytes (the same JSON, spaced differently) does not cover these bytes.
    spaced = json.dumps(good).encode()
    assert_refused(service, service.post_raw(body, webhooks.sign(service.secret, spaced)), 401, before)

    stale = dict(good, event_id=uuid.uuid4().hex, timestamp=int(time.time()) - 301)
    assert_refused(service, service.send(stale), 401, before, "stale or future timestamp")
    future = dict(good, event_id=uuid.uuid4().hex, timestamp=int(time.time()) + 600)
    assert_refused(service, service.send(future), 401, before, "stale or future timestamp")

    big = b'{"pad":"' + b"x" * MAX_BODY + b'"}'
    assert_refused(service, service.post_raw(big, webhooks.sign(service.secret, big)), 413, before)

    def chunks():  # no Content-Length: the cap must hold while reading
        for _ in range(20):
            yield b"x" * 65536

    assert_refused(service, service.post_raw(chunks(), "0" * 64), 413, before)

    assert_refused(
        service, service.post_raw(body, webhooks.sign(service.secret, body), "text/plain"), 415, before
    )
    assert_refused(service, service.post_raw(body, webhooks.sign(service.secret, body), ""), 415, before)
    ok_charset = service.post_raw(
        body, webhooks.sign(service.secret, body), "application/json; charset=utf-8"
    )
    assert ok_charset.status_code == 200  # parameters are fine...
    before = service.counts()
    assert_refused(service, service.send(good), 409, before, "replayed event_id")  # ...and once only

    broken = b'{"event_id": "abc", "sequence": '
    assert_refused(service, service.post_raw(broken, webhooks.sign(service.secret, broken)), 400, before)
    shapes = [
        {"sequence": 0},
        {"sequence": "3"},
        {"status": "hacked"},
        {"event_id": "a" * 65},
        {"event_id": "has space"},
        {"metrics": {"loss": "low"}},
        {"metrics": "loss"},
        {"step": -1},
        {"timestamp": "now"},
        {"occurred_at": -1},
        {"occurred_at": 10**15},
        {"job_id": ""},
        {"job_id": ".."},
        {"job_id": "x'; DROP TABLE training_jobs;--"},
        {"job_id": "../../etc"},
    ]
    for change in shapes:
        bad = dict(good, event_id=uuid.uuid4().hex) | change
        assert_refused(service, service.send(bad), 400, before)
    for nan in (b'{"loss": NaN}', b'{"loss": Infinity}'):
        raw = webhooks.encode(dict(good, event_id=uuid.uuid4().hex)).replace(b'{"loss":2.0}', nan)
        assert_refused(service, service.post_raw(raw, webhooks.sign(service.secret, raw)), 400, before)
    nan_job = webhooks.encode(event(new_id("nan"), 1, "queued")).replace(b'"lora_r":16', b'"lora_r":NaN')
    assert_refused(service, service.post_raw(nan_job, webhooks.sign(service.secret, nan_job)), 400, before)
    missing = {k: v for k, v in good.items() if k != "sequence"} | {"event_id": uuid.uuid4().hex}
    assert_refused(service, service.send(missing), 400, before)
    assert_refused(service, service.send([good]), 400, before)

    unknown = dict(good, event_id=uuid.uuid4().hex, job_id=new_id("ghost"))
    assert_refused(service, service.send(unknown), 404, before, "unknown job_id")
    bare_queued = dict(event(new_id("ghost"), 1, "queued"), job=None)
    assert_refused(service, service.send(bare_queued), 404, before)
    assert service.counts() == before


def test_concurrent_duplicates_are_applied_once(service):
    """20 deliveries of one event at once: one 200, the rest 409 (never 500); and 10 different first
    events of one new job at once: one registration, every event applied."""
    job_id = registered(service)
    one = event(job_id, 2, "training", step=1, total_steps=5, metrics={"loss": 2.0})
    body = webhooks.encode(one)
    sig = webhooks.sign(service.secret, body)
    codes: list[int] = []

    def deliver(payload: bytes, signature: str) -> None:
        with httpx.Client(base_url=service.base, timeout=60.0) as client:
            codes.append(service.post_raw(payload, signature, client=client).status_code)

    threads = [threading.Thread(target=deliver, args=(body, sig)) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200] + [409] * 19

    codes.clear()
    new_job = new_id("race")
    bodies = [webhooks.encode(event(new_job, seq, "queued")) for seq in range(1, 11)]
    threads = [threading.Thread(target=deliver, args=(b, webhooks.sign(service.secret, b))) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [200] * 10
    with service.engine.connect() as c:
        rows = c.execute(
            text("SELECT count(*) FROM webhook_events WHERE job_id = :j"), {"j": new_job}
        ).scalar()
        last = c.execute(
            text("SELECT last_event_sequence FROM training_jobs WHERE id = :j"), {"j": new_job}
        ).scalar()
    assert (rows, last) == (10, 10)


# -- the bearer-token API ------------------------------------------------------------------------------


def test_api_needs_the_bearer_token(service):
    job_id = registered(service)
    for path in ("/api/training/jobs", f"/api/training/jobs/{job_id}"):
        assert service.api("GET", path, token=None).status_code == 401
        wrong = service.api("GET", path, token="wrong-token")
        assert wrong.status_code == 401 and wrong.json() == {"error": "missing or invalid bearer token"}
        basic = service.request("GET", path, headers={"Authorization": f"Basic {service.token}"})
        assert basic.status_code == 401
        assert service.api("GET", path).status_code == 200
    assert service.api("DELETE", f"/api/training/jobs/{job_id}", token="wrong").status_code == 401
    assert service.api("POST", "/api/training/jobs", token=None, json={}).status_code == 401
    # No token, big body: refused at 1 MB, not read whole before the token check.
    big = service.api("POST", "/api/training/jobs", token=None, content=b"[" + b"0," * MAX_BODY + b"0]")
    assert big.status_code == 413 and "error" in big.json()
    chunked = service.api("POST", "/api/training/jobs", token=None, content=(b"0" * 65536 for _ in range(20)))
    assert chunked.status_code == 413 and "error" in chunked.json()
    assert service.job(job_id)["status"] == "queued"  # the refused DELETE did nothing


def test_list_filters_by_status_newest_first(service):
    a, b = registered(service), registered(service)
    service.send(event(b, 2, "training", step=1, total_steps=3, metrics={"loss": 1.0}))
    queued = service.api("GET", "/api/training/jobs", params={"status": "queued"}).json()["jobs"]
    assert a in [j["id"] for j in queued] and b not in [j["id"] for j in queued]
    assert all(j["status"] == "queued" for j in queued)
    training = service.api("GET", "/api/training/jobs?status=training").json()["jobs"]
    assert b in [j["id"] for j in training]
    every = service.api("GET", "/api/training/jobs").json()["jobs"]
    stamps = [j["created_at"] for j in every]
    assert stamps == sorted(stamps, reverse=True)
    bogus = service.api("GET", "/api/training/jobs?status=bogus")
    assert bogus.status_code == 400 and "unknown status" in bogus.json()["error"]
    assert service.api("GET", "/api/training/jobs/no-such-job").status_code == 404
    assert service.api("GET", "/api/training/jobs/..").status_code == 404


def test_delete_cancels_refuses_finished_and_unknown_jobs(service):
    unknown = service.api("DELETE", f"/api/training/jobs/{new_id('ghost')}")
    assert unknown.status_code == 404 and unknown.json() == {"error": "no such job"}
    job_id = registered(service)
    # Known only from its webhooks (no run folder here): nothing here can stop it, and the answer says so
    # (issue 13, item 8: it answered "cancelled" and stopped nothing).
    remote = service.api("DELETE", f"/api/training/jobs/{job_id}")
    assert remote.status_code == 409 and "known here only from its webhook events" in remote.json()["error"]
    assert service.job(job_id)["status"] == "queued"
    # A run of this service's own (its folder, no live launcher: queued, say) is cancelled here.
    (service.workdir / "runs" / job_id).mkdir(parents=True)
    (service.workdir / "runs" / job_id / "run.json").write_text("{}")
    cancelled = service.api("DELETE", f"/api/training/jobs/{job_id}")
    assert cancelled.status_code == 202 and cancelled.json() == {"id": job_id, "status": "cancelled"}
    assert service.job(job_id)["status"] == "cancelled"
    again = service.api("DELETE", f"/api/training/jobs/{job_id}")
    assert again.status_code == 409 and "already cancelled" in again.json()["error"]


def test_start_job_validates_and_passes_the_request_on(service):
    def start(payload):
        return service.api("POST", "/api/training/jobs", json=payload)

    for payload in ({}, {"preset": "balanced"}, {"preset": "balanced", "model": "smoke", "gpus": 8}):
        r = start(payload)
        assert r.status_code == 400 and r.json()["error"].startswith("invalid request"), r.text
    r = start({"preset": "balanced", "model": "smoke", "data": "d", "input": "i"})
    assert r.status_code == 400 and "not both" in r.json()["error"]
    r = start({"preset": "no-such-preset", "model": "smoke", "data": "data/converted/demo-cpu"})
    assert r.status_code == 400 and "no-such-preset" in r.json()["error"]

    r = start(
        {
            "preset": "fake-ok",
            "model": "smoke",
            "data": "d",
            "overrides": ["max_steps=2"],
            "heldout_eval": False,
        }
    )
    assert r.status_code == 202 and r.json() == {"id": "fake-run-id", "status": "queued"}
    args = json.loads((service.workdir / "started.json").read_text())
    assert args[:6] == ["fake-ok", "smoke", None, "d", None, ["max_steps=2"]]
    assert args[6] == str(service.workdir / "runs") and Path(args[6]).is_absolute()
    assert args[7] == registry.database_url(service.db_url) and args[8] is False
    assert args[9] == {"data_root": str(Path("data").resolve())}


def test_unknown_route_and_method_answer_json(service):
    r = service.request("GET", "/api/nothing")
    assert r.status_code == 404 and "error" in r.json()
    r = service.request("PUT", "/api/training/webhook")
    assert r.status_code == 405 and "error" in r.json()


# -- secrets -------------------------------------------------------------------------------------------


def test_secrets_never_appear_in_logs_responses_or_rows(service):
    """Last in the module: everything the tests above made the server say, log and store."""
    service.request("GET", "/openapi.json")
    service.request("GET", "/docs")
    log = service.log.read_text()
    assert "POST /api/training/webhook" in log  # the log is captured at all
    dump = []
    with service.engine.connect() as c:
        for table in (*TABLES, "model_artifacts"):
            dump += [repr(tuple(row)) for row in c.execute(text(f"SELECT * FROM {table}"))]
    assert len(service.bodies) > 50 and len(dump) > 50
    for value in (service.token, service.secret):
        assert value not in log
        assert not [b for b in service.bodies if value in b]
        assert not [row for row in dump if value in row]


def test_the_service_refuses_to_start_without_its_secrets(monkeypatch, capsys):
    import jobs.service

    monkeypatch.delenv("JOBS_API_TOKEN", raising=False)
    monkeypatch.setenv("TRAINING_WEBHOOK_SECRET", "s")
    assert jobs.service.main(port=free_port()) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: JOBS_API_TOKEN not set")
    monkeypatch.setenv("JOBS_API_TOKEN", "t")
    monkeypatch.delenv("TRAINING_WEBHOOK_SECRET")
    assert jobs.service.main(port=free_port()) == 2
    assert "TRAINING_WEBHOOK_SECRET" in capsys.readouterr().err
