"""One run through both ways a run stops, for real on CPU: SIGTERM (a pod's stop, a spot reclaim: the
trainer saves a checkpoint, the run is `interrupted`), resume; then kill -9 after a checkpoint (the
machine dies: nobody records anything), resume again; it finishes at the planned step with every step
logged once. (`jobs cancel` is tests/jobs/test_interrupt.py.)

Runs on PostgreSQL when TEST_POSTGRES_URL is set (CI), so the whole path is exercised on both
backends (test_jobs.py uses SQLite).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from conftest import ROOT, jobs_cli, jobs_env, no_loss, start_smoke_job
from safetensors import safe_open

from jobs import registry, webhooks
from tests import status_log

STEPS = 6


def wait(check, what: str, proc: subprocess.Popen, seconds: float = 600):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = check()
        if value:
            return value
        assert proc.poll() is None, f"the run ended before {what}"
        time.sleep(0.5)
    raise AssertionError(f"not within {seconds} s: {what}")


def checkpoints(run_dir) -> list[int]:
    done = run_dir.glob("output/checkpoint-*/trainer_state.json")
    return sorted(int(p.parent.name.split("-")[1]) for p in done)


@pytest.mark.slow(280)
def test_sigterm_resume_kill_9_resume_finishes_at_the_planned_step(tmp_path, sample_out, customer_app):
    runs = tmp_path / "runs"
    url = os.environ.get("TEST_POSTGRES_URL") or f"sqlite:///{tmp_path / 'registry.db'}"
    status_log.watch(url)
    job_id = customer_app.new_job()  # the customer's app started it, and hears every event
    hears = customer_app.env()
    first = start_smoke_job(
        runs,
        url,
        sample_out,
        f"max_steps={STEPS}",
        "save_steps=1",
        "--run-id",
        job_id,
        env=hears,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    # 1. SIGTERM once training has logged a step: checkpoint, exit 130, `interrupted`.
    def training():
        job = registry.get_job(job_id, url) if (runs / job_id).is_dir() else None
        return job_id if job and job.status == "training" and job.step >= 1 else None

    run_id = wait(training, "step 1", first)
    run_dir = runs / run_id
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 130, stderr[-2000:]
    job = registry.get_job(run_id, url)
    assert job.status == "interrupted" and "resume" in job.error_message
    stopped_at = checkpoints(run_dir)[-1]
    assert 1 <= job.step <= stopped_at < STEPS  # the step it was in, checkpointed on the way out
    # Nothing will resume it by itself: for the customer it failed, with how to resume it.
    row = customer_app.tally(job_id)["row"]
    assert row["status"] == "failed" and "just resume" in row["error_message"]
    status_log.ended_once(url, job_id, "interrupted", customer_app.tally(job_id)["ours"])

    # 2. Resume; once it has saved a checkpoint of its own, the machine dies: every process at once.
    second = subprocess.Popen(
        [sys.executable, "-m", "jobs", "--runs-dir", str(runs), "resume", run_id],
        cwd=ROOT,
        env=jobs_env(url) | hears,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait(lambda: checkpoints(run_dir)[-1] > stopped_at, "a checkpoint after the resume", second)
    procs = [psutil.Process(second.pid), *psutil.Process(second.pid).children(recursive=True)]
    for p in procs:
        p.send_signal(signal.SIGKILL)
    second.wait()
    assert registry.get_job(run_id, url).status in ("training", "model_loaded")  # nobody could say otherwise

    # 3. Resume again: from the newest checkpoint, to the planned step.
    proc = jobs_cli("--runs-dir", str(runs), "resume", run_id, env={"DATABASE_URL": url, **hears})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resuming" in proc.stderr and "from checkpoint-" in proc.stderr
    resumed_from = int(proc.stderr.split("from checkpoint-")[1].split()[0])
    assert resumed_from > stopped_at  # the second attempt's own checkpoint

    job = registry.get_job(run_id, url)
    assert (job.status, job.step, job.total_steps, job.retry_count) == ("completed", STEPS, STEPS, 2)
    steps = [p.step for p in registry.metrics(run_id, url) if p.loss is not None]
    assert steps == list(range(1, STEPS + 1))  # each step once: nothing duplicated by either resume
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged if "loss" in m] == list(range(1, STEPS + 1))
    lineage = json.loads((run_dir / "run.json").read_text())
    assert lineage["attempts"][-1]["resume_from"].endswith(f"checkpoint-{resumed_from}")
    # The LoRA weights are loaded from the checkpoint, not stacked on top of a fresh adapter.
    with safe_open(str(run_dir / "output" / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert len(keys) == 2 * 7 * 2  # 2 layers × 7 projections × (A, B)
    assert all(k.startswith("base_model.model.model.layers.") and k.count("lora_") == 1 for k in keys)

    # The customer's row: completed at the planned step, the adapter's path, the stop's error cleared;
    # every event applied. The kill -9 left some undelivered in the spool: the next start sent them first.
    assert webhooks.pending(run_dir) == []
    print(customer_app.summary("interrupted, killed, resumed twice", job_id))
    tally = customer_app.tally(job_id)
    no_loss(tally)
    row = tally["row"]
    assert (row["status"], row["current_step"], row["total_steps"]) == ("completed", STEPS, STEPS)
    assert row["lora_artifact_path"] == job.artifact_path and row["error_message"] is None
    assert "failed" in tally["statuses"] and tally["statuses"][-1] == "completed"
    assert {h["step"] for h in tally["history"]} == set(range(1, STEPS + 1))
    status_log.ended_once(url, job_id, "completed", tally["ours"])
