"""`jobs cancel RUN` during training: the trainer saves a checkpoint and stops; the run is cancelled (final).
(SIGTERM, which marks it interrupted and resumable, is tests/jobs/test_resume.py, with the resume.)"""

from __future__ import annotations

import subprocess
import time

import pytest
from conftest import jobs_cli, no_loss, start_smoke_job

from jobs import registry, webhooks
from tests import status_log


@pytest.mark.slow(80)
def test_cancel_saves_a_checkpoint_and_the_run_is_final(tmp_path, sample_out, customer_app):
    runs = tmp_path / "runs"
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    status_log.watch(url)
    job_id = customer_app.new_job()
    proc = start_smoke_job(
        runs,
        url,
        sample_out,
        "max_steps=40",
        "save_steps=40",
        "--run-id",
        job_id,
        env=customer_app.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 600
    run_id = None
    while time.time() < deadline:
        time.sleep(1)
        assert proc.poll() is None, "the run ended before the signal"
        jobs = registry.list_jobs(url) if (tmp_path / "registry.db").exists() else []
        if jobs and jobs[0].status == "training" and jobs[0].step >= 1:
            run_id = jobs[0].id
            break
    assert run_id, "training did not reach step 1 within 10 minutes"
    cancelled = jobs_cli("--runs-dir", str(runs), "cancel", run_id, env={"DATABASE_URL": url})
    assert cancelled.returncode == 0 and "cancelling" in cancelled.stderr, cancelled.stderr
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-2000:]
    job = registry.get_job(run_id, url)
    assert job.status == "cancelled" and not (runs / run_id / "launcher.pid").exists()
    again = jobs_cli("--runs-dir", str(runs), "cancel", run_id, env={"DATABASE_URL": url})
    assert again.returncode == 2 and "already cancelled" in again.stderr
    resumed = jobs_cli("--runs-dir", str(runs), "resume", run_id, env={"DATABASE_URL": url})
    assert resumed.returncode == 2 and "is cancelled" in resumed.stderr
    assert 1 <= job.step < 40
    # The plugin asked the trainer for a checkpoint at the end of the step it was in: resumable.
    checkpoints = list((runs / run_id / "output").glob("checkpoint-*/trainer_state.json"))
    assert checkpoints, "no checkpoint saved on SIGTERM"

    # The customer's receiver (their job id): cancelled, with the reason, nothing lost on the way.
    assert run_id == job_id and webhooks.pending(runs / run_id) == []
    print(customer_app.summary("cancelled", job_id))
    tally = customer_app.tally(job_id)
    no_loss(tally)
    assert tally["statuses"][-1] == "cancelled" and tally["row"]["status"] == "cancelled"
    assert tally["row"]["error_message"].startswith("cancelled on request")
    assert tally["row"]["current_step"] == job.step and len(tally["history"]) == job.step
    status_log.ended_once(url, run_id, "cancelled", tally["ours"])
