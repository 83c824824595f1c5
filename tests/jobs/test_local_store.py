"""A local run's adapter in the customer's bucket (jobs/run.py execute, jobs/pod/stored.py upload_run): with
ARTIFACT_STORE set, a completed run's files and its adapter.zip go up before the completed event, which
names the zip's key in the bucket as lora_artifact_path (what their dashboard's "Download LoRA adapters"
button signs). No training: execute() runs for real around a stand-in for Axolotl (preprocess and the
trainer's process replaced by one that leaves small adapter files), so the completion path is the real one,
its events reaching the customer's receiver (tests/customer_app.py). The store is moto's S3 server on
127.0.0.1, or a local HTTP server answering as Supabase Storage does to an upload over the bucket's limit
(HTTP 413 EntityTooLarge): moto enforces no size limit, and an answer on the wire (rather than a patched
client) goes through botocore's parsing and boto3's S3UploadFailedError as a real one does."""

from __future__ import annotations

import atexit
import hashlib
import http.server
import io
import json
import threading
import zipfile

import pytest
from boto3.exceptions import RetriesExceededError, S3UploadFailedError
from botocore.exceptions import ClientError, EndpointConnectionError
from conftest import no_loss

from jobs import registry, webhooks
from jobs import run as run_mod
from jobs.pod import stored
from jobs.runfolder import sha256_file, write_json
from tests.s3_server import ACCESS_KEY, DATACENTER, SECRET_KEY, s3_server
from tests.versions.runs import s3_env
from versions import store

WEIGHTS = bytes(range(256)) * 800  # 204.8 kB: over the refusing bucket's limit below
LIMIT = 100_000  # that bucket's file-size limit, in bytes
TOO_LARGE = (
    "the bucket refused runs/{job}/adapter/adapter_model.safetensors (0.2 MB): over its file-size limit; "
    "raise it in Supabase: Storage → Settings → Upload file size limit (and the bucket's own limit)"
)


@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        yield server


def new_run(runs, db: str, run_id: str):
    """A run folder as `jobs train` prepares it (run.json, config.yaml, logs/), and its registry row."""
    run_dir = runs / run_id
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("base_model: assets/tiny-llama\nadapter: lora\nlora_r: 8\n")
    lineage = {
        "run_id": run_id,
        "preset": "balanced",
        "model": "smoke",
        "hardware": "cpu",
        "config": {"sha256": sha256_file(run_dir / "config.yaml")},
        "attempts": [],
    }
    write_json(run_dir / "run.json", lineage)
    with registry.session(db) as s:
        s.add(registry.TrainingJob(id=run_id, preset="balanced", model="smoke", hardware="cpu"))
        s.commit()
    return run_dir


def trains(cmd, log, env, progress=None) -> int:
    """Axolotl's train, as far as the run folder sees it: an adapter, the tokenizer beside it, a log."""
    out = log.parent.parent / "output"
    out.mkdir(exist_ok=True)
    (out / "adapter_model.safetensors").write_bytes(WEIGHTS)
    (out / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16, "peft_type": "LORA"}))
    (out / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 2048}))
    (out / "README.md").write_text("a model card: not the adapter")
    log.write_text("{'loss': 2.5, 'step': 1}\n")
    return 0


@pytest.fixture
def local(tmp_path, monkeypatch, customer_app):
    """execute() with the stand-in trainer, its events to the customer's receiver, a job of theirs."""
    monkeypatch.setattr(run_mod, "preprocess", lambda *args: None)
    monkeypatch.setattr(run_mod, "run_logged", trains)
    for key, value in customer_app.env().items():
        monkeypatch.setenv(key, value)
    for key in ("BRIGHTRUN_JOB_ID", "BRIGHTRUN_FOLLOWED", "WEBHOOK_RUN_KEYS", "RUNPOD_POD_ID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(webhooks, "_sender", None)
    db = f"sqlite:///{tmp_path / 'registry.db'}"
    job_id = customer_app.new_job()
    run_dir = new_run(tmp_path / "runs", db, job_id)

    def execute() -> tuple[int, dict]:
        code = run_mod.execute(job_id, str(tmp_path / "runs"), db, evaluate=False)
        webhooks._sender.flush(20)
        sent = [json.loads(line) for line in (run_dir / webhooks.SPOOL).read_text().splitlines()]
        return code, sent[-1]

    yield run_dir, db, job_id, execute
    if webhooks._sender is not None:  # this test's sender: what it left is the test's business, not exit's
        atexit.unregister(webhooks._sender.flush)


def test_a_completed_local_run_names_its_zip_in_the_bucket(s3, local, monkeypatch, customer_app):
    run_dir, db, job_id, execute = local
    for key, value in s3_env(s3, "model-artifacts").items():  # ARTIFACT_STORE=s3://model-artifacts/brightrun
        monkeypatch.setenv(key, value)
    code, last = execute()
    assert code == 0 and registry.get_job(job_id, db).status == "completed"
    key = f"brightrun/runs/{job_id}/adapter.zip"
    assert last["status"] == "completed" and last["lora_artifact_path"] == key
    assert last["training_log_path"] == f"brightrun/runs/{job_id}/logs/train.log"
    assert last["artifact_store"]["status"] == "stored" and last["artifact_store"]["zip_key"] == key
    tally = customer_app.tally(job_id)
    no_loss(tally)
    assert (tally["row"]["status"], tally["row"]["lora_artifact_path"]) == ("completed", key)
    # What their button downloads is the adapter the run recorded.
    body = s3.client().get_object(Bucket="model-artifacts", Key=key)["Body"].read()
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.namelist() == ["adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json"]
        weights = hashlib.sha256(zf.read("adapter_model.safetensors")).hexdigest()
    assert weights == json.loads((run_dir / "run.json").read_text())["adapter"]["sha256"]
    assert registry.get_job(job_id, db).artifact_path == str(run_dir / "output")  # ours: the local copy


class SizeLimited(http.server.BaseHTTPRequestHandler):
    """A bucket with a file-size limit, answering as Supabase Storage's S3 endpoint does: HTTP 413,
    EntityTooLarge, for an object over it; nothing is stored (every object is "not there")."""

    TOO_LARGE = (
        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>EntityTooLarge</Code>'
        b"<Message>The object exceeded the maximum allowed size</Message></Error>"
    )
    NOT_THERE = b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code></Error>'
    protocol_version = "HTTP/1.1"  # answers botocore's `Expect: 100-continue` at once (1 s wait otherwise)

    def reply(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        if status == 200:
            self.send_header("ETag", '"0"')
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_PUT(self):  # noqa: N802 -- http.server's names
        size = len(self.rfile.read(int(self.headers["Content-Length"])))
        self.reply(413, self.TOO_LARGE) if size > LIMIT else self.reply(200)

    def do_GET(self):  # noqa: N802
        self.reply(404, self.NOT_THERE)

    def do_HEAD(self):  # noqa: N802
        self.reply(404)

    def log_message(self, *args):
        pass


def test_a_bucket_over_its_size_limit_leaves_the_run_completed_and_names_the_setting(
    local, monkeypatch, capsys
):
    run_dir, db, job_id, execute = local
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SizeLimited)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    store_env = {
        "ARTIFACT_STORE": "s3://model-artifacts/brightrun",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{server.server_address[1]}",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": DATACENTER.lower(),
    }
    for key, value in store_env.items():
        monkeypatch.setenv(key, value)
    try:
        code, last = execute()
    finally:
        server.shutdown()
    assert code == 0 and registry.get_job(job_id, db).status == "completed"
    assert last["status"] == "completed" and last["lora_artifact_path"] == str(run_dir / "output")
    assert last["artifact_store"]["status"] == "failed" and "training_log_path" not in last
    assert TOO_LARGE.format(job=job_id) in last["artifact_store"]["error"]
    assert last["artifact_store"]["error"].startswith("TooLarge: $ARTIFACT_STORE/ ($AWS_ENDPOINT_URL): ")
    err = capsys.readouterr().err
    assert "warning: the upload to the artifact store failed" in err and TOO_LARGE.format(job=job_id) in err
    assert "its adapter stays on this machine" in err
    assert (run_dir / "output" / "adapter_model.safetensors").read_bytes() == WEIGHTS
    assert json.loads((run_dir / stored.MARKER).read_text())["error"] == last["artifact_store"]["error"]


def test_without_a_store_a_local_run_names_its_output_folder_as_before(local, monkeypatch):
    run_dir, _, _, execute = local
    monkeypatch.delenv("ARTIFACT_STORE", raising=False)
    _, last = execute()
    assert last["lora_artifact_path"] == str(run_dir / "output") and "artifact_store" not in last
    assert not (run_dir / stored.MARKER).exists()


def client_error(code: str, status: int, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


@pytest.mark.parametrize(
    "failure",
    [
        client_error("InternalError", 500, "PutObject"),
        EndpointConnectionError(endpoint_url="https://ref.supabase.co/storage/v1/s3"),  # a BotoCoreError
        S3UploadFailedError("Failed to upload adapter.zip: An error occurred (SlowDown)"),
        RetriesExceededError(TimeoutError("read timed out")),
        "a bad endpoint",  # the client itself cannot be made: botocore's ValueError, outside any call
    ],
    ids=["ClientError", "BotoCoreError", "S3UploadFailedError", "RetriesExceededError", "ValueError"],
)
def test_any_s3_failure_is_the_upload_failing_never_a_crash(tmp_path, monkeypatch, failure):
    """At the boto client's boundary (upload_file raises it as boto3 would), on a run folder alone."""
    run_dir = tmp_path / "run-1"
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("base_model: x\n")
    write_json(run_dir / "run.json", {"run_id": "run-1"})
    trains(None, run_dir / "logs" / "train.log", None)
    monkeypatch.setenv("ARTIFACT_STORE", "s3://model-artifacts/brightrun")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "not a url" if isinstance(failure, str) else "http://127.0.0.1:9")
    if not isinstance(failure, str):
        target = store.open_store()

        def fail(*args, **kw):
            raise failure

        def not_there(*args, **kw):
            raise client_error("404", 404, "HeadObject")

        monkeypatch.setattr(target.client, "head_object", not_there)
        monkeypatch.setattr(target.client, "download_file", not_there)
        monkeypatch.setattr(target.client, "upload_file", fail)
        monkeypatch.setattr(store, "open_store", lambda url=None: target)
    said = []
    record = stored.upload_run(run_dir, "job-1", say=said.append, completed=True)
    assert "manifest_sha256" not in record and record["error"], record
    assert any("the upload to the artifact store failed" in line for line in said), said
    fields = stored.event_fields(record, str(run_dir / "output"))
    assert fields == {
        "lora_artifact_path": str(run_dir / "output"),
        "artifact_store": {"status": "failed", "error": record["error"]},
    }
