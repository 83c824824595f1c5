"""The customer's app with a service that runs each job on its own RunPod pod (`--runs pods`), against the
fake RunPod: their start call, the pod's progress passed on by the service, the end from the launcher."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from conftest import CUSTOMER_SECRET, ROOT, SAMPLE, free_port, jobs_env, no_loss, start_service, stop_process
from customer_app import HYPERPARAMETERS, CustomerApp, Storage, start_training_job
from fake_runpod import FakeRunPod
from s3_server import ACCESS_KEY, SECRET_KEY, s3_server

from brightrun import offline

TOKEN = "svc-token-9a2d"
SERVICE_SECRET = "svc-whsec-31c8"
BUCKET = "model-artifacts"
PREFIX = "brightrun"


def auth() -> dict:
    return {"Authorization": f"Bearer {TOKEN}"}


def wait_for(what, check, seconds: float):
    deadline = time.monotonic() + seconds
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what} within {seconds:g} s"
        time.sleep(0.5)
    return value


def pod_command(env: dict, volume: Path) -> list[str]:
    """What our image runs in a pod, on this machine: the real entrypoint with the venv's Python, on CPU."""
    bin_dir = Path(sys.executable).parent
    env.update(offline.ALL, PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", BRIGHTRUN_HARDWARE="cpu")
    env["PYTHONPATH"] = str(ROOT)  # this checkout's code in every process of the pod
    return ["bash", str(ROOT / "docker" / "entrypoint.sh")]


@pytest.mark.slow(150)
def test_with_runpod_each_job_gets_a_pod_that_reports_through_the_service(tmp_path, assets):
    """`--runs pods` against the fake RunPod: the launcher every pod run uses creates the job's pod and
    follows it; the pod reports to the service (signed with its job's key) and the service passes its
    progress on to the customer; the end comes from the launcher, with the zip in their bucket."""
    fake = FakeRunPod(workspace=tmp_path / "volume", command=pod_command, stop_grace=60).start()
    with s3_server() as s3, Storage() as storage, CustomerApp(tmp_path, CUSTOMER_SECRET) as app:
        s3.bucket(BUCKET)
        storage.put("u1/sample.json", SAMPLE.read_bytes())
        (tmp_path / "no-extra-wheels").mkdir()
        port = free_port()
        env = {k: v for k, v in jobs_env().items() if k not in ("DATABASE_URL", "WEBHOOK_URL")}
        env |= {
            "JOBS_API_TOKEN": TOKEN,
            "TRAINING_WEBHOOK_SECRET": SERVICE_SECRET,
            "RUNPOD_API_URL": fake.url,
            "RUNPOD_API_KEY": fake.api_key,
            "BRIGHTRUN_VOLUME_DIR": str(fake.workspace),
            "BRIGHTRUN_IMAGE": "registry.example/brightrun-lora:test",
            "BRIGHTRUN_POD_WHEELS": str(tmp_path / "no-extra-wheels"),  # the fake's pods are this machine
            "ARTIFACT_STORE": f"s3://{BUCKET}/{PREFIX}",
            "AWS_ENDPOINT_URL": s3.url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "eu-ro-1",
            "HF_TOKEN": "",
        }
        args = ["-m", "jobs", "--runs-dir", str(tmp_path / "runs"), "service", "--port", str(port)]
        args += ["--data-dir", str(tmp_path / "data"), "--model", "smoke", "--poll", "0.5"]
        service = start_service(args, env, tmp_path / "service.log", port)
        base = f"http://127.0.0.1:{port}"
        try:
            job_id = app.new_job()
            answer = start_training_job(
                app, base, TOKEN, job_id, storage.sign("u1/sample.json"), HYPERPARAMETERS
            )
            assert (answer["status"], answer["pod_id"]) == ("queued", None)
            assert answer["price_source"] == "RunPod now" and answer["estimated_cost_usd"] > 0

            def over():
                row = app.tally(job_id)["row"]
                return row["status"] in ("completed", "failed", "cancelled") and row

            row = wait_for("the pod job over", over, 600)
            launcher = (tmp_path / "runs" / ".launchers" / f"{job_id}.log").read_text()
            assert row["status"] == "completed", launcher[-3000:]
            status = httpx.get(f"{base}/training/status/{job_id}", headers=auth(), timeout=30).json()
        finally:
            stop_process(service)
            fake.close()
        tally = app.tally(job_id)
        no_loss(tally)
        # Their row: every logged step of the pod's training (relayed by the service), the end from the launcher.
        assert row["current_step"] == row["total_steps"] == status["total_steps"] >= 1
        assert [h["step"] for h in tally["history"]] == list(range(1, row["total_steps"] + 1))
        assert tally["statuses"][-1] == "completed" and tally["statuses"].count("completed") == 1
        pod_id = status["pod_id"]
        assert pod_id and row["runpod_pod_id"] is None  # their app stored the start's null; events say it
        assert pod_id in fake.gone  # terminated by its launcher at the end
        key = f"{PREFIX}/runs/{job_id}/adapter.zip"
        assert row["lora_artifact_path"] == status["lora_artifact_path"] == key
        blob = s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
        with zipfile.ZipFile(io.BytesIO(blob)) as z:
            weights = z.read("adapter_model.safetensors")
        lineage = json.loads((tmp_path / "runs" / job_id / "run.json").read_text())
        stored = lineage.get("stored") or {}
        assert hashlib.sha256(weights).hexdigest() == stored.get("adapter_sha256"), lineage
        # The customer's secret never went to RunPod: not in any pod's environment, nor in a call.
        pods = [*fake.pods.values(), *fake.gone.values()]
        assert len(pods) == 1 and pods[0].env["WEBHOOK_URL"] == f"{base}/api/training/webhook"
        assert CUSTOMER_SECRET not in json.dumps([pod.input for pod in pods])
        assert CUSTOMER_SECRET not in json.dumps([str(call) for call in fake.calls])
