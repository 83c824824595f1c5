"""The customer's app drives runs end to end through the service, unchanged (customer-start-flow.md): their
start call byte for byte, a dataset at a signed URL in their Storage, their webhook receiver with the secret
their start call sent, their `model-artifacts` bucket (moto) for the adapter; a stop mid-run; a replay
after completion. One service (`--model smoke`, local runs) for the whole file."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from browser import Elements, headless
from conftest import CUSTOMER_SECRET, ROOT, SAMPLE, free_port, jobs_env, no_loss, start_service, stop_process
from customer_app import HYPERPARAMETERS, CustomerApp, StartFailed, Storage, start_training_job
from s3_server import ACCESS_KEY, SECRET_KEY, s3_server

TOKEN = "svc-token-5c1e"  # our JOBS_API_TOKEN: what their app holds as RUNPOD_API_KEY
SERVICE_SECRET = "svc-whsec-77b0"  # the service's own, never the customer's
BUCKET = "model-artifacts"
PREFIX = "brightrun"


@dataclass
class World:
    base: str
    runs: Path
    app: CustomerApp
    storage: Storage
    s3: object
    log: Path
    args: list
    env: dict
    port: int
    service: subprocess.Popen | None = None

    def restart(self) -> None:
        """The service stopped and started again (a deploy, a crash): its jobs run on in their own sessions."""
        stop_process(self.service)
        self.log = self.log.with_name("service-2.log")
        self.service = start_service(self.args, self.env, self.log, self.port)

    def start(self, job_id: str, path: str = "u1/sample.json", **hyper) -> dict:
        url = self.storage.sign(path)
        return start_training_job(self.app, self.base, TOKEN, job_id, url, HYPERPARAMETERS | hyper)

    def status(self, job_id: str) -> dict:
        return httpx.get(f"{self.base}/training/status/{job_id}", headers=auth(), timeout=30).json()


def auth() -> dict:
    return {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def world(tmp_path_factory, assets):
    tmp = tmp_path_factory.mktemp("customer-flow")
    with s3_server() as s3, Storage() as storage, CustomerApp(tmp, CUSTOMER_SECRET) as app:
        s3.bucket(BUCKET)
        storage.put("u1/sample.json", SAMPLE.read_bytes())
        port = free_port()
        env = {k: v for k, v in jobs_env().items() if k not in ("DATABASE_URL", "WEBHOOK_URL")}
        env |= {
            "JOBS_API_TOKEN": TOKEN,
            "TRAINING_WEBHOOK_SECRET": SERVICE_SECRET,
            "ARTIFACT_STORE": f"s3://{BUCKET}/{PREFIX}",  # their Supabase bucket, by its S3 endpoint
            "AWS_ENDPOINT_URL": s3.url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "eu-ro-1",
        }
        args = ["-m", "jobs", "--runs-dir", str(tmp / "runs"), "service", "--port", str(port)]
        args += ["--data-dir", str(tmp / "data"), "--model", "smoke", "--no-eval"]
        world = World(
            f"http://127.0.0.1:{port}", tmp / "runs", app, storage, s3, tmp / "service.log", args, env, port
        )
        world.service = start_service(args, env, world.log, port)
        try:
            yield world
        finally:
            stop_process(world.service)


def refused(world: World, body, status: int, *words: str, headers: dict | None = None) -> str:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = httpx.post(
        f"{world.base}/training/start",
        content=raw,
        headers={"Content-Type": "application/json"} | (auth() if headers is None else headers),
        timeout=120,
    )
    assert answer.status_code == status, answer.text
    message = answer.json()["error"]
    for word in words:
        assert word in message, message
    return message


def test_a_bad_start_is_refused_by_name_and_leaves_nothing(world):
    good = {
        "job_id": str(uuid.uuid4()),
        "dataset_url": world.storage.sign("u1/sample.json"),
        "hyperparameters": HYPERPARAMETERS,
        "webhook_url": world.app.url,
        "webhook_secret": CUSTOMER_SECRET,
    }
    refused(world, good, 401, "token", headers={})
    refused(world, b"{not json", 400, "JSON")
    refused(world, good | {"priority": 1}, 422, "priority", "unknown field")
    refused(world, good | {"job_id": "job-1"}, 422, "job_id", "UUID")
    refused(
        world, {k: v for k, v in good.items() if k != "webhook_secret"}, 422, "webhook_secret", "required"
    )
    refused(world, good | {"hyperparameters": HYPERPARAMETERS | {"lora_r": 0}}, 422, "hyperparameters.lora_r")
    refused(world, good | {"hyperparameters": {"lr": 1e-4}}, 422, "hyperparameters", "'lr'", "batch_size")
    refused(world, good | {"hyperparameters": HYPERPARAMETERS | {"batch_size": True}}, 422, "batch_size")
    refused(
        world, good | {"webhook_url": "http://example.com/api/training/webhook"}, 422, "webhook_url", "https"
    )
    refused(
        world, good | {"base_model": "mistralai/Mistral-7B"}, 422, "base_model", "meta-llama/Meta-Llama-3-70B"
    )
    refused(world, good | {"runpod_config": {"gpu_type": "RTX_4090"}}, 422, "runpod_config.gpu_type")
    # A model this service cannot train here (no GPU for it, its weights not in the cache, the Hub off):
    # preflight's one line, before their file is fetched (jobs/preflight.py).
    refused(
        world,
        good | {"base_model": "meta-llama/Meta-Llama-3-70B-Instruct"},
        422,
        "preflight",
        "Meta-Llama-3-70B-Instruct is not in the Hub cache and the Hub is off",
    )
    expired = world.storage.sign("u1/sample.json", expires=-1)
    message = refused(world, good | {"dataset_url": expired}, 422, "dataset_url", "400")
    assert (
        "token=" not in message and expired.split("token=")[1] not in message
    )  # the URL's secret stays ours
    # A file their user uploaded that is not brightrun-v4: the converter's own words (record, field).
    broken = json.loads(SAMPLE.read_text())
    del broken["conversations"][1]["training_pairs"][0]["current_user_input"]
    world.storage.put("u1/broken.json", json.dumps(broken).encode())
    refused(world, good | {"dataset_url": world.storage.sign("u1/broken.json")}, 422, "current_user_input")

    # Their "Test model" button on a model that does not exist, or without naming one.
    assert httpx.get(f"{world.base}/models/list", headers=auth(), timeout=30).json() == {"models": []}
    asked = httpx.post(f"{world.base}/models/test", json={"model": "nobody", "prompt": "Hi"}, headers=auth())
    assert asked.status_code == 404, asked.text
    asked = httpx.post(f"{world.base}/models/test", json={"prompt": "Hi"}, headers=auth())
    assert asked.status_code == 422 and "model" in asked.json()["error"]

    # Nothing was made for any of them: no run folder, no job, no row of ours, no copy of their file.
    assert not [p for p in world.runs.iterdir() if p.is_dir()] if world.runs.exists() else True
    listed = httpx.get(f"{world.base}/api/training/jobs", headers=auth(), timeout=30).json()["jobs"]
    assert listed == []
    assert world.app.log == []  # and no event reached their route
    incoming = world.runs.parent / "data" / "incoming"
    assert not incoming.exists() or [p.name for p in incoming.iterdir()] == []


def wait_for(what, check, seconds: float):
    deadline = time.monotonic() + seconds
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what} within {seconds:g} s"
        time.sleep(0.5)
    return value


@pytest.mark.slow(150)
def test_their_app_starts_follows_stops_and_collects_runs(world, browser, tmp_path):
    stopped, done = world.app.new_job(), world.app.new_job()
    first = world.start(stopped)
    second = world.start(done)
    assert (first["status"], first["pod_id"], first["queue_position"]) == ("queued", None, 0)
    assert second["queue_position"] == 1  # one run at a time on this machine: the other waits
    assert second["endpoint_url"] == f"{world.base}/training/status/{done}"
    assert second["estimated_steps"] >= 1 and second["estimated_cost_usd"] == 0.0  # CPU: no price
    with pytest.raises(StartFailed, match="exists already"):
        world.start(done)  # the same job_id again: 409, their app shows the text

    # Stop the first mid-run: their cancel calls our stop (docs/customer-integration.md).
    wait_for(
        "the first job running", lambda: world.status(stopped)["brightrun_status"] == "preprocessing", 120
    )
    answer = httpx.post(f"{world.base}/training/stop/{stopped}", headers=auth(), timeout=30)
    assert answer.status_code == 200 and answer.json()["status"] in ("cancelling", "cancelled"), answer.text
    wait_for("the stop", lambda: world.status(stopped)["status"] == "cancelled", 120)
    again = httpx.post(f"{world.base}/training/stop/{stopped}", headers=auth(), timeout=30)
    assert again.status_code == 409

    # The second starts once the first is over; the service goes down and up again meanwhile (its runs go
    # on in their own sessions, reporting straight to the customer), and starts nothing twice.
    wait_for("the second job running", lambda: world.status(done)["brightrun_status"] != "queued", 120)
    world.restart()
    # ... and runs to the end, and its adapter lands in their bucket.
    status = wait_for(
        "the second job over",
        lambda: (s := world.status(done))["status"] in ("completed", "failed") and s,
        600,
    )
    assert status["status"] == "completed", (world.runs / done / "logs" / "launcher.log").read_text()[-3000:]
    # Their app hears the end a moment after our registry has it (the event goes once the row is written).
    wait_for("their row over", lambda: world.app.tally(done)["row"]["status"] != "training", 60)
    tally = world.app.tally(done)
    no_loss(tally)
    row = tally["row"]
    assert row["status"] == "completed" and row["current_step"] == row["total_steps"] == status["total_steps"]
    assert [h["step"] for h in tally["history"]] == list(range(1, row["total_steps"] + 1))
    key = f"{PREFIX}/runs/{done}/adapter.zip"
    assert row["lora_artifact_path"] == status["lora_artifact_path"] == key
    blob = world.s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        weights = z.read("adapter_model.safetensors")
    lineage = json.loads((world.runs / done / "run.json").read_text())
    assert hashlib.sha256(weights).hexdigest() == lineage["adapter"]["sha256"]

    # The stopped job: cancelled in their table, and nothing reached them after the cancel.
    stopped_tally = world.app.tally(stopped)
    assert stopped_tally["row"]["status"] == "cancelled" and stopped_tally["statuses"][-1] == "cancelled"
    assert stopped_tally["statuses"].count("cancelled") == 1

    # A replay after completion (every delivery forgotten but the last) changes nothing in their table.
    before = world.app.db.rows("SELECT * FROM training_jobs WHERE id = %s", [done])
    history = len(tally["history"])
    delivered = world.runs / done / "events-delivered.txt"
    spool = [json.loads(line) for line in (world.runs / done / "events.jsonl").read_text().splitlines()]
    delivered.write_text(spool[-1]["event_id"] + "\n")
    replay = subprocess.run(
        [sys.executable, "-m", "jobs", "--runs-dir", str(world.runs), "webhooks-replay", done],
        cwd=ROOT,
        # The service's own environment: the job's URL and secret come sealed from the registry.
        env={k: v for k, v in world.env.items() if k != "WEBHOOK_URL"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert replay.returncode == 0 and "stale event(s) dropped" in replay.stderr, replay.stderr
    assert world.app.db.rows("SELECT * FROM training_jobs WHERE id = %s", [done]) == before
    assert len(world.app.tally(done)["history"]) == history

    # The customer's secret: in no run file, log or answer of ours.
    texts = [p.read_bytes().decode("utf-8", "replace") for p in world.runs.rglob("*") if p.is_file()]
    texts += [log.read_text() for log in world.log.parent.glob("service*.log")] + [json.dumps(status)]
    preprocessed = (world.runs / done / "logs" / "preprocess.log").read_text().splitlines()
    assert len([line for line in preprocessed if line.startswith("$ ")]) == 1  # started once, restart or not
    assert not [t for t in texts if CUSTOMER_SECRET in t]
    # The dashboard's list holds both jobs, under their ids.
    listed = httpx.get(f"{world.base}/api/training/jobs", headers=auth(), timeout=30).json()["jobs"]
    assert {j["id"]: j["status"] for j in listed} == {stopped: "cancelled", done: "completed"}

    # Their "Test model" list holds what was promoted: nothing here (its answers: tests/versions).
    assert httpx.get(f"{world.base}/models/list", headers=auth(), timeout=30).json() == {"models": []}

    # The dashboard, in a real browser: both jobs, and the completed one's loss curve.
    page = f"{world.base}/#token={TOKEN}"
    dumped = headless(browser, tmp_path / "profile-dom", "--dump-dom", page)
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = Elements()
    dom.feed(dumped.stdout)
    rows = {a["data-job-id"]: a["data-status"] for a in dom.find("tr") if "data-job-id" in a}
    assert rows == {stopped: "cancelled", done: "completed"}
    (chart,) = dom.find("div", id="loss-chart")
    assert chart["data-job-id"] == done and int(chart["data-train-points"]) == row["total_steps"]
    shot = tmp_path / "dashboard-run.png"
    taken = headless(
        browser, tmp_path / "profile-shot", "--window-size=1280,900", f"--screenshot={shot}", page
    )
    assert taken.returncode == 0 and shot.stat().st_size > 20_000, taken.stderr[-2000:]
    if keep := os.environ.get("DASHBOARD_SCREENSHOT"):
        Path(keep).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(keep).with_name(Path(keep).stem + "-run.png"))
