"""A real smoke run, started through the service's API, reports to it by signed webhooks through an
outage of the service: every event arrives after the replay, and the dashboard shows its loss curve."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from browser import Elements, headless
from conftest import ROOT, free_port, jobs_env, start_service, stop_process
from sqlalchemy import func, select

from jobs import registry, webhooks

TOKEN = "run-token-41d2"
SECRET = "whsec-run-8a7f"


def start_jobs_service(tmp_path: Path, port: int, log_name: str) -> subprocess.Popen:
    env = {k: v for k, v in jobs_env().items() if k != "DATABASE_URL"}
    env |= {
        "JOBS_API_TOKEN": TOKEN,
        "TRAINING_WEBHOOK_SECRET": SECRET,
        "WEBHOOK_URL": f"http://127.0.0.1:{port}/api/training/webhook",  # its runs report back to it
    }
    args = ["-m", "jobs", "--runs-dir", str(tmp_path / "runs"), "service", "--port", str(port)]
    args += ["--data-dir", str(tmp_path / "data")]  # API paths resolve in here, nowhere else
    return start_service(args, env, tmp_path / log_name, port)


@pytest.mark.slow(120)
def test_a_run_started_by_the_api_reaches_the_service_through_an_outage(browser, tmp_path, sample_out):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    shutil.copytree(sample_out, tmp_path / "data" / "sample")
    service = start_jobs_service(tmp_path, port, "service-1.log")
    try:
        started = httpx.post(
            base + "/api/training/jobs",
            json={
                "preset": "balanced",
                "model": "smoke",  # its base model is the repo's tiny Llama: no path travels in the request
                "data": "sample",
                "overrides": ["max_steps=3"],
                "heldout_eval": False,
            },
            headers=auth,
            timeout=300,  # the service checks the config with Axolotl (imported once, here)
        )
        assert started.status_code == 202, started.text
        run_id = started.json()["id"]
        assert httpx.get(f"{base}/api/training/jobs/{run_id}", headers=auth).json()["status"] == "queued"
    finally:
        stop_process(service)  # down from here to the end of the run; the run goes on in its own session

    run_dir = tmp_path / "runs" / run_id
    url = f"sqlite:///{(tmp_path / 'runs' / 'registry.db').resolve()}"
    deadline = time.monotonic() + 900
    while (
        registry.get_job(run_id, url).status not in registry.TERMINAL or (run_dir / "launcher.pid").exists()
    ):
        assert time.monotonic() < deadline, "the run did not finish within 15 minutes"
        time.sleep(1)
    launcher_log = (run_dir / "logs" / "launcher.log").read_text()
    assert registry.get_job(run_id, url).status == "completed", launcher_log[-3000:]
    missed = webhooks.pending(run_dir)
    assert {e["status"] for e in missed} >= {"model_loaded", "training", "completed"}  # sent while down

    service = start_jobs_service(tmp_path, port, "service-2.log")
    try:
        env = jobs_env() | {"WEBHOOK_URL": f"{base}/api/training/webhook", "TRAINING_WEBHOOK_SECRET": SECRET}
        replay = subprocess.run(
            [sys.executable, "-m", "jobs", "--runs-dir", str(tmp_path / "runs"), "webhooks-replay", run_id],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert replay.returncode == 0 and "0 still pending" in replay.stderr, replay.stderr

        # Every spooled event was applied exactly once, in the run's own sequence.
        spooled = [json.loads(line) for line in (run_dir / webhooks.SPOOL).read_text().splitlines()]
        assert [e["sequence"] for e in spooled] == list(range(1, len(spooled) + 1))
        with registry.session(url) as s:
            applied = s.scalars(
                select(registry.WebhookEvent.event_id).where(registry.WebhookEvent.job_id == run_id)
            ).all()
            count = s.scalar(select(func.count()).select_from(registry.WebhookEvent))
        assert sorted(applied) == sorted(e["event_id"] for e in spooled) and count == len(spooled)

        detail = httpx.get(f"{base}/api/training/jobs/{run_id}", headers=auth).json()
        assert detail["status"] == "completed" and detail["step"] == detail["total_steps"] == 3
        logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        train_steps = [p["step"] for p in logged if "loss" in p]
        eval_steps = [p["step"] for p in logged if "eval_loss" in p]
        history = detail["metrics_history"]
        assert [p["step"] for p in history if p["loss"] is not None] == train_steps

        # The dashboard, in a real browser: the run's row and its loss curve.
        page = f"{base}/#token={TOKEN}"
        dumped = headless(browser, tmp_path / "profile-dom", "--dump-dom", page)
        assert dumped.returncode == 0, dumped.stderr[-2000:]
        dom = Elements()
        dom.feed(dumped.stdout)
        rows = {a["data-job-id"]: a for a in dom.find("tr") if "data-job-id" in a}
        assert rows[run_id]["data-status"] == "completed"
        (chart,) = dom.find("div", id="loss-chart")
        assert chart["data-job-id"] == run_id
        assert int(chart["data-train-points"]) == len(train_steps) >= 3
        assert int(chart["data-eval-points"]) == len(eval_steps)
        shot = tmp_path / "dashboard-run.png"
        taken = headless(
            browser, tmp_path / "profile-shot", "--window-size=1280,900", f"--screenshot={shot}", page
        )
        assert taken.returncode == 0 and shot.stat().st_size > 20_000, taken.stderr[-2000:]
        if keep := os.environ.get("DASHBOARD_SCREENSHOT"):
            Path(keep).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, Path(keep).with_name(Path(keep).stem + "-run.png"))
    finally:
        stop_process(service)

    # Neither secret reached the run's files, its logs, the service's logs or the registry.
    texts = [p.read_bytes().decode("utf-8", "replace") for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    texts += [(tmp_path / name).read_text() for name in ("service-1.log", "service-2.log")]
    assert not [t for t in texts if TOKEN in t or SECRET in t]
