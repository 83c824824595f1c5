"""jobs/pod/states.py: the pod's life as one table. Pure: constructed `Seen`s through `decide()`, no fake
RunPod, no volume; one test of the follower's own record of the state in run.json (no registry either).

Every transition in TRANSITIONS is produced by `decide()` from a poll its previous state allows, and every
transition `decide()` can produce is in the table: `consistent()` below says what a recorded state implies
about the next poll of the same pod (what the follower keeps in the attempt, and what RunPod never undoes).
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from jobs.pod import states
from jobs.pod.states import LOOKS, TRANSITIONS, Action, Seen, State, StateError, check, decide

RUNS = (None, "queued", "training", "interrupted", "completed", "failed", "cancelled")
STARTED = {State.RUNNING, State.ENDED_AWAITING_UPLOAD, State.HUNG, State.CRASH_LOOPING}
# What each LOOK may find (SETTLE: the run's status read again after the wait).
FOUND = {
    Action.LOOK_STARTED: [{"started": v} for v in (False, True)],
    Action.LOOK_DONE: [{"done": v} for v in (False, True)],
    Action.LOOK_WATCHDOG: [{"stuck": v} for v in ("", "hung: no new step", "crash loop: 3 restarts")],
    Action.LOOK_DEADLINE: [{"deadline": v} for v in (False, True)],
    Action.SETTLE: [{"run": run, "settled": True} for run in RUNS],
}
# The follower's acts that terminate the pod when RunPod still has it (follow.py's end_pod, terminate).
TERMINATES = {
    Action.NO_START,
    Action.FAIL_STUCK,
    Action.COMPLETE,
    Action.FAIL,
    Action.CANCEL,
    Action.FAIL_DEADLINE,
    Action.CANCEL_OUTSIDE,
    Action.FAIL_ERROR,
    Action.RELAUNCH,
}


def settle(seen: Seen, **found) -> tuple[State | None, Action, list[Action]]:
    """decide() as the follower drives it: each LOOK answered from `found` (by field), until an act."""
    asked = []
    state, action = decide(seen)
    while action in LOOKS:
        asked.append(action)
        field = "run" if action is Action.SETTLE else next(iter(FOUND[action][0]))
        extra = {"settled": True} if action is Action.SETTLE else {}
        seen = replace(seen, **{field: found[field]}, **extra)
        state, action = decide(seen)
    return state, action, asked


def every_poll():
    """Every poll a pod can give (up, stopped, terminated, gone; each run status; each flag), with every
    answer to each LOOK that decide() asks for: (the Seen with what was looked at, state, action)."""

    def explore(seen):
        state, action = decide(seen)
        if action not in LOOKS:
            yield seen, state, action
            return
        for found in FOUND[action]:
            yield from explore(replace(seen, **found))

    for desired in ("RUNNING", "EXITED", "TERMINATED", "GONE"):
        for run in RUNS:
            for flags in range(128):
                bits = [bool(flags >> n & 1) for n in range(7)]
                names = (
                    "cancelled",
                    "over_cap",
                    "spot",
                    "stopped_by_us",
                    "volume",
                    "start_timed_out",
                    "errored",
                )
                yield from explore(Seen(desired=desired, run=run, **dict(zip(names, bits, strict=True))))


def consistent(prev: State, seen: Seen) -> bool:
    """Whether the next poll of a pod whose attempt records `prev` can see this."""
    if prev in STARTED and seen.started is False:  # started_ts stays in the attempt
        return False
    if prev in (State.CREATING, State.PULLING) and seen.stuck:  # the watchdog's first look: no reason
        return False
    if prev is State.GONE and seen.desired not in ("TERMINATED", "GONE"):  # RunPod never brings it back
        return False
    return prev is not State.OVER_BUDGET or seen.over_cap  # the cost only grows; the cap is the launch's


POLLS = list(every_poll())
PRODUCED = {
    (prev, state): seen
    for prev in State
    for seen, state, _ in POLLS
    if state is not None and state != prev and consistent(prev, seen)
}
PAIRS = sorted((prev, after) for prev, allowed in TRANSITIONS.items() for after in allowed)


def test_the_states_are_the_issues():
    assert [s.value for s in State] == [
        "creating",
        "pulling",
        "running",
        "ended-awaiting-upload",
        "terminating",
        "gone",
        "preempted",
        "hung",
        "crash-looping",
        "over budget",
        "over deadline",
        "cancelled outside",
    ]
    assert set(TRANSITIONS) == set(State)


@pytest.mark.parametrize("prev,after", PAIRS, ids=[f"{p.value}->{a.value}" for p, a in PAIRS])
def test_each_transition_in_the_table_comes_from_a_poll(prev, after):
    seen = PRODUCED.get((prev, after))
    assert seen is not None, f"no poll after {prev!r} gives {after!r}: drop it from TRANSITIONS"
    assert decide(seen)[0] is after
    check(prev, after)


def test_every_transition_decide_can_make_is_in_the_table():
    assert set(PRODUCED) == set(PAIRS)
    # And the follower's own: a terminate goes through TERMINATING to GONE; a pod already gone, straight
    # to GONE; a relaunched pod cancelled before its first poll is terminated from CREATING.
    ours = {(State.TERMINATING, State.GONE), (State.CREATING, State.TERMINATING)}
    for seen, state, action in POLLS:
        if action in TERMINATES and state is not None:
            ours.add((state, State.GONE if seen.desired == "GONE" else State.TERMINATING))
    for prev, after in ours - {(s, s) for s in State}:
        check(prev, after)


def test_check_refuses_what_cannot_happen():
    for prev, after in [
        (State.GONE, State.RUNNING),  # RunPod never brings a terminated pod back
        (State.RUNNING, State.CREATING),  # a new pod is a new attempt
        (State.RUNNING, State.PULLING),  # started once, started for good
        (State.PULLING, State.HUNG),  # the watchdog's first look records progress
        (State.OVER_BUDGET, State.RUNNING),  # over the cap stays over it
        (State.RUNNING, State.RUNNING),  # no change is no transition
    ]:
        with pytest.raises(StateError, match=f"from '{prev.value}' to '{after.value}'"):
            check(prev, after)
    check("running", "hung")  # as run.json keeps it: the plain string


# -- decide(), path by path, in the order the follower decided before this table -----------------------

UP = Seen(desired="RUNNING", run="training", started=True, stuck="")


@pytest.mark.parametrize(
    "seen,expected",
    [
        (Seen(api_failures=1), (None, Action.BACK_OFF)),
        (Seen(api_failures=states.API_FAILURES - 1), (None, Action.BACK_OFF)),
        (Seen(api_failures=states.API_FAILURES), (None, Action.GIVE_UP_API)),
        (Seen(api_failures=1, api_refused=True), (None, Action.GIVE_UP_API)),  # our key refused
        # Our registry's cancel first: before the cap, and whatever the pod is.
        (replace(UP, cancelled=True, over_cap=True), (State.CANCELLED_OUTSIDE, Action.RECORD_CANCEL)),
        (Seen(desired="GONE", cancelled=True), (State.CANCELLED_OUTSIDE, Action.RECORD_CANCEL)),
        # The cap before the start checks, up or down.
        (
            Seen(desired="RUNNING", over_cap=True, start_timed_out=True),
            (State.OVER_BUDGET, Action.STOP_AT_CAP),
        ),
        (Seen(desired="EXITED", run="completed", over_cap=True), (State.OVER_BUDGET, Action.STOP_AT_CAP)),
        # Up, not started: waited for until --start-timeout, then terminated and replaced.
        (Seen(desired="RUNNING", started=False), (State.PULLING, Action.POLL)),
        (Seen(desired="RUNNING", started=False, start_timed_out=True), (State.TERMINATING, Action.NO_START)),
        (Seen(desired="RUNNING", run="completed", started=False), (State.PULLING, Action.POLL)),
        # Up and started.
        (UP, (State.RUNNING, Action.POLL)),
        (replace(UP, run=None), (State.RUNNING, Action.POLL)),  # the run not readable just now
        (replace(UP, stuck="hung: no new step for 3600 s"), (State.HUNG, Action.FAIL_STUCK)),
        (replace(UP, stuck="crash loop: its container..."), (State.CRASH_LOOPING, Action.FAIL_STUCK)),
        (replace(UP, run="completed", done=False), (State.ENDED_AWAITING_UPLOAD, Action.POLL)),
        (replace(UP, run="completed", done=True), (State.TERMINATING, Action.COMPLETE)),
        (replace(UP, run="failed", done=True), (State.TERMINATING, Action.FAIL)),
        (replace(UP, run="cancelled", done=True), (State.TERMINATING, Action.CANCEL)),
        # Down: the run's own end first, terminated if RunPod still lists the pod.
        (Seen(desired="EXITED", run="completed"), (State.TERMINATING, Action.COMPLETE)),
        (Seen(desired="TERMINATED", run="failed"), (State.TERMINATING, Action.FAIL)),
        (Seen(desired="GONE", run="completed"), (State.GONE, Action.COMPLETE)),
        (Seen(desired="GONE", run="cancelled"), (State.GONE, Action.CANCEL)),
        # Then the deadline mark, whatever the pod's kind.
        (
            Seen(desired="EXITED", run="training", settled=True, spot=True, deadline=True),
            (State.OVER_DEADLINE, Action.FAIL_DEADLINE),
        ),
        (
            Seen(desired="GONE", deadline=True, stopped_by_us=True),
            (State.OVER_DEADLINE, Action.FAIL_DEADLINE),
        ),
        # Then who ended it: only a spot pod kept EXITED was taken back; one we stopped is resumed too.
        (Seen(desired="EXITED", spot=True, deadline=False), (State.PREEMPTED, Action.RELAUNCH)),
        (
            Seen(desired="EXITED", run="interrupted", spot=True, deadline=False),
            (State.PREEMPTED, Action.RELAUNCH),
        ),
        (Seen(desired="EXITED", stopped_by_us=True, deadline=False), (State.PREEMPTED, Action.RELAUNCH)),
        (Seen(desired="GONE", stopped_by_us=True, deadline=False), (State.PREEMPTED, Action.RELAUNCH)),
        (Seen(desired="EXITED", deadline=False), (State.CANCELLED_OUTSIDE, Action.CANCEL_OUTSIDE)),
        (Seen(desired="GONE", spot=True, deadline=False), (State.CANCELLED_OUTSIDE, Action.CANCEL_OUTSIDE)),
        (
            Seen(desired="TERMINATED", spot=True, deadline=False),
            (State.CANCELLED_OUTSIDE, Action.CANCEL_OUTSIDE),
        ),
        # REST v2's ERROR ("unrecoverable"): RunPod's failure, the run failed, on-demand or spot; never an
        # outside cancel (as it was) nor a relaunch. The run's own end still comes first.
        (Seen(desired="EXITED", errored=True, deadline=False), (State.TERMINATING, Action.FAIL_ERROR)),
        (
            Seen(desired="EXITED", errored=True, spot=True, deadline=False),
            (State.TERMINATING, Action.FAIL_ERROR),
        ),
        (Seen(desired="EXITED", run="completed", errored=True), (State.TERMINATING, Action.COMPLETE)),
    ],
)
def test_decide(seen, expected):
    assert decide(seen) == expected


def test_looks_are_asked_for_only_where_the_decision_needs_them():
    # Up: whether it started, then for a run at work the watchdog (never whether the container is done)...
    assert settle(Seen(desired="RUNNING", run="training"), started=True, stuck="")[2] == [
        Action.LOOK_STARTED,
        Action.LOOK_WATCHDOG,
    ]
    # ...for a run over, whether the container is done (never the watchdog); not started: nothing more.
    assert settle(Seen(desired="RUNNING", run="completed"), started=True, done=False)[1:] == (
        Action.POLL,
        [Action.LOOK_STARTED, Action.LOOK_DONE],
    )
    assert settle(Seen(desired="RUNNING"), started=False)[2] == [Action.LOOK_STARTED]
    # Cancelled or over the cap: nothing looked at.
    assert settle(Seen(desired="RUNNING", cancelled=True))[2] == []
    assert settle(Seen(desired="RUNNING", over_cap=True))[2] == []
    # Down with its run still at work: the settle wait first, then the status it settled on decides; the
    # deadline mark is read only for a run that did not end on its own.
    assert settle(Seen(desired="EXITED", run="training", spot=True), run="completed") == (
        State.TERMINATING,
        Action.COMPLETE,
        [Action.SETTLE],
    )
    assert settle(Seen(desired="EXITED", run="training", spot=True), run="interrupted", deadline=False) == (
        State.PREEMPTED,
        Action.RELAUNCH,
        [Action.SETTLE, Action.LOOK_DEADLINE],
    )
    # No volume readable from here: nothing to wait for.
    assert settle(Seen(desired="GONE", run="training", volume=False), deadline=False)[2] == [
        Action.LOOK_DEADLINE
    ]
    assert settle(Seen(desired="EXITED", run="queued", spot=True), run=None, deadline=False)[:2] == (
        State.PREEMPTED,
        Action.RELAUNCH,
    )


def test_watchdog():
    # First look: progress recorded, never a reason (so a pod is never stuck at its first poll).
    marks, why = states.watchdog({}, 0, 5, now=100.0, bound=60.0)
    assert (marks, why) == ({"progress_step": 0, "progress_ts": 100.0, "restarts_at_progress": 5}, "")
    # No new step: the crash loop is said before the hang.
    assert states.watchdog(marks, 0, 7, now=130.0, bound=60.0) == ({}, "")
    assert states.watchdog(marks, 0, 8, now=200.0, bound=60.0)[1] == (
        "crash loop: its container restarted 3 times with no new step (last step 0)"
    )
    assert states.watchdog(marks, 0, 5, now=160.0, bound=60.0)[1] == (
        "hung: no new step for 60 s (last step 0; --hang-timeout to change)"
    )
    # A new step starts both counts again.
    assert states.watchdog(marks, 4, 9, now=300.0, bound=60.0) == (
        {"progress_step": 4, "progress_ts": 300.0, "restarts_at_progress": 9},
        "",
    )
    assert (
        decide(replace(UP, stuck=states.watchdog(marks, 0, 8, now=200.0, bound=60.0)[1]))[0]
        is State.CRASH_LOOPING
    )
    assert decide(replace(UP, stuck=states.watchdog(marks, 0, 5, now=160.0, bound=60.0)[1]))[0] is State.HUNG


def test_the_follower_records_the_state_in_run_json_and_refuses_an_impossible_change(tmp_path):
    from jobs.pod.follow import Follower

    run_dir = tmp_path / "run-s"
    run_dir.mkdir()
    launch = {"volume_dir": None, "max_cost": None, "start_timeout": None, "gpus": 1}
    fresh = {"pod_id": "p1", "volume_run_id": "run-s", "outcome": None}
    legacy = {"pod_id": "p0", "volume_run_id": "run-s", "outcome": None, "started_ts": 1.0}  # no state yet
    (run_dir / "run.json").write_text(json.dumps({"launch": launch, "attempts": [legacy, fresh]}))
    follower = Follower("run-s", str(tmp_path), api=None, poll=0.2, settle_s=0)
    legacy, fresh = follower.attempts

    def saved():
        return [a.get("state") for a in json.loads((run_dir / "run.json").read_text())["attempts"]]

    follower.enter(fresh, None)  # no news: nothing recorded
    follower.enter(fresh, State.PULLING)
    follower.enter(fresh, State.RUNNING)
    follower.enter(legacy, State.RUNNING)  # recorded before states: running, as it started
    assert saved() == [None, "running"]
    with pytest.raises(StateError, match="from 'running' to 'pulling'"):
        follower.enter(legacy, State.PULLING)
    follower.enter(fresh, State.GONE)
    with pytest.raises(StateError, match="from 'gone' to 'running'"):
        follower.enter(fresh, State.RUNNING)
    assert saved() == [None, "gone"]
