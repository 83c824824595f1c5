"""The webhook sender against the customer's own check (Node), a receiver that is down, and one that hangs."""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, free_port

from jobs import webhooks

RECEIVER = ROOT / "tests" / "receivers" / "customer_receiver.mjs"
SECRET = "whsec-test-5f3c9a"


def start_customer_receiver(accepted: Path, port: int = 0) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        ["node", str(RECEIVER), str(accepted), str(port)],
        env={**os.environ, "TRAINING_WEBHOOK_SECRET": SECRET},
        stdout=subprocess.PIPE,
        text=True,
    )
    return proc, int(proc.stdout.readline())


@pytest.fixture
def sending(monkeypatch):
    """WEBHOOK_URL set for this process, with a fresh sender; returns a function that points it."""

    def point(url: str) -> None:
        monkeypatch.setenv("WEBHOOK_URL", url)
        monkeypatch.setenv("TRAINING_WEBHOOK_SECRET", SECRET)
        monkeypatch.setattr(webhooks, "_sender", None)

    yield point
    if webhooks._sender is not None:  # this test's sender: what it left is the test's business, not exit's
        atexit.unregister(webhooks._sender.flush)


def received(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()] if path.exists() else []


def test_the_customers_node_check_accepts_our_events_and_refuses_a_tampered_body(tmp_path, sending):
    accepted = tmp_path / "accepted.jsonl"
    proc, port = start_customer_receiver(accepted)
    try:
        url = f"http://127.0.0.1:{port}/api/training/webhook"
        sending(url)
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        webhooks.emit(run_dir, "run-1", "queued", job={"preset": "balanced", "model": "smoke"})
        webhooks.emit(run_dir, "run-1", "training", step=3, total_steps=9, metrics={"loss": 1.25})
        # Non-ASCII text: the route hashes request.text(), so the UTF-8 round trip must be exact.
        webhooks.emit(run_dir, "run-1", "failed", error_message="Planificación — “quoted” ✓ failed")
        webhooks._sender.flush(20)
        events = received(accepted)
        assert [e["status"] for e in events] == ["queued", "training", "failed"]
        assert [e["sequence"] for e in events] == [1, 2, 3]
        assert events[2]["error_message"] == "Planificación — “quoted” ✓ failed"
        assert {"job_id", "status", "step", "total_steps", "metrics", "timestamp", "event_id"} <= set(
            events[1]
        )
        assert webhooks.pending(run_dir) == []

        body = webhooks.encode({**events[1], "metrics": {"loss": 1.25}})
        signature = webhooks.sign(SECRET, body)
        headers = {"Content-Type": "application/json", webhooks.SIGNATURE_HEADER: signature}
        assert httpx.post(url, content=body, headers=headers).status_code == 200
        tampered = body.replace(b"1.25", b"0.25")
        assert httpx.post(url, content=tampered, headers=headers).status_code == 401
        wrong_key = {**headers, webhooks.SIGNATURE_HEADER: webhooks.sign("another-secret", body)}
        assert httpx.post(url, content=body, headers=wrong_key).status_code == 401
        assert len(received(accepted)) == 4
    finally:
        proc.terminate()
        proc.wait()


def test_events_spooled_while_the_receiver_is_down_arrive_in_order_after_replay(
    tmp_path, sending, monkeypatch
):
    port = free_port()  # nothing listens here yet
    url = f"http://127.0.0.1:{port}/hook"
    sending(url)
    # This process's sender gives up on each event after 0.5 s. Patching RETRY_SECONDS would not do it: it is
    # Sender's default, read when the class is defined, so the sender kept retrying for 60 s and, on a loaded
    # CI machine, delivered the last events itself once the receiver below came up (replay found 2, not 4).
    monkeypatch.setattr(webhooks, "_sender", webhooks.Sender(url, SECRET, max_time=0.5))
    run_dir = tmp_path / "runs" / "run-2"
    run_dir.mkdir(parents=True)
    webhooks.emit(run_dir, "run-2", "queued")
    # A second process (the training subprocess) numbers its events in the same sequence.
    code = (
        "from jobs import webhooks\n"
        f"for step in (1, 2):\n    webhooks.emit({str(run_dir)!r}, 'run-2', 'training', step=step, metrics={{'loss': 2.0 / step}})\n"
    )
    env = {**os.environ, "WEBHOOK_URL": url, "TRAINING_WEBHOOK_SECRET": SECRET}
    child = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert child.returncode == 0, child.stderr
    assert "undelivered" in child.stderr  # the process says what it left behind
    webhooks.emit(run_dir, "run-2", "completed", artifact_path="x/output")
    webhooks._sender.flush(30)
    assert webhooks._sender.queue.unfinished_tasks == 0  # it has given up: nothing is in flight any more
    left = webhooks.pending(run_dir)
    assert [e["sequence"] for e in left] == [1, 2, 3, 4]

    accepted = tmp_path / "accepted.jsonl"
    proc, _ = start_customer_receiver(accepted, port)
    try:
        replay = subprocess.run(
            [sys.executable, "-m", "jobs", "--runs-dir", str(tmp_path / "runs"), "webhooks-replay", "run-2"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        assert replay.returncode == 0, replay.stderr
        assert "4 event(s) delivered, 0 still pending" in replay.stderr
        events = received(accepted)
        assert [e["sequence"] for e in events] == [1, 2, 3, 4]
        assert [e["status"] for e in events] == ["queued", "training", "training", "completed"]
        assert {e["event_id"] for e in events} == {e["event_id"] for e in left}
        assert webhooks.pending(run_dir) == []
    finally:
        proc.terminate()
        proc.wait()


def test_emit_never_waits_for_a_receiver_that_hangs(tmp_path, sending):
    release = threading.Event()
    seen = []

    class Hanging(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 -- http.server's naming
            seen.append(self.rfile.read(int(self.headers["Content-Length"])))
            release.wait(30)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hanging)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sending(f"http://127.0.0.1:{server.server_address[1]}/hook")
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        for step in range(20):
            webhooks.emit(run_dir, "run-3", "training", step=step, metrics={"loss": 1.0})
        # All 20 are spooled and emit() has returned while the receiver still holds the first request.
        assert len(webhooks.pending(run_dir)) == 20
        assert not release.is_set()
        release.set()
        webhooks._sender.flush(30)
        assert webhooks.pending(run_dir) == [] and len(seen) == 20
    finally:
        release.set()
        server.shutdown()


def test_webhook_url_without_its_secret_is_bad_input(tmp_path):
    env = {
        **os.environ,
        "WEBHOOK_URL": "http://127.0.0.1:9/hook",
        "DATABASE_URL": f"sqlite:///{tmp_path}/r.db",
    }
    env.pop("TRAINING_WEBHOOK_SECRET", None)
    proc = subprocess.run(
        [sys.executable, "-m", "jobs", "--runs-dir", str(tmp_path / "runs"), "train", "balanced", "smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "TRAINING_WEBHOOK_SECRET is not" in proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
