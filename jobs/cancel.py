"""One cancel, for the CLI (`jobs cancel RUN`) and the API (`DELETE /api/training/jobs/{id}`) alike: a local
run's launcher gets SIGTERM (the trainer saves a checkpoint and stops); a pod run's pod is terminated
through RunPod, so it stops billing, and the launcher following it sees the status and exits; a run with
no one running it is marked cancelled here. A job known only from its webhooks runs elsewhere: 409."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from brightrun.errors import ConfigError
from jobs import registry
from jobs.runfolder import CANCEL_FILE, Conflict, NotFound, launcher_alive
from jobs.status import set_status


def cancel(run_id: str, runs_dir: str = "runs", db_url: str | None = None) -> str:
    """Stop a run for good: its launcher gets SIGTERM (the trainer saves and stops) and marks it
    cancelled; a run with no live launcher (queued, interrupted) is marked cancelled here."""
    run_dir = Path(runs_dir) / run_id
    job = registry.get_job(run_id, db_url)
    if job is None:
        raise NotFound(f"no run {run_id!r} (see `just runs`)")
    if job.status in registry.TERMINAL:
        raise Conflict(f"run {run_id} is already {job.status}")
    if job.pod_id:  # a RunPod run: its pod is what must stop (and stop billing), not a local process
        return cancel_pod(run_id, runs_dir, db_url)
    if not (run_dir / "run.json").is_file():
        raise Conflict(
            f"run {run_id} is known here only from its webhook events: it runs elsewhere, and nothing "
            "here can stop it; cancel it where it runs (`jobs cancel` there, or the pod's launcher)"
        )
    if run_dir.is_dir():
        (run_dir / CANCEL_FILE).touch()
        pid = launcher_alive(run_dir)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            return "cancelling"
    set_status(
        run_dir,
        run_id,
        "cancelled",
        db_url,
        error_message="cancelled on request",
        completed_at=registry.now(),
    )
    return "cancelled"


def cancel_pod(run_id: str, runs_dir: str = "runs", db_url: str | None = None) -> str:
    """Terminate the run's pod (its volume stays) and mark the run cancelled."""
    from jobs.pod import runpod
    from jobs.pod.pods import client

    job = registry.get_job(run_id, db_url)
    api = client()
    try:
        api.terminate(job.pod_id)
    except runpod.AuthError as exc:
        raise ConfigError(str(exc)) from None
    except runpod.RunPodError as exc:
        if "not found" not in str(exc).lower():
            # Not marked cancelled: the pod may still run (and bill). The caller can try again.
            raise Conflict(
                f"could not terminate pod {job.pod_id} ({exc}); nothing changed, try again"
            ) from None
    run_dir = Path(runs_dir) / run_id
    if run_dir.is_dir():
        (run_dir / CANCEL_FILE).touch()
    message = f"cancelled on request (pod {job.pod_id} terminated)"
    set_status(run_dir, run_id, "cancelled", db_url, error_message=message, completed_at=registry.now())
    return "cancelled"
