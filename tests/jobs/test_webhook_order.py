"""Never backwards: the customer's handler applies whatever arrives last, so no event of a job reaches it
after a newer one (a higher `sequence`) or after a terminal one. What that refuses is recorded in
events-dropped.jsonl, not sent, and no longer pending. Real HTTP to their receiver (tests/customer_app.py)."""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
import time

import httpx
import pytest
from conftest import ROOT, no_loss

from jobs import webhooks
from tests.customer_app import CustomerApp

TRAIN = {"loss": 2.5, "learning_rate": 2e-4, "grad_norm": 0.9, "epoch": 0.3}


class Row:
    """The registry row's columns that the sender reads (jobs/payload.py, row_fields)."""

    def __init__(self, job_id: str, retry_count: int = 0):
        self.id, self.retry_count = job_id, retry_count
        self.pod_id = self.actual_cost = self.gpu_hours = self.epoch = self.estimated_cost = None
        self.started_at = None


@pytest.fixture
def hears(monkeypatch, customer_app):
    """This process sends to the customer's app, with a fresh sender."""
    for key, value in customer_app.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(webhooks, "_sender", None)
    yield customer_app
    if webhooks._sender is not None:
        atexit.unregister(webhooks._sender.flush)


def sender(app) -> webhooks.Sender:
    """A Sender of its own (its own thread and client), as another process's would be."""
    return webhooks.Sender(app.url, app.secret, max_time=5)


def delivered(run_dir) -> list[int]:
    """The sequences marked delivered in the run folder."""
    ids = webhooks.delivered_ids(run_dir)
    return sorted(
        e["sequence"]
        for e in map(json.loads, webhooks.lines(run_dir / webhooks.SPOOL))
        if e["event_id"] in ids
    )


def arrived(app, job_id: str) -> list[int]:
    """The sequences their route accepted, in the order it applied them."""
    with app.lock:
        return [
            e["payload"]["sequence"] for e in app.log if e["payload"] and e["payload"]["job_id"] == job_id
        ]


def test_a_replay_after_completed_drops_the_older_events_and_says_so(tmp_path, hears, capsys):
    app = hears
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    job_id = app.new_job()
    for step in (1, 2, 3, 4):
        webhooks.spool(run_dir, job_id, "training", step=step, total_steps=4, metrics=TRAIN)
    done = webhooks.spool(run_dir, job_id, "completed", step=4, total_steps=4, lora_artifact_path="a/b")
    # The completed goes first, as a process without the ordering check (before this change) sent it: the
    # state is read back from events-delivered.txt joined with the spool, as in an old run folder.
    with httpx.Client() as client:
        webhooks.post(client, app.url, app.secret, done)
    webhooks.mark_delivered(run_dir, done["event_id"])

    assert webhooks.replay(run_dir) == (0, 0)
    assert "4 stale event(s) dropped" in capsys.readouterr().err
    records = webhooks.dropped(run_dir)
    assert [d["sequence"] for d in records] == [1, 2, 3, 4]
    assert all(d["status"] == "training" and "completed" in d["why"] and d["when"] for d in records)
    assert webhooks.pending(run_dir) == []
    t = app.tally(job_id)
    no_loss(t)
    assert t["statuses"] == ["completed"] and t["row"]["status"] == "completed"
    assert t["row"]["lora_artifact_path"] == "a/b"

    # Dropped is for good: a second replay and the run's next start find nothing to send.
    assert webhooks.replay(run_dir) == (0, 0) and "dropped" not in capsys.readouterr().err
    assert webhooks.resend_pending(run_dir) == 0
    assert len(webhooks.dropped(run_dir)) == 4 and app.tally(job_id)["events"] == 1


class Flaky(CustomerApp):
    """Their receiver, slowed down, answering 503 to the first try of every third event: its sender backs
    off (letting go of the delivery lock) while another delivers a newer one."""

    def __init__(self, *args):
        super().__init__(*args)
        self.tried: set[int] = set()

    def receive(self, body_text: str, signature: str | None) -> int:
        sequence = json.loads(body_text)["sequence"]
        with self.lock:
            first = sequence not in self.tried
            self.tried.add(sequence)
        if first and sequence % 3 == 0:
            return 503
        time.sleep(0.005)
        return super().receive(body_text, signature)


CHILD = """
import random, sys, time
from jobs import webhooks
run_dir, job_id = sys.argv[1:3]
for step in range(1, 16):
    webhooks.emit(run_dir, job_id, "training", step=step, metrics={"loss": 1.0 / step})
    time.sleep(random.random() * 0.01)
webhooks.sender().flush(60)
"""


def check_order(app, run_dir, job_id: str, count: int) -> None:
    """Their route applied strictly increasing sequences; every event is delivered or dropped, not both."""
    applied = arrived(app, job_id)
    assert applied == sorted(set(applied)), applied
    sent, stale = delivered(run_dir), [d["sequence"] for d in webhooks.dropped(run_dir)]
    assert sent == applied
    assert sorted(sent + stale) == list(range(1, count + 1)), (sent, stale)
    assert webhooks.pending(run_dir) == []


def test_two_processes_delivering_from_one_spool_never_go_backwards(tmp_path, monkeypatch):
    with Flaky(tmp_path, "whsec-order") as app:
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        job_id = app.new_job()
        env = {**os.environ, **app.env()}
        children = [
            subprocess.Popen(
                [sys.executable, "-c", CHILD, str(run_dir), job_id],
                cwd=ROOT,
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        for child in children:
            _, err = child.communicate(timeout=120)
            assert child.returncode == 0, err
        check_order(app, run_dir, job_id, 30)
        assert len(arrived(app, job_id)) >= 10  # both delivered: the check is not passed by sending nothing


def test_two_senders_and_a_replay_in_one_process_never_go_backwards(tmp_path, monkeypatch):
    """Threads of one process exclude each other too (a lock per open file), and share what they know."""
    with Flaky(tmp_path, "whsec-order") as app:
        for key, value in app.env().items():
            monkeypatch.setenv(key, value)
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        job_id = app.new_job()
        first, second = sender(app), sender(app)
        events = [webhooks.spool(run_dir, job_id, "training", step=n, metrics=TRAIN) for n in range(1, 31)]
        for event in events:
            (first if event["sequence"] % 2 else second).submit(run_dir, event)
        replaying = threading.Thread(target=webhooks.replay, args=(run_dir, 5))
        replaying.start()
        first.flush(60)
        second.flush(60)
        replaying.join(60)
        webhooks.replay(run_dir, 5)  # what the sender that gave up left (none, unless a 503 outlasted it)
        check_order(app, run_dir, job_id, 30)
        assert arrived(app, job_id)[-1] == 30  # the newest always goes


def test_a_resumed_attempt_follows_its_failed_but_the_failed_attempts_late_events_do_not(tmp_path, hears):
    app = hears
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    job_id = app.new_job()
    first, resumed = Row(job_id, 0), Row(job_id, 1)
    spool = webhooks.spool
    spool(run_dir, job_id, "training", first, step=1, total_steps=4, metrics=TRAIN)  # 1
    failed = spool(run_dir, job_id, "interrupted", first, step=1, error_message="stopped: resume it")  # 2
    spool(
        run_dir, job_id, "training", first, step=2, total_steps=4, metrics=TRAIN
    )  # 3, the trainer's late step
    spool(run_dir, job_id, "preprocessing", resumed, step=1, error_message=None)  # 4
    spool(run_dir, job_id, "training", resumed, step=2, total_steps=4, metrics=TRAIN)  # 5
    spool(run_dir, job_id, "completed", resumed, step=4, total_steps=4, lora_artifact_path="a/b")  # 6
    assert failed["status"] == "failed" and "retry_count" in failed

    out = sender(app)  # the launcher's failed goes first; the trainer's steps 1 and 3 are left behind
    out.submit(run_dir, failed)
    out.flush(20)
    assert webhooks.replay(run_dir) == (3, 0)
    why = {d["sequence"]: d["why"] for d in webhooks.dropped(run_dir)}
    assert sorted(why) == [1, 3]
    assert "older than event 2" in why[1] and "attempt 0 failed" in why[3]
    t = app.tally(job_id)
    no_loss(t)
    assert arrived(app, job_id) == [2, 4, 5, 6]
    assert t["statuses"] == ["failed", "preprocessing", "training", "completed"]
    assert t["row"]["status"] == "completed" and t["row"]["error_message"] is None


def test_nothing_follows_completed_not_even_a_later_numbered_event(tmp_path, hears, capsys):
    app = hears
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    job_id = app.new_job()
    webhooks.emit(run_dir, job_id, "training", step=1, total_steps=2, metrics=TRAIN)
    webhooks.emit(run_dir, job_id, "completed", step=2, total_steps=2, lora_artifact_path="a/b")
    webhooks._sender.flush(20)
    # A late metrics event, numbered after the completed (another process logged it after).
    late = webhooks.emit(run_dir, job_id, "training", step=2, total_steps=2, metrics=TRAIN)
    webhooks._sender.flush(20)
    assert late["sequence"] == 3
    # Said once, by the second flush (the first had nothing to say: all sent).
    assert capsys.readouterr().err.count("webhook: 2 sent, 1 dropped as stale") == 1
    assert [(d["sequence"], d["status"]) for d in webhooks.dropped(run_dir)] == [(3, "training")]
    assert arrived(app, job_id) == [1, 2] and app.tally(job_id)["row"]["status"] == "completed"
    assert webhooks.pending(run_dir) == [] and webhooks.replay(run_dir) == (0, 0)


def test_jobs_in_one_folder_are_ordered_each_on_its_own(tmp_path, hears):
    """Ordering is per job: a second job spooled in the same folder is not held back by the first's end."""
    app = hears
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    one, two = app.new_job(), app.new_job()
    webhooks.emit(run_dir, one, "completed", lora_artifact_path="a/b")
    webhooks.emit(run_dir, two, "training", step=1, metrics=TRAIN)
    webhooks._sender.flush(20)
    assert webhooks.dropped(run_dir) == [] and webhooks.pending(run_dir) == []
    assert app.tally(two)["row"]["status"] == "training"


def test_an_end_goes_even_behind_a_later_step_and_a_relayed_event_is_ordered_with_the_rest(tmp_path, hears):
    """A cancel spooled by one process while the trainer, in another, still logs a step: the step (higher
    sequence) may be delivered first; the end is delivered after it all the same, then nothing. And an event
    another sender signed (a pod's, passed on by the service: webhooks.relay) joins the same order."""
    app = hears
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    job_id = app.new_job()
    cancelled = webhooks.spool(run_dir, job_id, "cancelled", error_message="cancelled on request")
    step = webhooks.spool(run_dir, job_id, "training", step=1, total_steps=2, metrics=TRAIN)
    with httpx.Client() as client:
        assert webhooks.attempt(client, app.url, app.secret, run_dir, step) == "sent"
        assert webhooks.attempt(client, app.url, app.secret, run_dir, cancelled) == "sent"
    row = app.tally(job_id)["row"]
    assert row["status"] == "cancelled" and row["error_message"] == "cancelled on request"
    # A pod's late step, relayed after the end: kept in the spool, numbered above, never delivered.
    pod_event = {**step, "event_id": "f" * 32, "sequence": 9, "timestamp": "2026-12-07T00:00:00.000Z"}
    assert webhooks.relay(run_dir, pod_event) and not webhooks.relay(run_dir, pod_event)  # once
    webhooks._sender.flush(20)
    assert [d["sequence"] for d in webhooks.dropped(run_dir)] == [9]
    assert webhooks.spool(run_dir, job_id, "training", step=2)["sequence"] == 10  # numbered above the relayed
    assert app.tally(job_id)["row"]["status"] == "cancelled" and arrived(app, job_id) == [2, 1]


def test_a_later_attempt_numbers_on_its_own_and_the_earlier_ones_late_events_are_dropped(tmp_path, hears):
    """A relaunched pod in a fresh folder numbers its events from 1 again: (attempt, sequence) orders them
    after everything of the earlier attempt; that attempt's late step is dropped."""
    app = hears
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    job_id = app.new_job()
    first = {"job_id": job_id, "status": "training", "step": 7, "total_steps": 9, "retry_count": 0}
    second = [{**first, "step": step, "retry_count": 1} for step in (1, 2)]
    with httpx.Client() as client:
        sent = [
            webhooks.attempt(
                client, app.url, app.secret, run_dir, {**event, "event_id": f"{n:032x}", "sequence": seq}
            )
            for n, (event, seq) in enumerate([(first, 12), (second[0], 1), (second[1], 2), (first, 13)])
        ]
    assert sent == ["sent", "sent", "sent", "dropped"]
    assert [d["sequence"] for d in webhooks.dropped(run_dir)] == [13]
    assert app.tally(job_id)["row"]["current_step"] == 2
