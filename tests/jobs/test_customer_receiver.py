"""Our events against the customer's own receiver (tests/customer_app.py: their route, handler and tables,
database errors swallowed as theirs are). Every kind of event the sender makes, then a real run that
fails. The other real runs report to the same stand-in where they already run: a completed run
(test_jobs.py), a cancelled one (test_interrupt.py), an interrupted and resumed one (test_resume.py), a
preempted and relaunched one on the fake RunPod (test_launch.py)."""

from __future__ import annotations

import atexit
import json
import shutil

import pytest
from conftest import TINY_MODEL_DIR, jobs_cli, no_loss

from jobs import payload, webhooks
from tests import status_log


@pytest.fixture
def sender(monkeypatch, customer_app):
    """This process sends to the customer's app, with a fresh sender."""
    for key, value in customer_app.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(webhooks, "_sender", None)
    yield customer_app
    if webhooks._sender is not None:
        atexit.unregister(webhooks._sender.flush)


class Row:
    """What jobs/status.py hands the sender: the registry row's columns."""

    def __init__(self, job_id, **fields):
        self.id = job_id
        defaults = dict(pod_id=None, actual_cost=None, gpu_hours=None, retry_count=0, epoch=None)
        defaults |= dict(estimated_cost=0.42, started_at=None)
        for key, value in (defaults | fields).items():
            setattr(self, key, value)


def test_every_kind_of_event_is_applied_whole(tmp_path, sender):
    """One event of each kind we send, in the order a preempted, relaunched, capped run would send them;
    then a completed job. Zero refused, zero lost writes, and the rows the customer expects."""
    app = sender
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    job_id = app.new_job()
    row = Row(job_id, pod_id="pod-1", retry_count=0)
    emit = webhooks.emit
    emit(run_dir, job_id, "queued", row, job={"preset": "balanced", "model": "70b-qlora", "hardware": "h100"})
    emit(run_dir, job_id, "preprocessing", row, step=0)
    emit(run_dir, job_id, "model_loaded", row, step=0)
    emit(run_dir, job_id, "training", row, step=0, total_steps=3)
    train = {"loss": 2.5, "learning_rate": 2e-4, "grad_norm": 0.9, "epoch": 0.3}
    emit(run_dir, job_id, "training", row, step=1, total_steps=3, metrics=train)
    emit(run_dir, job_id, "training", row, step=1, total_steps=3, metrics={"eval_loss": 2.4, "epoch": 0.3})
    emit(run_dir, job_id, "training", row, step=2, total_steps=3, metrics={**train, "loss": float("nan")})
    # The pod is preempted; the launcher relaunches.
    emit(run_dir, job_id, "interrupted", row, step=2, error_message="stopped by a signal", relaunch=True)
    row.retry_count, row.pod_id = 1, "pod-2"
    emit(run_dir, job_id, "queued", row, step=2, relaunch=True, message="relaunch 1/3: pod pod-2")
    emit(run_dir, job_id, "preprocessing", row, step=2, error_message=None)
    emit(run_dir, job_id, "training", row, step=3, total_steps=3, metrics=train)
    # The cost cap stops it: nothing resumes it.
    row.actual_cost, row.gpu_hours = 5.01, 1.7
    capped = "cost cap $5.00 reached ($5.01 spent); the pod is stopped with its volume"
    emit(run_dir, job_id, "interrupted", row, step=3, error_message=capped, resumable=False)
    webhooks._sender.flush(20)

    t = app.tally(job_id)
    no_loss(t)
    assert t["events"] == 12 and t["metrics_events"] == 3  # the eval-only log is not a history row
    assert t["statuses"] == [
        "queued",
        "preprocessing",
        "model_loaded",
        "training",
        "training",
        "training",
        "training",
        "training",  # interrupted, relaunch pending
        "training",  # the relaunch
        "preprocessing",
        "training",
        "failed",  # the cost cap: nothing will resume it
    ]
    assert t["row"]["status"] == "failed" and t["row"]["error_message"] == capped
    assert t["row"]["completed_at"] and t["row"]["current_step"] == 3
    assert [h["step"] for h in t["history"]] == [1, 2, 3]
    assert t["history"][1]["loss"] is None  # the NaN loss is named, not sent
    assert t["history"][0] == {"step": 1, "epoch": 0.3, "loss": 2.5, "learning_rate": 2e-4, "grad_norm": 0.9}

    sent = [json.loads(line) for line in (run_dir / webhooks.SPOOL).read_text().splitlines()]
    assert sent[5]["eval"] == {"eval_loss": 2.4} and "metrics" not in sent[5]
    assert sent[6]["nonfinite_metrics"] == ["loss"]
    assert sent[7]["brightrun_status"] == "interrupted" and "the launcher relaunches it" in sent[7]["message"]
    assert "error_message" not in sent[7]
    assert sent[8]["retry_count"] == 1 and sent[8]["runpod_pod_id"] == "pod-2"
    assert sent[9]["error_message"] is None  # a resumed attempt clears the stop's text
    assert sent[11]["resumable"] is False and sent[11]["actual_cost_usd"] == 5.01
    for event in sent:
        assert event["status"] in payload.CUSTOMER_STATUSES
        assert None not in [v for k, v in event.items() if k != "error_message"]

    # A second job completes: its path arrives, its final numbers are not a second history row.
    done = app.new_job()
    emit(run_dir, done, "training", Row(done), step=2, total_steps=2, metrics=train)
    final = {**train, "heldout_base_loss": 2.7, "heldout_adapter_loss": 2.1, "train_runtime": 12.5}
    # The launcher's completed event of a pod run says where the pod put the adapter in the store.
    where = {"status": "stored", "folder": f"runs/{done}", "manifest_sha256": "ab" * 32}
    emit(
        run_dir, done, "completed", Row(done), step=2, total_steps=2, metrics=final, lora_artifact_path="/r/o",
        artifact_store=where,
    )  # fmt: skip
    webhooks._sender.flush(20)
    t = app.tally(done)
    no_loss(t)
    assert (t["row"]["status"], t["row"]["lora_artifact_path"], len(t["history"])) == ("completed", "/r/o", 1)
    last = json.loads((run_dir / webhooks.SPOOL).read_text().splitlines()[-1])
    assert last["eval"] == {"heldout_base_loss": 2.7, "heldout_adapter_loss": 2.1} and "metrics" not in last
    assert last["other_metrics"]["train_runtime"] == 12.5
    assert last["artifact_store"] == where  # an extra key: their handler applies the rest whole (no_loss)


def test_the_old_names_are_what_the_customer_loses(tmp_path, customer_app):
    """The stand-in is not lenient: the payload before this change loses exactly what the issue found."""
    import httpx

    job_id = customer_app.new_job()
    old = [
        {"job_id": job_id, "status": "training", "step": 2, "metrics": {"loss": 1.0, "eval_loss": 1.1}},
        {"job_id": job_id, "status": "interrupted", "step": 2, "error": "stopped"},
        {"job_id": job_id, "status": "completed", "step": 3, "artifact_path": "/r/o"},
    ]
    for event in old:
        body = webhooks.encode(event)
        headers = {webhooks.SIGNATURE_HEADER: webhooks.sign(customer_app.secret, body)}
        assert httpx.post(customer_app.url, content=body, headers=headers).status_code == 200
    t = customer_app.tally(job_id)
    assert len(t["lost_writes"]) == 2  # the eval_loss column, the status CHECK
    assert "eval_loss" in t["lost_writes"][0] and "check" in t["lost_writes"][1].lower()
    assert t["row"]["lora_artifact_path"] is None  # the path under our name never arrives


@pytest.mark.slow(15)
def test_a_failed_run_reaches_the_customer_with_its_error(tmp_path, sample_out, customer_app):
    """A real run whose data Axolotl cannot read: it fails in preprocessing, and their row says why."""
    data = tmp_path / "data"
    shutil.copytree(sample_out, data)
    (data / "train.jsonl").write_text('{"messages": [{"role": "user", "content": "cut off', "utf-8")
    job_id = customer_app.new_job()
    runs = tmp_path / "runs"
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    status_log.watch(url)
    args = ["--runs-dir", str(runs), "train", "balanced", "smoke", "--data", str(data), "--run-id", job_id]
    proc = jobs_cli(
        *args,
        f"base_model={TINY_MODEL_DIR}",
        "max_steps=2",
        env={"DATABASE_URL": url, **customer_app.env()},
        timeout=600,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    t = customer_app.tally(job_id)
    print(customer_app.summary("failed", job_id))
    no_loss(t)
    assert t["statuses"] == ["queued", "preprocessing", "failed"] and t["row"]["status"] == "failed"
    assert "axolotl preprocess exited" in t["row"]["error_message"] and t["row"]["completed_at"]
    assert t["row"]["lora_artifact_path"] is None
    status_log.ended_once(url, job_id, "failed", t["ours"])
