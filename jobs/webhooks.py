"""Signed status events to WEBHOOK_URL: the sender inside every run, and the replay of what it missed.

An event is a compact JSON body in the customer's names (jobs/payload.py builds it; docs/webhook-contract.md
shows one of each kind):
  {"event_id": "<32 hex>", "sequence": 7, "job_id": "<their job id>", "status": "training",
   "brightrun_status": "training", "step": 40, "total_steps": 120,
   "metrics": {"loss": 1.93, "learning_rate": 0.0002, "grad_norm": 0.8, "epoch": 0.5},
   "occurred_at": "2026-12-01T10:30:00.120Z", "timestamp": "2026-12-01T10:30:02.480Z", ...}
`occurred_at` is when it happened, `timestamp` when this delivery attempt was signed (the receiver's
freshness window checks it). It is signed as the customer's receiver checks it: header
X-Webhook-Signature = hex HMAC-SHA256 of the raw body under TRAINING_WEBHOOK_SECRET. `job_id` is the
run id, or BRIGHTRUN_JOB_ID when set (a pod's retry may train under another folder name: the customer
knows one id).

Nothing is lost: each event is first appended to runs/<id>/events.jsonl (the spool; a file lock also
hands out `sequence`, since the launcher and the training process both send), then delivered by a
background thread from a bounded queue, retried with exponential backoff and full jitter (the
`backoff` library). Delivered ids go to events-delivered.txt. What is still undelivered when a process
ends (receiver down, queue full, retries spent) stays in the spool for `just webhooks-replay RUN` or
the run's next start. Training never waits on the network: emit() writes one line and enqueues.

Never backwards (the rule: jobs/webhook_order.py): their handler applies whatever arrives last, so for one
job nothing is delivered after a newer event (by attempt, then sequence) or after its end. What the rule
refuses is not sent but recorded in events-dropped.jsonl and no longer pending. The launcher, the trainer,
a replay and the jobs service deliver from one spool, so each attempt (check, POST, mark) holds
events-delivery.lock: a lock of its own, as emit() must never wait behind a POST on events.lock.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import hmac
import json
import os
import queue
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from jobs import payload, webhook_order
from jobs.webhook_order import (  # noqa: F401 -- the spool's files and readers, used under these names too
    DELIVERED,
    DROPPED,
    NOTHING_YET,
    SPOOL,
    delivered_ids,
    delivered_state,
    dropped,
    lines,
    record_drop,
    refusal,
)

SEQUENCE = "events.seq"
LOCK = "events.lock"
DELIVERY_LOCK = "events-delivery.lock"
SIGNATURE_HEADER = "X-Webhook-Signature"
QUEUE_SIZE = 1000
RETRY_SECONDS = 60.0  # per event in the background; then it waits in the spool
FLUSH_SECONDS = 5.0  # what a finishing process gives its queue before leaving the rest to replay


class ConfigMissing(Exception):
    pass


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


RUN_KEY_LABEL = "brightrun-run-key:"


def run_key(secret: str, job_id: str) -> str:
    """One job's signing key, derived from the master secret: a run holding it can sign its own job's
    events and no other's, and never holds the master. The customer's receiver needs one line to check
    it (README, "Per-run signing keys"): key = hex HMAC-SHA256(secret, "brightrun-run-key:" + job_id)."""
    return hmac.new(
        secret.encode("utf-8"), (RUN_KEY_LABEL + job_id).encode("utf-8"), hashlib.sha256
    ).hexdigest()


def run_keys_required() -> bool:
    """WEBHOOK_RUN_KEYS=required: runs get per-run keys, and our receiver accepts only those."""
    return os.environ.get("WEBHOOK_RUN_KEYS", "").strip().lower() == "required"


def encode(event: dict) -> bytes:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def settings() -> tuple[str, str] | None:
    """(url, secret) when sending is on; None when WEBHOOK_URL is unset."""
    url = os.environ.get("WEBHOOK_URL")
    if not url:
        return None
    secret = os.environ.get("TRAINING_WEBHOOK_SECRET")
    if not secret:
        raise ConfigMissing("WEBHOOK_URL is set but TRAINING_WEBHOOK_SECRET is not: events would go unsigned")
    return url, secret


@contextmanager
def locked(run_dir: Path, name: str = LOCK):
    with (Path(run_dir) / name).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def spool(run_dir: Path, job_id: str, status: str, row=None, after: int = 0, **fields) -> dict:
    """Number the event and append it to the run's spool; returns it."""
    run_dir = Path(run_dir)
    body = payload.build(os.environ.get("BRIGHTRUN_JOB_ID") or job_id, status, fields, row)
    with locked(run_dir):
        seq_file = run_dir / SEQUENCE
        last = int(seq_file.read_text() or 0) if seq_file.is_file() else 0
        # `after`: another sender's last number for this job (the pod's, for the launcher), so that
        # the order by sequence holds across both.
        sequence = max(last, after) + 1
        seq_file.write_text(str(sequence))
        event = {"event_id": uuid.uuid4().hex, "sequence": sequence, **body}
        with (run_dir / SPOOL).open("a", encoding="utf-8") as out:
            out.write(json.dumps(event, ensure_ascii=False) + "\n")
    return event


def mark_delivered(run_dir: Path, event_id: str) -> None:
    with locked(run_dir), (run_dir / DELIVERED).open("a") as out:
        out.write(event_id + "\n")


def pending(run_dir: Path) -> list[dict]:
    """Spooled events neither delivered nor dropped, oldest first."""
    run_dir = Path(run_dir)
    done = delivered_ids(run_dir) | {d["event_id"] for d in dropped(run_dir)}
    events = [json.loads(line) for line in lines(run_dir / SPOOL)]
    return sorted((e for e in events if e["event_id"] not in done), key=lambda e: e["sequence"])


class Retryable(Exception):
    """A 5xx, 408 or 429: the receiver may take it later."""


class Rejected(Exception):
    """Another 4xx: sending the same bytes again cannot help (wrong secret, unknown job...)."""


def post(client, url: str, secret: str, event: dict) -> None:
    """One delivery attempt. 2xx, or 409 (the receiver has this event_id already), is delivered."""
    import httpx

    # `timestamp` is when this attempt is sent, so a replay hours later passes the receiver's 5-minute
    # window; the event_id stays the same, so a captured body replayed by someone else is refused.
    body = encode({**event, "timestamp": payload.iso()})
    try:
        response = client.post(
            url,
            content=body,
            headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, body)},
        )
    except httpx.TransportError as exc:
        raise Retryable(f"{type(exc).__name__}: {exc}") from None
    if response.is_success or response.status_code == 409:
        return
    if response.status_code >= 500 or response.status_code in (408, 429):
        raise Retryable(f"HTTP {response.status_code}")
    raise Rejected(f"HTTP {response.status_code}: {response.text[:200]}")


def retrying(send, max_time: float):
    import backoff

    return backoff.on_exception(
        backoff.expo, Retryable, max_time=max_time, jitter=backoff.full_jitter, factor=0.5, max_value=10
    )(send)


# -- never backwards: the rule and what was delivered are jobs/webhook_order.py's ---------------------------


def attempt(client, url: str, secret: str, run_dir: Path, event: dict) -> str:
    """One delivery attempt, atomic across processes: decide, POST, mark. Returns "sent", "dropped" (refused,
    recorded) or "done" (another sender delivered or dropped it already). Raises what post() raises."""
    with locked(run_dir, DELIVERY_LOCK):
        jobs = delivered_state(run_dir)
        state = jobs.get(event.get("job_id"), NOTHING_YET)
        if event["sequence"] <= state["sequence"] and event["event_id"] in delivered_ids(run_dir):
            return "done"
        why = refusal(state, event)
        if why is not None:
            return "dropped" if record_drop(run_dir, event, why) else "done"
        post(client, url, secret, event)
        mark_delivered(run_dir, event["event_id"])
        webhook_order.delivered(run_dir, jobs, event)
        return "sent"


def deliver_in_order(client, url: str, secret: str, run_dir: Path | str, event: dict, max_time: float) -> str:
    """attempt() with retries; the delivery lock is let go while backing off, so another sender's newer
    event may go first (and this one is then dropped)."""
    return retrying(attempt, max_time)(client, url, secret, Path(run_dir), event)


class Sender:
    """The background delivery thread of one process."""

    def __init__(self, url: str, secret: str, max_time: float = RETRY_SECONDS):
        import httpx

        self.url, self.secret, self.max_time = url, secret, max_time
        self.client = httpx.Client(timeout=10.0)
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self.counts = {"sent": 0, "dropped": 0, "done": 0, "failed": 0, "queue_full": 0}
        self.warned = False
        self.thread = threading.Thread(target=self.work, name="webhooks", daemon=True)
        self.thread.start()

    def submit(self, run_dir: Path, event: dict) -> None:
        try:
            self.queue.put_nowait((Path(run_dir), event))
        except queue.Full:
            self.counts["queue_full"] += 1  # it stays in the spool: replay delivers it

    def work(self) -> None:
        while True:
            run_dir, event = self.queue.get()
            try:
                outcome = deliver_in_order(self.client, self.url, self.secret, run_dir, event, self.max_time)
                self.counts[outcome] += 1
            except (Retryable, Rejected) as exc:
                self.counts["failed"] += 1
                if not self.warned:  # once per process: the rest are counted at the end
                    self.warned = True
                    print(
                        f"webhook: {event['status']} event not delivered ({exc}); kept in {run_dir / SPOOL}",
                        file=sys.stderr,
                    )
            except Exception as exc:  # noqa: BLE001 -- a sender bug must never end training
                self.counts["failed"] += 1
                print(f"webhook: sender error {type(exc).__name__}: {exc}", file=sys.stderr)
            finally:
                self.queue.task_done()

    def flush(self, seconds: float = FLUSH_SECONDS) -> None:
        deadline = time.monotonic() + seconds
        while self.queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        left = self.queue.unfinished_tasks
        missed = self.counts["failed"] + left + self.counts["queue_full"]
        said, stale = [f"{self.counts['sent']} sent"], self.counts["dropped"]
        if stale:
            said.append(f"{stale} dropped as stale (a newer or terminal event went first; {DROPPED})")
        if missed:
            said.append(f"{missed} undelivered (kept in {SPOOL}; `just webhooks-replay RUN` sends them)")
        if len(said) > 1:
            print("webhook: " + ", ".join(said), file=sys.stderr)


_sender: Sender | None = None  # to WEBHOOK_URL
_sender_lock = threading.Lock()
# Run folders whose events go somewhere of their own (the jobs service: each customer job's webhook URL and
# secret, jobs/service/training_api.py), not to this process's WEBHOOK_URL; one Sender per destination.
_routes: dict[str, tuple[str, str]] = {}
_routed: dict[tuple[str, str], Sender] = {}


def route(run_dir: Path | str, url: str, secret: str) -> None:
    _routes[str(Path(run_dir).resolve())] = (url, secret)


def unroute(run_dir: Path | str) -> None:
    _routes.pop(str(Path(run_dir).resolve()), None)


def routed(run_dir: Path | str | None) -> tuple[str, str] | None:
    return _routes.get(str(Path(run_dir).resolve())) if run_dir is not None else None


def sender(run_dir: Path | str | None = None) -> Sender | None:
    """The sender for a run's events: its route's, else WEBHOOK_URL's; None when sending is off."""
    global _sender
    where = routed(run_dir)
    with _sender_lock:
        if where is not None:
            if where not in _routed:
                _routed[where] = Sender(*where)
                atexit.register(_routed[where].flush)
            return _routed[where]
        config = settings()
        if config is None:
            return None
        if _sender is None:
            _sender = Sender(*config)
            atexit.register(_sender.flush)
        return _sender


def emit(run_dir: Path | str, job_id: str, status: str, row=None, after: int = 0, **fields) -> dict | None:
    """Spool and send one status event when WEBHOOK_URL is set; a no-op otherwise. `row`, the job's
    registry row, adds what their training_jobs row can hold (pod, cost, retries...). Never raises
    for the network: what cannot be sent now is replayed later."""
    out = sender(run_dir)
    if out is None:
        return None
    event = spool(Path(run_dir), job_id, status, row, after, **fields)
    out.submit(Path(run_dir), event)
    return event


def relay(run_dir: Path | str, event: dict) -> bool:
    """An event another sender signed for us (a pod of a jobs-service job, to the service's receiver), passed
    on from here: appended to this run's spool as it came (its event_id and sequence; later events of this
    folder are numbered above it) and sent to the run's destination, under the same rule (never backwards).
    False when the spool has it already."""
    run_dir = Path(run_dir)
    out = sender(run_dir)
    if out is None:
        return False
    event = {k: v for k, v in event.items() if k != "timestamp"}  # each delivery signs its own time
    with locked(run_dir):
        spooled = run_dir / SPOOL
        if spooled.is_file() and event["event_id"] in spooled.read_text("utf-8"):
            return False
        seq_file = run_dir / SEQUENCE
        last = int(seq_file.read_text() or 0) if seq_file.is_file() else 0
        seq_file.write_text(str(max(last, int(event["sequence"]))))
        with spooled.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(event, ensure_ascii=False) + "\n")
    out.submit(run_dir, event)
    return True


def resend_pending(run_dir: Path | str) -> int:
    """At a run's next start: queue what an earlier process left undelivered (oldest first)."""
    out = sender(run_dir)
    if out is None:
        return 0
    events = pending(Path(run_dir))
    for event in events:
        out.submit(Path(run_dir), event)
    return len(events)


def replay(run_dir: Path | str, max_time: float = 30.0, to: tuple[str, str] | None = None) -> tuple[int, int]:
    """Deliver the run's undelivered events in order, now, dropping the stale ones (said once, on stderr);
    returns (delivered, still pending)."""
    import httpx

    config = to or routed(run_dir) or settings()
    if config is None:
        raise ConfigMissing("WEBHOOK_URL is not set: nowhere to replay to")
    run_dir = Path(run_dir)
    events = pending(run_dir)
    counts = {"sent": 0, "dropped": 0, "done": 0}
    with httpx.Client(timeout=10.0) as client:
        for event in events:
            try:
                counts[deliver_in_order(client, *config, run_dir, event, max_time)] += 1
            except (Retryable, Rejected) as exc:
                print(
                    f"webhook: event {event['sequence']} ({event['status']}) not delivered: {exc}",
                    file=sys.stderr,
                )
                break  # keep the order: later events wait for this one
    if counts["dropped"]:
        print(
            f"webhook: {counts['dropped']} stale event(s) dropped, not sent (a newer or terminal event was "
            f"delivered first): recorded in {run_dir / DROPPED}",
            file=sys.stderr,
        )
    return counts["sent"], len(events) - sum(counts.values())
