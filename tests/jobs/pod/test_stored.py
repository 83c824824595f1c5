"""A pod run's files into the artifact store from the pod (jobs/pod/stored.py), on a completed run folder
prepared without training (tests/versions/runs.py: a real PEFT adapter, its registry row) on a folder
standing in for the pod's volume, through the real docker/entrypoint.sh and a real S3 wire protocol
(moto's server on 127.0.0.1). The upload after a real training run is asserted in test_real_account.py's
finished-run test; here: a container killed half-way and restarted, a store that refuses, the adapter as
one zip whose key the launcher's completed event names, promotion of a pod run whose adapter never came
home."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
import zipfile

import pytest
from conftest import ROOT
from sqlalchemy import select

from brightrun import offline
from jobs import registry
from jobs.pod import follow as follow_mod
from jobs.pod import stored
from jobs.pod.follow import Follower
from jobs.runfolder import sha256_file, write_json
from tests.jobs.pod.test_launch import BIN
from tests.s3_server import SECRET_KEY, s3_server
from tests.versions.runs import adapter, dies_at, make_run, s3_env, stored_keys, versions_main  # noqa: F401
from versions import store

ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
JOB = "3f6c2a4e-8d1b-4f7a-9c55-2b7e1d0a9f13"  # the launcher's id (BRIGHTRUN_JOB_ID); the volume's is run-p


@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        yield server


@pytest.fixture
def pod(s3, tmp_path, adapter):  # noqa: F811
    """A volume with a completed run on it, the store's bucket, and the env a pod of it gets."""
    volume = tmp_path / "volume"
    db = f"sqlite:///{volume / 'runs' / 'registry.db'}"
    run_dir = make_run(volume / "runs", db, "run-p", adapter)
    bucket = f"store-{uuid.uuid4().hex[:8]}"
    env = {
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONPATH": str(ROOT),
        "BRIGHTRUN_CONFIG": str(volume / "configs" / "run-p" / "config.yaml"),
        "BRIGHTRUN_RUN_ID": "run-p",
        "BRIGHTRUN_JOB_ID": JOB,
        "BRIGHTRUN_VOLUME": str(volume),
        "RUNPOD_POD_ID": "pod1",
        **offline.ALL,
        **s3_env(s3, bucket),
    }
    return volume, run_dir, bucket, env


def entrypoint(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ENTRYPOINT)], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def secret_free(text: str, env: dict) -> None:
    """Neither the store's location nor its keys are written down on the pod."""
    for name in ("ARTIFACT_STORE", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[name] not in text, name


DIES_AT = dies_at("jobs.pod.stored")  # the pod's upload, killed before its Nth object


def test_a_container_killed_mid_upload_is_finished_by_its_restart(s3, pod, monkeypatch):
    volume, run_dir, bucket, env = pod
    folder = f"runs/{JOB}"
    died = subprocess.run(
        [sys.executable, "-c", DIES_AT, "2", str(volume / "runs"), "run-p"],
        cwd=ROOT, env={**env, "DATABASE_URL": f"sqlite:///{volume / 'runs' / 'registry.db'}"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert died.returncode == 9, died.stderr
    prefix = f"brightrun/{folder}"
    keys = stored_keys(s3, bucket)  # the version's claim (versions/store.py claim) and one file, no manifest
    assert len(keys) == 3 and f"{prefix}/claim.txt" in keys and f"{prefix}/manifest.json" not in keys
    assert not (run_dir / stored.MARKER).exists() and not (volume / "pods" / "pod1.exited").exists()

    # RunPod starts the container again: the run is over, so nothing trains; the upload is finished.
    again = entrypoint(env)
    assert again.returncode == 0, again.stderr
    assert "already over on the volume" in again.stderr and "run-config" not in again.stderr
    assert again.stderr.count(": already there") == 2, again.stderr  # what made it is not sent again
    assert "the adapter is in the store at $ARTIFACT_STORE/" + folder in again.stderr
    marker = json.loads((run_dir / stored.MARKER).read_text())
    assert marker["folder"] == folder and "error" not in marker
    assert marker["adapter_sha256"] == sha256_file(run_dir / "output" / "adapter_model.safetensors")
    assert (volume / "pods" / "pod1.exited").read_text().strip() == "0"  # the launcher may end the pod now
    secret_free(again.stderr + json.dumps(marker), env)

    # Off the pod: every file back, each sha256 checked against the manifest the marker names.
    for key in ("ARTIFACT_STORE", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, env[key])  # open_store reads the store from the environment
    dest = volume.parent / "elsewhere"
    manifest = store.download(store.open_store(), folder, marker["manifest_sha256"], dest, say=lambda _: None)
    assert manifest["run_id"] == JOB and manifest["volume_run_id"] == "run-p"
    assert {"adapter/adapter_model.safetensors", "config.yaml", "data-manifest.json", "run.json"} <= set(
        manifest["files"]
    )
    assert {"report.html", "eval/verdict.json"} <= set(manifest["files"])
    got = (dest / "adapter" / "adapter_model.safetensors").read_bytes()
    assert got == (run_dir / "output" / "adapter_model.safetensors").read_bytes()

    # A third start: complete already, nothing sent, the exit mark left as it was.
    before = stored_keys(s3, bucket)
    mark = (volume / "pods" / "pod1.exited").stat().st_mtime_ns
    third = entrypoint(env)
    assert third.returncode == 0 and "is already complete" in third.stderr, third.stderr
    assert stored_keys(s3, bucket) == before and (volume / "pods" / "pod1.exited").stat().st_mtime_ns == mark


class Refusing(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint that refuses the keys, as S3 does for an unknown access key (HTTP 403)."""

    BODY = (
        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidAccessKeyId</Code><Message>The AWS '
        b"Access Key Id you provided does not exist in our records.</Message></Error>"
    )

    def answer(self):
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(self.BODY)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(self.BODY)

    do_GET = do_HEAD = do_PUT = do_POST = answer  # noqa: N815 -- http.server's names

    def log_message(self, *args):
        pass


def test_a_store_that_refuses_leaves_the_run_completed_its_adapter_on_the_volume_and_says_so(pod, tmp_path):
    volume, run_dir, _, env = pod
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{server.server_address[1]}"}
        out = entrypoint(env)
    finally:
        server.shutdown()
    assert out.returncode == 0, out.stderr  # the run's outcome is not the upload's
    assert "warning: the upload to the artifact store failed" in out.stderr
    assert "refused (403); check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in out.stderr
    assert "its adapter stays on the volume" in out.stderr
    marker = json.loads((run_dir / stored.MARKER).read_text())
    assert "refused (403)" in marker["error"] and "manifest_sha256" not in marker
    secret_free(out.stderr + json.dumps(marker), env)
    assert (run_dir / "output" / "adapter_model.safetensors").is_file()
    assert (volume / "pods" / "pod1.exited").read_text().strip() == "0"

    # The launcher at the run's end: the warning on its terminal, the failure in run.json and the event.
    here = tmp_path / "launcher-runs" / JOB
    here.mkdir(parents=True)
    launch = {"volume_dir": str(volume), "max_cost": None, "start_timeout": None, "store_upload": True}
    write_json(here / "run.json", {"launch": launch, "attempts": []})
    field = Follower(JOB, str(here.parent), api=None, poll=0.2, settle_s=0).stored("run-p")
    assert field == {"status": "failed", "error": marker["error"]}
    assert json.loads((here / "run.json").read_text())["stored"] == marker
    assert stored.describe(marker).startswith("warning: not in the artifact store (StoreError: ")


def test_the_adapter_goes_up_as_one_zip_whose_key_the_launchers_completed_event_names(
    s3, pod, tmp_path, monkeypatch
):
    volume, run_dir, bucket, env = pod
    for key in (
        "ARTIFACT_STORE",
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
    ):
        monkeypatch.setenv(key, env[key])
    db = f"sqlite:///{volume / 'runs' / 'registry.db'}"
    monkeypatch.setenv("DATABASE_URL", db)
    # What Axolotl leaves in output/ beside the adapter (a smoke run's): the tokenizer and chat template go
    # in the zip (run_files' adapter/), its model card, the base's config and checkpoints do not.
    out = run_dir / "output"
    (out / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    for name in ("README.md", "config.json", "debug.log"):
        (out / name).write_text(name)
    (out / "checkpoint-2").mkdir()
    (out / "checkpoint-2" / "adapter_model.safetensors").write_bytes(b"older")
    (run_dir / "logs").mkdir()
    (run_dir / "logs" / "train.log").write_text("{'loss': 2.5, 'step': 1}\n")

    record = stored.upload_run(run_dir, JOB, say=lambda _: None)
    key = f"brightrun/runs/{JOB}/adapter.zip"  # in the bucket: the store's prefix, no bucket, no s3://
    assert record["zip_key"] == key and record["log_key"] == f"brightrun/runs/{JOB}/logs/train.log"
    assert json.loads((run_dir / stored.MARKER).read_text()) == record
    body = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    assert (hashlib.sha256(body).hexdigest(), len(body)) == (record["zip_sha256"], record["zip_bytes"])
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.namelist() == [
            "adapter_config.json", "adapter_model.safetensors", "chat_template.jinja", "tokenizer_config.json"
        ]  # fmt: skip
        assert {(i.date_time, i.compress_type) for i in zf.infolist()} == {
            ((1980, 1, 1, 0, 0, 0), zipfile.ZIP_STORED)
        }
        weights = hashlib.sha256(zf.read("adapter_model.safetensors")).hexdigest()
        assert zf.read("tokenizer_config.json") == (out / "tokenizer_config.json").read_bytes()
    with registry.session(db) as s:
        [row] = s.scalars(select(registry.ModelArtifact).filter_by(job_id="run-p")).all()
    recorded = json.loads((run_dir / "run.json").read_text())["adapter"]["sha256"]
    assert weights == recorded == row.sha256 == record["adapter_sha256"]

    # Again: nothing sent. With its marker (the entrypoint's restart), and without it (a container killed
    # between the manifest and the marker): the zip, made again, is the same bytes, so the store's sha256
    # check finds the version complete.
    puts = []
    monkeypatch.setattr(store.S3Store, "put", lambda self, src, key, sha256: puts.append(key))
    assert stored.upload_run(run_dir, JOB, say=lambda _: None) == record
    (run_dir / stored.MARKER).unlink()
    said = []
    again = stored.upload_run(run_dir, JOB, say=said.append)
    assert puts == [] and any("is already complete" in line for line in said), said
    assert {k: again[k] for k in ("manifest_sha256", "zip_key", "zip_sha256")} == {
        k: record[k] for k in ("manifest_sha256", "zip_key", "zip_sha256")
    }

    # The launcher at the run's end, its fetch failed: the customer's lora_artifact_path is the zip's key in
    # their bucket (their dashboard signs it), our registry keeps the volume's path.
    here = tmp_path / "launcher-runs" / JOB
    here.mkdir(parents=True)
    attempt = {"pod_id": "pod1", "volume_run_id": "run-p", "outcome": None, "cost_per_hr": 1.0, "uptime_s": 0}
    launch = {
        "volume_dir": str(volume),
        "max_cost": None,
        "start_timeout": None,
        "store_upload": True,
        "gpus": 1,
    }
    write_json(here / "run.json", {"launch": launch, "attempts": [attempt]})
    sent = []
    monkeypatch.setattr(follow_mod, "fetch_adapter", lambda *args: None)
    monkeypatch.setattr(
        follow_mod, "set_status", lambda *args, event=None, **row: sent.append((args, event, row))
    )
    monkeypatch.delenv("WEBHOOK_URL", raising=False)
    follower = Follower(JOB, str(here.parent), api=None, poll=0.2, settle_s=0)
    state = {"status": "completed", "step": 3, "total_steps": 3, "metrics": {"loss": 1.5}}
    assert follower.ended(follower.attempts[-1], None, state) == 0
    [(args, event, row)] = sent
    assert args[2] == "completed" and row["artifact_path"] == f"{volume}/runs/run-p/output"
    assert event["lora_artifact_path"] == key and event["training_log_path"] == record["log_key"]
    assert event["artifact_store"] == stored.event_field(again) and event["artifact_store"]["zip_key"] == key


def test_promote_takes_a_never_fetched_pod_run_from_its_store_copy(
    s3,
    pod,
    tmp_path,
    monkeypatch,
    versions_main,  # noqa: F811
):
    volume, pod_run, bucket, env = pod
    for key in (
        "ARTIFACT_STORE",
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
    ):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{volume / 'runs' / 'registry.db'}")
    monkeypatch.setenv("BRIGHTRUN_JOB_ID", JOB)
    marker = stored.upload_run(pod_run, JOB, say=lambda _: None)
    assert marker["manifest_sha256"]

    # The launcher's side: its run folder has the config, data manifest and run.json, never the adapter
    # (the fetch failed, the pod's volume went with the pod); run.json records the store copy.
    db = f"sqlite:///{tmp_path / 'launcher.db'}"
    runs = tmp_path / "runs"
    run_dir = make_run(runs, db, JOB, pod_run / "output")
    for name in ("output", "eval", "report.html"):
        shutil.rmtree(run_dir / name) if (run_dir / name).is_dir() else (run_dir / name).unlink()
    lineage = json.loads((run_dir / "run.json").read_text())
    write_json(run_dir / "run.json", {**lineage, "stored": marker})
    args = ("--runs-dir", str(runs), "promote", JOB, "--model", "elena-morales")
    out = versions_main(*args, env={"DATABASE_URL": db})
    assert out.returncode == 0, out.stderr
    assert f"its adapter was never fetched; taking its copy in the store (runs/{JOB}/)" in out.stdout
    assert "download: adapter/adapter_model.safetensors ok" in out.stdout
    assert "elena-morales@v1: complete" in out.stdout
    fetched = run_dir / "output" / "adapter_model.safetensors"
    assert sha256_file(fetched) == marker["adapter_sha256"] and (run_dir / "eval" / "verdict.json").is_file()
    assert not (run_dir / ".stored").exists()
    version = store.read_manifest(store.open_store(), "models/elena-morales/v1")
    assert version["adapter_sha256"] == marker["adapter_sha256"] and version["verdict"] == "pass"
    assert "brightrun/models/elena-morales/v1/adapter/adapter_model.safetensors" in stored_keys(s3, bucket)

    # A store copy whose adapter changed since the pod's upload is refused, and nothing is left behind.
    other = make_run(runs, db, "job-2", pod_run / "output")
    for name in ("output", "eval", "report.html"):
        shutil.rmtree(other / name) if (other / name).is_dir() else (other / name).unlink()
    write_json(other / "run.json", {**lineage, "run_id": "job-2", "stored": marker})
    s3.client().put_object(
        Bucket=bucket, Key=f"brightrun/runs/{JOB}/adapter/adapter_model.safetensors", Body=b"x"
    )
    out = versions_main(
        "--runs-dir", str(runs), "promote", "job-2", "--model", "elena-morales", env={"DATABASE_URL": db}
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "run job-2: its copy in the artifact store: " in out.stderr and "sha256 mismatch" in out.stderr
    assert not (other / "output").exists() and not (other / ".stored").exists()


def test_a_pod_gets_the_store_only_when_it_is_s3(monkeypatch):
    for key in stored.STORE_VARS:
        monkeypatch.delenv(key, raising=False)
    assert stored.pod_vars() == []
    monkeypatch.setenv("ARTIFACT_STORE", "/srv/artifacts")  # a folder here is nothing on a pod
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    assert stored.pod_vars() == []
    monkeypatch.setenv("ARTIFACT_STORE", "s3://model-artifacts/brightrun")
    assert stored.pod_vars() == ["ARTIFACT_STORE", "AWS_ACCESS_KEY_ID"]
    assert stored.redact("s3://model-artifacts/brightrun/runs/x failed") == "$ARTIFACT_STORE/runs/x failed"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    assert stored.redact(f"signed with {SECRET_KEY}") == "signed with $AWS_SECRET_ACCESS_KEY"
