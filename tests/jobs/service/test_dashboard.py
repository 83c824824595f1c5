"""The dashboard in a real browser: the real service (`python -m jobs service`, SQLite registry) fed real
signed webhook events over HTTP, then Debian's headless Chromium loads `/#token=...` and the test reads
the DOM it rendered (job rows, status, the number of points the loss chart drew) and keeps a screenshot.

Chromium comes from `bash .ci/chromium.sh`. Without it the browser test is skipped, unless CI is set:
then it fails, so CI cannot pass by not looking. DASHBOARD_SCREENSHOT=path keeps a copy of the screenshot.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest
from browser import Elements, headless
from conftest import ROOT, free_port, start_service, stop_process

from jobs import registry, webhooks

STATIC = ROOT / "jobs" / "service" / "static"
TOKEN = "dash-token-7c1e"
SECRET = "whsec-dash-2b9d"
HTML_ERROR = '<img src=x onerror="document.title=1"> CUDA out of memory & more'


@pytest.fixture
def dashboard(tmp_path):
    """`python -m jobs service` on a free port with its SQLite registry in tmp_path; yields the base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "WEBHOOK_URL")}
    env |= {"JOBS_API_TOKEN": TOKEN, "TRAINING_WEBHOOK_SECRET": SECRET}
    args = ["-m", "jobs", "--runs-dir", str(tmp_path / "runs"), "service", "--port", str(port)]
    proc = start_service(args, env, tmp_path / "service.log", port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


def send(client: httpx.Client, base: str, event: dict, timestamp: int | None = None) -> None:
    """One delivery as webhooks.post makes it (stamped when sent, signed), but any non-2xx fails the test."""
    body = webhooks.encode({**event, "timestamp": timestamp or int(time.time())})
    response = client.post(
        base + "/api/training/webhook",
        content=body,
        headers={"Content-Type": "application/json", webhooks.SIGNATURE_HEADER: webhooks.sign(SECRET, body)},
    )
    assert response.is_success, (event["status"], response.status_code, response.text)


def feed_job(client, base, run_dir: Path, job_id: str, final: str | None, error=None, age: int = 0) -> None:
    """What a run sends: queued (with the job), 10 training steps of falling loss, one eval point, the end
    (none: still training).
    `age` seconds back: the service dates a job by its queued event, to the second."""
    run_dir.mkdir(parents=True)
    job = {
        "preset": "balanced",
        "model": "smollm2-cpu",
        "hardware": "cpu",
        "estimated_cost": 0.42,
        "hyperparameters": {"learning_rate": 5e-4, "lora_r": 16},
    }
    when = int(time.time()) - age
    send(client, base, webhooks.spool(run_dir, job_id, "queued", job=job, occurred_at=when), timestamp=when)
    send(client, base, webhooks.spool(run_dir, job_id, "training", step=0, total_steps=10))
    for step in range(1, 11):
        metrics = {
            "loss": round(2.8 - 0.12 * step, 4),
            "learning_rate": 5e-4,
            "grad_norm": 1.1,
            "epoch": step / 10,
        }
        send(
            client,
            base,
            webhooks.spool(run_dir, job_id, "training", step=step, total_steps=10, metrics=metrics),
        )
    eval_metrics = {"eval_loss": 1.9876, "epoch": 1.0}
    send(
        client,
        base,
        webhooks.spool(run_dir, job_id, "training", step=10, total_steps=10, metrics=eval_metrics),
    )
    if final:
        end = {"error": error} if error else {"artifact_path": str(run_dir / "output")}
        send(client, base, webhooks.spool(run_dir, job_id, final, step=10, total_steps=10, **end))


def test_dashboard_shows_jobs_and_loss_curves_in_headless_chromium(browser, dashboard, tmp_path):
    with httpx.Client(timeout=10) as client:
        # Oldest first: the newest job (completed) is the one the page shows by default; one still runs.
        feed_job(client, dashboard, tmp_path / "spool" / "dash-live", "dash-live", None, age=120)
        feed_job(
            client, dashboard, tmp_path / "spool" / "dash-failed", "dash-failed", "failed", HTML_ERROR, age=60
        )
        feed_job(client, dashboard, tmp_path / "spool" / "dash-ok", "dash-ok", "completed")
        listed = client.get(dashboard + "/api/training/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
        assert listed.status_code == 200, listed.text
        assert [j["id"] for j in listed.json()["jobs"]] == ["dash-ok", "dash-failed", "dash-live"]
    # A pod run's GPU and price, as `jobs launch` records them in the same registry.
    url = f"sqlite:///{tmp_path / 'runs' / 'registry.db'}"
    registry.update_job("dash-ok", url, gpu_type="NVIDIA H100 PCIe", gpu_count=1, price_per_hour=2.39)
    # And its evaluation's verdict, as `just eval RUN` records it (evals/__main__.py).
    gate = {"gate": "judge_win_rate", "status": "fail", "required": True, "detail": "interval [0.41, 0.66]"}
    registry.update_job("dash-ok", url, verdict="fail", evaluation={"verdict": "fail", "gates": [gate]})

    page = f"{dashboard}/#token={TOKEN}"
    dumped = headless(browser, tmp_path / "profile-dom", "--dump-dom", page)
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = Elements()
    dom.feed(dumped.stdout)

    assert dom.find("body", **{"data-state": "ready"}), dumped.stdout[:3000]
    rows = {a["data-job-id"]: a for a in dom.find("tr") if "data-job-id" in a}
    assert list(rows) == ["dash-ok", "dash-failed", "dash-live"]
    assert rows["dash-ok"]["data-status"] == "completed"
    assert rows["dash-failed"]["data-status"] == "failed"
    assert rows["dash-live"]["data-status"] == "training"
    assert dom.find("span", id="live", **{"data-live": "true"}), "a training job: the page should refresh"
    assert "selected" in rows["dash-ok"]["class"]
    assert "1 × NVIDIA H100 PCIe · $2.39/h" in dumped.stdout
    verdicts = {a["data-verdict"] for a in dom.find("td") if "data-verdict" in a}
    assert verdicts == {"fail", ""}  # the evaluated job's verdict; a dash for the two never evaluated
    assert "fail · interval [0.41, 0.66]" in dumped.stdout  # its gates in the detail

    # The newest job's chart: 10 train-loss points and 1 eval point, drawn by uPlot on a canvas.
    (chart,) = dom.find("div", id="loss-chart")
    assert chart["data-job-id"] == "dash-ok"
    assert (chart["data-train-points"], chart["data-eval-points"], chart["data-points"]) == ("10", "1", "11")
    assert dom.find("canvas"), "uPlot drew no canvas"
    assert any("uplot" in a.get("class", "").split() for a in dom.find("div")), "no uPlot chart"

    # The error message is text, not markup: no <img> got into the page, and it shows escaped.
    assert not dom.find("img")
    assert "&lt;img src=x onerror=" in dumped.stdout
    assert re.search(r">\s*failed\s*<", dumped.stdout)

    shot = tmp_path / "runs" / "dashboard.png"
    taken = headless(
        browser, tmp_path / "profile-shot", "--window-size=1280,900", f"--screenshot={shot}", page
    )
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if keep := os.environ.get("DASHBOARD_SCREENSHOT"):
        Path(keep).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, keep)


def test_dashboard_asks_for_the_token_when_it_has_none_or_a_wrong_one(browser, dashboard, tmp_path):
    for name, page in (("none", f"{dashboard}/"), ("wrong", f"{dashboard}/#token=not-the-token")):
        dumped = headless(browser, tmp_path / f"profile-{name}", "--dump-dom", page)
        assert dumped.returncode == 0, dumped.stderr[-2000:]
        dom = Elements()
        dom.feed(dumped.stdout)
        assert dom.find("body", **{"data-state": "signed-out"}), name
        assert dom.find("form", id="token-form")
        assert not [a for a in dom.find("tr") if "data-job-id" in a]
    assert "refused the token (HTTP 401)" in dumped.stdout


def test_dashboard_files_load_nothing_from_outside_and_insert_no_markup():
    """No CDN, no web fonts: every script and stylesheet is the dashboard's own; data goes in as text."""
    page = (STATIC / "index.html").read_text("utf-8")
    refs = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert refs and all(ref.startswith("/static/") for ref in refs), refs
    for ref in refs:
        assert (STATIC / ref.removeprefix("/static/")).is_file(), ref
    ours = [STATIC / "dashboard.js", STATIC / "dashboard.css", STATIC / "index.html"]
    for path in ours:
        text = path.read_text("utf-8")
        assert not re.search(r"https?://|@import|url\(", text), path
    script = (STATIC / "dashboard.js").read_text("utf-8")
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", script)
    assert "uPlot 1.6.32" in (STATIC / "vendor" / "uplot" / "README.md").read_text()
