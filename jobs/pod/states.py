"""A pod's life as one state machine (issue 25, item 8): what one poll of a pod and its run saw (`Seen`),
the state that puts the pod in and what its follower must do about it (`decide`), and which state may
follow which (`TRANSITIONS`, `check`). One pod is one attempt in run.json; its state is kept there.

The follower (jobs/pod/follow.py) looks and acts; this module only decides. The CLI's `jobs follow` and the
jobs service drive the same table, the service by running `jobs follow` for every pod it supervises
(jobs/service/dispatcher.py). Nothing here imports the follower, relaunch.py or the service: they sit
above this module, never below it.

The order of the decisions is the follower's as it was before this module: our registry's cancel first,
then the cost cap, then a pod that is up (started? the run over and the container done? stuck?), then a
pod that is down (the run's own end, the deadline mark, an outside end, a spot reclaim). Some facts cost
a volume read or mark the attempt when looked at (whether the container started, is done, is stuck; the
deadline mark; the run's status once a down pod's trainer had its few seconds to save): `decide` asks
for each with a LOOK_* action only where the decision needs it, so each is read exactly when it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum

from jobs import registry
from jobs.pod.pods import ACTIVE

# Polls in a row that RunPod's API may fail (each after the client's own retries, backing off up to
# 10 polls or 5 min apart: about 40 min at the default 30 s poll) before the follower stops the pod.
API_FAILURES = 8
# RunPod's desiredStatus of a pod not running (a stopped pod bills its disk only), or GONE: RunPod has
# no such pod any more (its pod query answers null).
DOWN = ("EXITED", "TERMINATED", "GONE")
OVER = registry.TERMINAL  # a run's own end, read from its registry on the volume
# The watchdog (issue 25, item 3): container restarts with no new step before the run counts as
# crash-looping, and the least time with no new step before it counts as hung (model loading included:
# ~15 min for the 70B's weights, models/70b-qlora.yaml load_minutes).
CRASH_LOOP = 3
HANG_FLOOR_S = 3600.0


class State(StrEnum):
    """Where one pod is. Kept in its attempt (run.json) as the plain string, the issue's own words."""

    CREATING = "creating"  # asked for and recorded; no poll has seen it yet
    PULLING = "pulling"  # up, its container not yet at our entrypoint (image pull, wheel install)
    RUNNING = "running"  # the entrypoint ran; the run is at work on the volume (or not readable just now)
    ENDED_AWAITING_UPLOAD = "ended-awaiting-upload"  # run over; its container still at eval, upload
    TERMINATING = "terminating"  # we end it; not final until RunPod confirms it gone
    GONE = "gone"  # RunPod has no such pod (or lists it TERMINATED)
    PREEMPTED = "preempted"  # a spot pod taken back (EXITED), or one we stopped: a relaunch goes on
    HUNG = "hung"  # started, no new step for the hang bound
    CRASH_LOOPING = "crash-looping"  # started, its container restarted CRASH_LOOP times with no new step
    OVER_BUDGET = "over budget"  # cost so far at --max-cost: stopped (volume kept), run interrupted
    OVER_DEADLINE = "over deadline"  # it ended itself at the job's deadline (selfend.py's mark)
    CANCELLED_OUTSIDE = "cancelled outside"  # `jobs cancel`, or ended outside us (RunPod console, API)


class Action(Enum):
    """What the follower does next. LOOK_* and SETTLE: look, then ask `decide` again with the fact in."""

    POLL = "poll again"
    BACK_OFF = "RunPod's API failed: poll again later"
    GIVE_UP_API = "RunPod's API kept failing: stop the pod, exit 75"
    LOOK_STARTED = "look: did the container reach the entrypoint?"
    LOOK_DONE = "look: is the container done with the ended run?"
    LOOK_WATCHDOG = "look: is the run stuck?"
    LOOK_DEADLINE = "look: did the pod leave its deadline mark?"
    SETTLE = "wait for the run's last status, then look again"
    RECORD_CANCEL = "record the cancel (its canceller ended the pod), exit 130"
    STOP_AT_CAP = "stop the pod at the cost cap, run interrupted"
    NO_START = "terminate the pod that never started, relaunch"
    FAIL_STUCK = "terminate, run failed: hung or crash loop"
    COMPLETE = "fetch the adapter, terminate, run completed"
    FAIL = "terminate, run failed on the pod"
    CANCEL = "terminate, run cancelled on the pod"
    FAIL_DEADLINE = "terminate, run failed: its deadline passed"
    CANCEL_OUTSIDE = "terminate, run cancelled: the pod was ended outside"
    FAIL_ERROR = "terminate, run failed: RunPod put the pod in ERROR"
    RELAUNCH = "terminate, relaunch on the same volume"


LOOKS = (Action.LOOK_STARTED, Action.LOOK_DONE, Action.LOOK_WATCHDOG, Action.LOOK_DEADLINE, Action.SETTLE)


@dataclass(frozen=True)
class Seen:
    """What one poll saw. A None among the looked-at facts: not looked at yet."""

    desired: str | None = None  # the pod's desiredStatus, "GONE" (no pod), None: RunPod's API failed
    api_failures: int = 0  # polls in a row RunPod's API failed, this one included
    api_refused: bool = False  # it refused our key (AuthError): trying again changes nothing
    run: str | None = None  # the run's status on the volume; None: not there, or not readable
    cancelled: bool = False  # our registry says cancelled: `jobs cancel` ended the pod itself
    over_cap: bool = False  # the cost so far is at --max-cost
    spot: bool = False  # an interruptible pod: RunPod takes it back and keeps it EXITED
    stopped_by_us: bool = False  # this follower stopped it (RunPod's API kept failing)
    volume: bool = True  # the volume is readable from here (else there is no status to wait for)
    start_timed_out: bool = False  # --start-timeout has passed since the create
    started: bool | None = None  # the container reached the entrypoint (billing.started)
    done: bool | None = None  # the container is done with the ended run (billing.container_done)
    stuck: str | None = None  # the watchdog's reason ("hung: ...", "crash loop: ..."), "" for none
    deadline: bool | None = None  # the pod left its deadline mark on the volume (selfend.py)
    settled: bool = False  # `run` was read again after the down pod's settle wait
    errored: bool = False  # REST v2 says ERROR: "unrecoverable" (its only actions start and terminate)


def decide(seen: Seen) -> tuple[State | None, Action]:
    """The pod's state after this poll (None: unchanged, or not known until a LOOK) and what to do."""
    if seen.desired is None:  # no answer from RunPod: nothing is known about the pod
        if seen.api_failures < API_FAILURES and not seen.api_refused:
            return None, Action.BACK_OFF
        return None, Action.GIVE_UP_API
    if seen.cancelled:  # first: whoever cancelled ended the pod, and the run stays cancelled
        return State.CANCELLED_OUTSIDE, Action.RECORD_CANCEL
    if seen.over_cap:  # before the start checks: a pod that never starts bills too
        return State.OVER_BUDGET, Action.STOP_AT_CAP
    if seen.desired not in DOWN:
        return _up(seen)
    # The pod is down: finished, failed, or taken back. A container still at work had SIGTERM (SIGKILL
    # about 5 s later on a reclaimed spot pod): its last status is worth waiting for that long.
    if seen.run in ACTIVE and seen.volume and not seen.settled:
        return None, Action.SETTLE
    if seen.run in OVER:
        return _run_end(seen)
    if seen.deadline is None:
        return None, Action.LOOK_DEADLINE
    if seen.deadline:
        return State.OVER_DEADLINE, Action.FAIL_DEADLINE
    if seen.errored and not seen.stopped_by_us:  # RunPod's failure, not an outside decision to cancel
        return State.TERMINATING, Action.FAIL_ERROR
    # Only a spot reclaim relaunches: RunPod keeps a reclaimed pod EXITED with its disk. A pod gone, or
    # an on-demand pod stopped, that we did not stop was ended outside us (the RunPod console, the
    # customer's app): their decision, not a failure to undo by renting another.
    if not seen.stopped_by_us and not (seen.spot and seen.desired == "EXITED"):
        return State.CANCELLED_OUTSIDE, Action.CANCEL_OUTSIDE
    return State.PREEMPTED, Action.RELAUNCH


def _up(seen: Seen) -> tuple[State | None, Action]:
    """A pod RunPod still runs: its run's end once its container is done, else keep watching it."""
    if seen.started is None:
        return None, Action.LOOK_STARTED
    if not seen.started:  # never replaced before --start-timeout: an image pull takes minutes
        return (State.TERMINATING, Action.NO_START) if seen.start_timed_out else (State.PULLING, Action.POLL)
    if seen.run in OVER:  # RunPod restarts an exited container (dstack 1142): the run's end decides
        if seen.done is None:
            return None, Action.LOOK_DONE
        return _run_end(seen) if seen.done else (State.ENDED_AWAITING_UPLOAD, Action.POLL)
    if seen.stuck is None:
        return None, Action.LOOK_WATCHDOG
    if seen.stuck:
        return State.CRASH_LOOPING if seen.stuck.startswith("crash loop") else State.HUNG, Action.FAIL_STUCK
    return State.RUNNING, Action.POLL


RUN_END = {"completed": Action.COMPLETE, "failed": Action.FAIL, "cancelled": Action.CANCEL}


def _run_end(seen: Seen) -> tuple[State, Action]:
    """The run is over on the volume: terminated if RunPod still has the pod, then final."""
    return State.GONE if seen.desired == "GONE" else State.TERMINATING, RUN_END[seen.run]


def watchdog(marks: dict, step: int, restarts: int, now: float, bound: float) -> tuple[dict, str]:
    """The watchdog's look at a started run not over yet: the progress marks to keep in its attempt (a new
    step since the last look: `step`, `now`, the container's `restarts` then), and why it is stuck, ""
    if it is not: its container restarted CRASH_LOOP times with no new step (a trainer dying without
    writing its end: the OOM killer, a segfault), or no new step for `bound` s (--hang-timeout; the
    follower's default: HANG_FLOOR_S or 10 estimated steps, the longer). The crash loop is said first."""
    if step > marks.get("progress_step", -1):
        return {"progress_step": step, "progress_ts": now, "restarts_at_progress": restarts}, ""
    since = restarts - marks["restarts_at_progress"]
    if since >= CRASH_LOOP:
        return {}, f"crash loop: its container restarted {since} times with no new step (last step {step})"
    if now - marks["progress_ts"] >= bound:
        return {}, f"hung: no new step for {bound:g} s (last step {step}; --hang-timeout to change)"
    return {}, ""


# Which state may follow which: a poll (`decide`) or the follower's own acts (terminate: TERMINATING,
# then GONE once RunPod confirms it). A follower that exits before the end (75: RunPod's API, a terminate
# not confirmed; killed; Ctrl-C) leaves the state in run.json, and the next `jobs follow` (or the service)
# judges the pod again from there: so from most states most others can follow. What cannot:
_EVERY = frozenset(State) - {State.CREATING}  # a new pod is a new attempt, never this one again
# Once at the entrypoint, an attempt keeps it (started_ts), however the run reads afterwards (a volume
# read caught mid-write reads as no run at all).
_STARTED = _EVERY - {State.PULLING}
# The watchdog's first look at an attempt records its progress, never a reason.
_UNWATCHED = _EVERY - {State.HUNG, State.CRASH_LOOPING}
# RunPod has the pod no more (or lists it TERMINATED, where a terminate goes again): never up again.
_NO_POD = frozenset(
    {State.TERMINATING, State.PREEMPTED, State.CANCELLED_OUTSIDE, State.OVER_BUDGET, State.OVER_DEADLINE}
)

TRANSITIONS: dict[State, frozenset[State]] = {
    state: frozenset(after - {state})
    for state, after in {
        State.CREATING: _UNWATCHED,
        State.PULLING: _UNWATCHED,
        State.RUNNING: _STARTED,
        State.ENDED_AWAITING_UPLOAD: _STARTED,
        State.HUNG: _STARTED,
        State.CRASH_LOOPING: _STARTED,
        State.TERMINATING: _EVERY,
        State.GONE: _NO_POD,
        State.PREEMPTED: _EVERY,
        State.CANCELLED_OUTSIDE: _EVERY,
        State.OVER_DEADLINE: _EVERY,
        # The cost only grows and the cap is the launch's: a re-follow finds it over budget again
        # (stopped, unchanged), unless the run was cancelled meanwhile.
        State.OVER_BUDGET: frozenset({State.CANCELLED_OUTSIDE}),
    }.items()
}


class StateError(RuntimeError):
    """A transition the table does not have: a bug in the follower or in the table, never the pod's."""


def check(prev: str, new: str) -> None:
    """Refuse a change of state the table does not allow."""
    prev, new = State(prev), State(new)
    if new not in TRANSITIONS[prev]:
        raise StateError(
            f"a pod cannot go from {prev.value!r} to {new.value!r} (jobs/pod/states.py TRANSITIONS)"
        )
