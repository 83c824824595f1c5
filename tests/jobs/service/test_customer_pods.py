"""The customer's app with a service that runs each job on its own RunPod pod (`--runs pods`), against the
fake RunPod: their start call, the pod's progress passed on by the service, the service and its launcher
killed mid-run and the service started again, which follows the pod to its end and ends the pod at once
(it took over test_real_account's finished run: one pod run for both)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from unittest.mock import patch

import httpx
import pytest
from conftest import CUSTOMER_SECRET, ROOT, SAMPLE, free_port, jobs_env, no_loss, start_service, stop_process
from customer_app import HYPERPARAMETERS, CustomerApp, Storage, start_training_job
from fake_runpod import FakeRunPod
from s3_server import ACCESS_KEY, SECRET_KEY, s3_server

from brightrun import offline
from jobs import registry, webhooks
from jobs.pod import owner, stored
from jobs.runfolder import sha256_file
from tests import status_log
from tests.versions.runs import stored_keys
from versions import store

BIN = Path(sys.executable).parent
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"

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


def logged_pod(env: dict, volume: Path) -> list[str]:
    """What our image runs in a pod, on this machine: the real entrypoint with the venv's Python, on CPU,
    its stderr kept on the volume per pod."""
    env.update(offline.ALL, PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", BRIGHTRUN_HARDWARE="cpu")
    env["PYTHONPATH"] = str(ROOT)  # this checkout's code in every process of the pod
    log = volume / f"container-{env['RUNPOD_POD_ID']}.log"
    return ["bash", "-c", f'exec bash "{ENTRYPOINT}" 2>>"{log}"']


def billed(attempts: list[dict]) -> float:
    """Σ (termination − creation) × price over the attempts, USD."""
    return sum((a["ended_ts"] - a["created_ts"]) * a["cost_per_hr"] / 3600 for a in attempts)


@pytest.mark.slow(150)
def test_with_runpod_each_job_gets_a_pod_that_reports_through_the_service(tmp_path, assets):
    """`--runs pods` against the fake RunPod: the launcher every pod run uses creates the job's pod and
    follows it; the pod reports to the service (signed with its job's key) and the service passes its
    progress on to the customer; the end comes from the launcher, with the zip in their bucket."""
    fake = FakeRunPod(workspace=tmp_path / "volume", command=logged_pod, stop_grace=60).start()
    assert fake.restart_on_exit  # RunPod starts a container again when its process exits
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
            "PUBLIC_URL": f"http://127.0.0.1:{port}",  # where each pod reports (the service's receiver)
        }
        args = ["-m", "jobs", "--runs-dir", str(tmp_path / "runs"), "service", "--port", str(port)]
        args += ["--data-dir", str(tmp_path / "data"), "--model", "smoke", "--poll", "0.5"]
        service = start_service(args, env, tmp_path / "service.log", port)
        base = f"http://127.0.0.1:{port}"
        url = f"sqlite:///{tmp_path / 'runs' / 'registry.db'}"
        status_log.watch(url)
        try:
            job_id = app.new_job()
            answer = start_training_job(
                app, base, TOKEN, job_id, storage.sign("u1/sample.json"), HYPERPARAMETERS
            )
            assert (answer["status"], answer["pod_id"]) == ("queued", None)
            assert answer["price_source"] == "RunPod now" and answer["estimated_cost_usd"] > 0

            # The service and the launcher it started both die (SIGKILL: a reboot) once the pod exists:
            # the pod has no follower. The service, started again, follows it (issue 25: one owner).
            created = wait_for(
                "the pod created", lambda: (j := registry.get_job(job_id, url)) and j.pod_id, 120
            )
            launcher_pid = int((tmp_path / "runs" / ".launchers" / f"{job_id}.pid").read_text())
            service.kill()
            service.wait()
            os.killpg(launcher_pid, signal.SIGKILL)
            wait_for("the launcher gone", lambda: owner.holder(tmp_path / "runs" / job_id) is None, 30)
            assert created in fake.pods  # still billing, nobody following it
            service = start_service(args, env, tmp_path / "service-again.log", port)

            def over():
                row = app.tally(job_id)["row"]
                return row["status"] in ("completed", "failed", "cancelled") and row

            row = wait_for("the pod job over", over, 600)
            launcher = (tmp_path / "runs" / ".launchers" / f"{job_id}.log").read_text()
            assert row["status"] == "completed", launcher[-3000:]
            again = (tmp_path / "service-again.log").read_text()
            assert f"job {job_id}: nothing followed its pod" in again, again[-3000:]
            status = httpx.get(f"{base}/training/status/{job_id}", headers=auth(), timeout=30).json()

            # RunPod has no GPU for the next one: its launcher ends before any pod exists; the job is
            # failed with RunPod's words, and the customer told.
            fake.fail_next(fake.NO_INSTANCES)
            refused_id = app.new_job()
            start_training_job(app, base, TOKEN, refused_id, storage.sign("u1/sample.json"), HYPERPARAMETERS)
            refused = wait_for(
                "the refused launch told",
                lambda: (r := app.tally(refused_id)["row"])["status"] == "failed" and r,
                120,
            )
            keys = stored_keys(s3, BUCKET)
            store_env = {k: env[k] for k in stored.STORE_VARS if k in env}
            with patch.dict(os.environ, store_env):
                marker = json.loads((fake.workspace / "runs" / job_id / stored.MARKER).read_text())
                manifest = store.read_manifest(
                    store.open_store(), f"runs/{job_id}", marker["manifest_sha256"]
                )
        finally:
            stop_process(service)
            fake.close()
        assert (
            "could not be launched" in refused["error_message"]
            and "nothing was created" in refused["error_message"]
        )
        assert len([*fake.pods.values(), *fake.gone.values()]) == 1  # no pod for it
        tally = app.tally(job_id)
        no_loss(tally)
        # Their row: every logged step of the pod's training (relayed by the service), the end from the launcher.
        assert row["current_step"] == row["total_steps"] == status["total_steps"] >= 1
        assert [h["step"] for h in tally["history"]] == list(range(1, row["total_steps"] + 1))
        assert tally["statuses"][-1] == "completed" and tally["statuses"].count("completed") == 1
        pod_id = status["pod_id"]
        assert pod_id == created  # followed to its end, not replaced by a second pod
        assert pod_id and row["runpod_pod_id"] is None  # their app stored the start's null; events say it
        assert pod_id in fake.gone  # terminated by its launcher at the end
        key = f"{PREFIX}/runs/{job_id}/adapter.zip"
        assert row["lora_artifact_path"] == status["lora_artifact_path"] == key
        blob = s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
        with zipfile.ZipFile(io.BytesIO(blob)) as z:
            weights = z.read("adapter_model.safetensors")
        lineage = json.loads((tmp_path / "runs" / job_id / "run.json").read_text())
        assert hashlib.sha256(weights).hexdigest() == (lineage.get("stored") or {}).get("adapter_sha256"), (
            lineage
        )
        # The customer's secret never went to RunPod: not in any pod's environment, nor in a call.
        pods = [*fake.pods.values(), *fake.gone.values()]
        assert pods[0].env["WEBHOOK_URL"] == f"{base}/api/training/webhook"
        # The pod signs with its job's own key: never the customer's secret, the service's or its token; and
        # that key went as the job's RunPod secret, deleted once the run was over (jobs/pod/secrets.py).
        secret = f"brightrun_webhook_{job_id}"
        assert pods[0].env["TRAINING_WEBHOOK_SECRET"] == "{{ RUNPOD_SECRET_" + secret + " }}"
        assert secret not in fake.account_secrets and ("createSecret", {"name": secret}) in [
            (name, {"name": args.get("name")}) for name, args in fake.calls
        ]
        sent = json.dumps([pod.input for pod in pods])
        assert CUSTOMER_SECRET not in sent and SERVICE_SECRET not in sent and TOKEN not in sent
        assert webhooks.run_key(SERVICE_SECRET, job_id) not in sent
        assert CUSTOMER_SECRET not in json.dumps([str(call) for call in fake.calls])
        assert pods[0].input["env"] and pods[0].input["imageName"] == env["BRIGHTRUN_IMAGE"]
        ended_at_once(tmp_path / "runs", job_id, url, fake, env, keys, marker, manifest, launcher)


def ended_at_once(runs, job_id, url, fake, env, keys, marker, manifest, launcher_log) -> None:
    """RunPod starts a container again when its process exits, so the pod of a completed run says RUNNING
    for ever. The launcher ends the run from the run's own status on the volume: fetches the adapter, then
    terminates the pod within a poll of the container's exit; a restarted container on the finished run
    exits at once instead of `resume`. The cost is the pod's time from its creation to its termination ×
    its price."""
    job = registry.get_job(job_id, url)
    assert (job.status, job.step) == ("completed", 2)
    assert status_log.changes(url, job.id).count("completed") == 1
    assert (runs / job.id / "output" / "adapter_model.safetensors").is_file()  # fetched before terminate
    pod = fake.gone[job.pod_id]  # terminated by the launcher, not left RUNNING
    volume = fake.workspace.resolve()
    exited = volume / "pods" / f"{job.pod_id}.exited"
    assert exited.read_text().strip() == "0"
    # Terminated within a poll (0.5 s) of the container's exit, plus the fetch of the adapter here.
    assert 0 <= pod.halted_at - exited.stat().st_mtime < 0.5 + 5
    container = (volume / f"container-{job.pod_id}.log").read_text()
    assert " resume " not in container, container

    # The adapter was in the store before the pod was terminated: the pod uploaded it (the manifest last),
    # then wrote its exit mark, which the launcher waited for; the store's sha256 is the fetched adapter's.
    assert f"{PREFIX}/runs/{job.id}/manifest.json" in keys
    adapter = sha256_file(runs / job.id / "output" / "adapter_model.safetensors")
    assert (
        manifest["files"]["adapter/adapter_model.safetensors"]["sha256"]
        == adapter
        == marker["adapter_sha256"]
    )
    assert (
        (volume / "runs" / job.id / stored.MARKER).stat().st_mtime <= exited.stat().st_mtime <= pod.halted_at
    )
    assert f"adapter in the store at s3://{BUCKET}/{PREFIX}/runs/{job.id}/" in launcher_log
    assert json.loads((runs / job.id / "run.json").read_text())["stored"] == marker
    # Where the store is and its keys went to the pod as secrets: never in run.json, the volume or its log.
    create = fake.created[0]  # either API, in GraphQL's input names (tests/fake_runpod.py)
    store_env = {k: env[k] for k in stored.STORE_VARS if k in env}
    assert {p["key"] for p in create["env"]} >= set(store_env)
    launched = json.loads((runs / job.id / "run.json").read_text())["launch"]
    assert set(store_env) <= set(launched["secrets"]) and not set(store_env) & set(launched["env"])
    for value in (env["AWS_SECRET_ACCESS_KEY"], env["AWS_ENDPOINT_URL"], env["ARTIFACT_STORE"]):
        assert value not in container and value not in json.dumps(marker)

    # A container started again on the finished run (as RunPod would) exits 0 at once, training nothing.
    pod_env = {p["key"]: p["value"] for p in create["env"]} | {"RUNPOD_POD_ID": job.pod_id}
    again = subprocess.run(
        ["bash", str(ENTRYPOINT)],
        env={"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HOME": os.environ.get("HOME", "/tmp")}
        | {"PYTHONPATH": str(ROOT)}
        | offline.ALL
        | pod_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0 and "already over on the volume" in again.stderr, again.stderr
    assert "is already complete" in again.stderr  # the upload is not done again (the marker says so)
    assert " resume " not in again.stderr and "run-config" not in again.stderr
    assert registry.get_job(job.id, url).status == "completed"

    # Cost: from just before the create to just after the terminate, at the pod's price, restarts and all.
    [attempt] = json.loads((runs / job.id / "run.json").read_text())["attempts"]
    assert attempt["outcome"] == "completed"
    assert attempt["created_ts"] <= pod.created_at and attempt["ended_ts"] >= pod.halted_at
    assert attempt["cost_per_hr"] == pod.cost_per_hr == 2.39
    assert job.actual_cost == pytest.approx(billed([attempt]), rel=1e-6)
    assert attempt["billed_s"] >= attempt["uptime_s"]
