"""Never backwards (jobs/webhooks.py delivers; this decides): for one job, no event is delivered after a
newer one, and a terminal event is the last. The customer's handler applies whatever arrives last, so an
older `training` after `completed` would move their row back (docs/webhook-contract.md, "Order").

What was delivered is read back from the run folder (events-delivered.txt joined with events.jsonl), so
every sender (the launcher, the trainer, a replay, the jobs service relaying a pod's events) decides from
the same files; jobs/webhooks.py holds a delivery lock around each decision and its POST. Refused events
are recorded in events-dropped.jsonl and never pending again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from jobs import payload

SPOOL = "events.jsonl"
DELIVERED = "events-delivered.txt"
DROPPED = "events-dropped.jsonl"
TERMINAL = ("completed", "cancelled")  # their statuses after which nothing is delivered; `failed`: refusal()


def lines(path: Path) -> list[str]:
    """The file's complete lines: one that another process is appending right now (no newline yet) waits."""
    if not path.is_file():
        return []
    return [line for line in path.read_text("utf-8").split("\n")[:-1] if line.strip()]


def delivered_ids(run_dir: Path) -> set[str]:
    return {line.strip() for line in lines(run_dir / DELIVERED)}


def dropped(run_dir: Path | str) -> list[dict]:
    """The events the ordering rule refused, as recorded (event_id, sequence, status, why, when)."""
    return [json.loads(line) for line in lines(Path(run_dir) / DROPPED)]


NOTHING_YET = {"sequence": 0, "closed": None, "failed": -1, "attempt": 0}


def attempt_of(event: dict) -> int:
    return event.get("retry_count") or 0  # no registry row, no retry_count: the first attempt


def fold(jobs: dict, event: dict) -> None:
    """Add one delivered event to its job's state: its newest attempt and, in it, the highest sequence; a
    terminal status; the highest attempt whose `failed` was delivered."""
    state = jobs.setdefault(event.get("job_id"), dict(NOTHING_YET))
    attempt = attempt_of(event)
    if attempt > state["attempt"]:  # a new attempt numbers on its own (a relaunched pod's fresh folder)
        state["attempt"], state["sequence"] = attempt, event["sequence"]
    elif attempt == state["attempt"]:
        state["sequence"] = max(state["sequence"], event["sequence"])
    if event["status"] in TERMINAL:
        state["closed"] = event["status"]
    elif event["status"] == "failed":
        state["failed"] = max(state["failed"], attempt)


def refusal(state: dict, event: dict) -> str | None:
    """Why the customer must not get `event` after what they have had (`state`, its job's); None: send it.
    Order is (attempt, sequence): a later attempt (retry_count) goes after any event of an earlier one."""
    if state["closed"]:
        return f"the job is {state['closed']} (delivered): a terminal event is the last"
    attempt = attempt_of(event)
    if attempt < state["attempt"]:
        return f"from attempt {attempt}, after attempt {state['attempt']}'s events were delivered"
    # An end of the current attempt goes even behind a later-numbered step (the trainer's last step can
    # be delivered after a cancel was spooled by another process): otherwise their row stays `training`.
    ends = event["status"] in (*TERMINAL, "failed")
    if attempt == state["attempt"] and event["sequence"] <= state["sequence"] and not ends:
        return f"older than event {state['sequence']}, already delivered"
    if attempt <= state["failed"]:
        return f"attempt {state['failed']} failed (delivered); this event is from attempt {attempt}"
    return None


# Per run folder: (size of events-delivered.txt, its last id, {job_id: state}). Deriving the state joins
# every delivered id with the spool; a training process delivers thousands of steps, so it is derived
# again only when the file is not what our own appends made it (another process delivered, an old folder).
_seen: dict[str, tuple[int, str, dict]] = {}


def delivered_tail(run_dir: Path) -> tuple[int, str]:
    try:
        with (run_dir / DELIVERED).open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - 100))
            tail = handle.read().decode("ascii", "replace").split()
    except FileNotFoundError:
        return 0, ""
    return size, tail[-1] if tail else ""


def delivered_state(run_dir: Path) -> dict:
    """{job_id: state} of what was delivered from this folder; call it holding the delivery lock."""
    key = str(run_dir.resolve())
    size, last = delivered_tail(run_dir)
    cached = _seen.get(key)
    if cached is None or cached[:2] != (size, last):
        ids = delivered_ids(run_dir)
        jobs: dict = {}
        for line in lines(run_dir / SPOOL):
            event = json.loads(line)
            if event["event_id"] in ids:
                fold(jobs, event)
        cached = _seen[key] = (size, last, jobs)
    return cached[2]


def delivered(run_dir: Path, jobs: dict, event: dict) -> None:
    """`event` was just delivered and its id appended to events-delivered.txt by this process (holding the
    delivery lock, after delivered_state): the cached state follows, the file being what our append made it,
    so it is not read again; the event is folded in."""
    key = str(run_dir.resolve())
    size = _seen[key][0]
    _seen[key] = (size + len(event["event_id"]) + 1, event["event_id"], jobs)
    fold(jobs, event)


def record_drop(run_dir: Path, event: dict, why: str) -> bool:
    """Record a refused event in events-dropped.jsonl; False when it already is (another sender's)."""
    path = run_dir / DROPPED
    if path.is_file() and event["event_id"] in path.read_text("utf-8"):  # 32 random hex: no false hit
        return False
    record = {k: event.get(k) for k in ("event_id", "sequence", "status")}
    record |= {"why": why, "when": payload.iso()}
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")  # one write: readers skip a partial line
    return True
