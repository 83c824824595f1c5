"""Following a launched run to its end (`jobs launch`, `jobs follow RUN`): poll the pod and the run on its
volume, mirror the progress onto our registry row, keep the cost under the cap, relaunch a pod that is gone
before the run finished (on the same volume: from the last checkpoint), give up after --max-retries, and
at the end fetch the adapter. Every end goes to the registry and out as a signed event (jobs/status.py).

Cost so far is the sum over its pods of billed time × costPerHr, from just before each create to its
termination, restarts and image pulls included (jobs/pod/billing.py).

What each poll makes of the pod (its state, and what to do: poll again, end the run, relaunch) is decided
in jobs/pod/states.py, one table for the pod's life; this looks at the pod and its volume, and acts.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

from jobs import registry, runfolder
from jobs.pod import billing, owner, runpod, selfend, states, stored
from jobs.pod import volume as vol
from jobs.pod.pods import (
    ACTIVE,
    POD_VOLUME,
    checkpoint_step,
    fetch_adapter,
    forget_job_key,
    gone,
    now_iso,
    record_adapter,
    say,
    volume_of,
    volume_state,
    write_report,
)
from jobs.pod.relaunch import adopt_unrecorded, relaunch
from jobs.pod.states import API_FAILURES, Action, State, decide
from jobs.status import Cancelled, set_status
from jobs.status import emit as emit_status

ALERT = 0.8  # share of --max-cost at which the launcher warns, once


def follow(
    run_id: str, runs_dir: str, api: runpod.Client, poll: float = 30.0, settle_s: float = 120.0
) -> int:
    """Follow the run until it ends; the exit code (0 done, 1 failed or capped, 130 cancelled or detached,
    75 RunPod's API kept failing: the pod stopped or said to be left running, the run undecided; or
    another process follows it already, jobs/pod/owner.py)."""
    try:
        owner.hold(Path(runs_dir) / run_id)
    except owner.Followed as exc:
        say(f"run {run_id} is followed by {exc} already: nothing to do here (`jobs status {run_id}`)")
        return 75
    try:
        return Follower(run_id, runs_dir, api, poll, settle_s).run()
    finally:
        owner.release(Path(runs_dir) / run_id)


# How long a pod found down may leave its run's status to settle: RunPod gives a reclaimed spot pod about
# 5 s from SIGTERM to SIGKILL (its pricing page, cited in issue 16), plus a volume sync.
DOWN_SETTLE_S = 10.0
# Terminates sent before a pod not confirmed gone leaves the run undecided (backing off from the poll
# interval, doubling, at most a minute apart: about 2 min in all at the default poll).
TERMINATE_TRIES = 6


class Follower:
    """One launched run: its lineage (run.json, saved after each change), its pods' attempts, its volume."""

    def __init__(self, run_id: str, runs_dir: str, api: runpod.Client, poll: float, settle_s: float):
        self.run_id, self.api, self.poll, self.settle_s = run_id, api, poll, settle_s
        self.run_dir = Path(runs_dir) / run_id
        self.lineage = json.loads((self.run_dir / "run.json").read_text())
        self.info = self.lineage["launch"]
        self.attempts = self.lineage["attempts"]
        self.volume = volume_of(self.info)
        self.max_cost = self.info["max_cost"]
        self.start_timeout = float(self.info.get("start_timeout") or billing.START_TIMEOUT_S)
        self.shown: str | None = None
        self.last_step = 0
        self.failures = 0  # RunPod API failures in a row

    # -- what it knows ---------------------------------------------------------------------------------------

    def save(self) -> None:
        runfolder.write_json(self.run_dir / "run.json", self.lineage)

    def cost(self) -> float:
        return sum(a["cost"] for a in self.attempts)

    def gpu_hours(self) -> float:
        """The GPU-hours billed (billing.py: creation to termination), as the cost is."""
        return sum(a.get("billed_s", a["uptime_s"]) for a in self.attempts) / 3600 * self.info["gpus"]

    def with_lost(self, metrics: dict) -> dict:
        """The pod's latest numbers plus ours: work and money lost to preemptions."""
        if not any("lost_steps" in a for a in self.attempts):
            return metrics
        lost = sum(a.get("lost_steps") or 0 for a in self.attempts)
        return {
            **metrics,
            "lost_steps": lost,
            "lost_cost": sum(a.get("lost_cost") or 0 for a in self.attempts),
        }

    def after_pod(self, event: dict | None, vrun: str) -> dict:
        """Our event numbered after the last one of the pod's run `vrun` (volume.py, event_sequence)."""
        if not self.volume or not os.environ.get("WEBHOOK_URL"):
            return event or {}
        return {**(event or {}), "after": vol.event_sequence(self.volume, vrun)}

    # -- what it does ----------------------------------------------------------------------------------------

    def finish(self, status: str, error: str | None, code: int, event: dict | None = None, **fields) -> int:
        """The run's end as this launcher sees it, with what only it knows (cost, the fetched adapter),
        to the registry and as an event: the customer hears of a give-up or a cost cap too."""
        last = self.attempts[-1]
        last["ended"] = last.get("ended") or now_iso()
        last["outcome"] = last["outcome"] or status
        billing.account(last)
        self.save()
        try:
            set_status(
                self.run_dir,
                self.run_id,
                status,
                event=self.after_pod(event, last["volume_run_id"]),
                error_message=error,
                completed_at=registry.now(),
                actual_cost=self.cost(),
                gpu_hours=self.gpu_hours(),
                **fields,
            )
        except Cancelled:  # `jobs cancel` got there first: it stays cancelled, with what it cost
            registry.update_job(self.run_id, actual_cost=self.cost(), gpu_hours=self.gpu_hours())
            status, code = "cancelled", 130
        if status != "interrupted":  # a stopped pod (cost cap) may be started again: it boots with the key
            forget_job_key(self.api, self.run_id)  # its pods are gone: the secret they signed with
        say(f"run {self.run_id}: {status}" + (f" ({error})" if error else "") + f"; cost ${self.cost():.4f}")
        return code

    def terminate(self, pod_id: str) -> bool:
        """Terminate the pod and see it gone (RunPod's pod query answers null): sent again, backing off,
        while RunPod refuses it or still lists the pod. False: it may still bill, said with what to do;
        the caller leaves the run undecided (issue 25: a run is not final while its pod exists)."""
        last = ""
        ending = [a for a in self.attempts if a["pod_id"] == pod_id]
        for attempt in ending:
            self.enter(attempt, State.TERMINATING)
        for n in range(TERMINATE_TRIES):
            if n:
                time.sleep(min(max(self.poll, 0.2) * 2 ** (n - 1), 60.0))
            try:
                self.api.terminate(pod_id)
            except runpod.RunPodError as exc:
                if "not found" not in str(exc).lower():
                    last = str(exc)
                    say(f"warning: terminating pod {pod_id} failed ({exc}); trying again")
                    continue
            try:
                pod = self.api.pod(pod_id)
            except runpod.RunPodError as exc:
                last = str(exc)
                continue
            if gone(pod):
                for attempt in ending:  # billing ends once RunPod no longer has the pod
                    billing.end(attempt)
                    self.enter(attempt, State.GONE)
                self.save()
                return True
            last = f"RunPod still lists it {pod.get('desiredStatus')}"
        self.save()
        say(
            f"error: pod {pod_id} is not confirmed gone after {TERMINATE_TRIES} terminates ({last}); it may "
            f"still bill. The run stays undecided until it is: `jobs follow {self.run_id}` tries again "
            "(or terminate it in the RunPod console, Pods)"
        )
        return False

    def end_pod(self, attempt: dict, pod: dict | None) -> bool:
        """The attempt's pod terminated if RunPod still has it: False while it may still bill."""
        if pod is None:
            self.enter(attempt, State.GONE)
            return True
        return self.terminate(attempt["pod_id"])

    def settle(self, vrun: str, seconds: float | None = None) -> dict | None:
        """After a stop or preemption the trainer saves a checkpoint: wait until the run says it stopped
        (at most `seconds`, default settle_s)."""
        deadline = time.monotonic() + (self.settle_s if seconds is None else seconds)
        state = volume_state(self.volume, vrun)
        while self.volume and time.monotonic() < deadline and (state is None or state["status"] in ACTIVE):
            time.sleep(max(self.poll, 0.2))
            state = volume_state(self.volume, vrun)
        return state

    # -- the loop --------------------------------------------------------------------------------------------

    def run(self) -> int:
        if (code := adopt_unrecorded(self)) is not None:
            return code
        try:
            while True:
                code = self.step()
                if code is not None:
                    return code
        except KeyboardInterrupt:
            self.save()
            say(
                f"\nstopped following; the pod keeps running (and billing): `jobs follow {self.run_id}` "
                f"picks it up again, `jobs status {self.run_id}`, `jobs cancel {self.run_id}`"
            )
            return 130

    def step(self) -> int | None:
        """One poll of the pod and the volume: None to poll again, or the exit code."""
        attempt = self.attempts[-1]
        pod_id, vrun = attempt["pod_id"], attempt["volume_run_id"]
        try:
            pod = self.api.pod(pod_id)
        except runpod.RunPodError as exc:  # the client's own retries are spent, or a GraphQL error
            return self.api_failed(attempt, exc)
        self.failures = 0
        runtime = (pod or {}).get("runtime") or {}
        billing.saw_runtime(attempt, runtime)
        if pod:
            billing.saw_price(attempt, pod.get("costPerHr"))
        desired = pod["desiredStatus"] if pod else "GONE"
        if desired in states.DOWN:
            billing.end(attempt)  # billing stops with the container (a stopped pod bills its disk only)
        billing.account(attempt)
        state = volume_state(self.volume, vrun)
        seen = states.Seen(
            desired=desired,
            run=(state or {}).get("status"),
            cancelled=registry.get_job(self.run_id).status == "cancelled",
            over_cap=self.max_cost is not None and self.cost() >= self.max_cost,
            spot=bool(self.info["spot"]),
            stopped_by_us=bool(attempt.get("stopped_by")),
            volume=bool(self.volume),
            start_timed_out=time.time() - attempt.get("created_ts", time.time()) >= self.start_timeout,
            errored=bool(pod) and pod.get("status") == "ERROR",  # REST v2's raw status (rest.graphql_pod)
        )
        now, action = decide(seen)
        if action is not Action.RECORD_CANCEL:  # a run still ours: its progress, here and on our row
            self.mirror(state)
            self.show(pod_id, desired, state)
            if self.max_cost is not None:
                self.alert()
        while action in states.LOOKS:
            if action is Action.LOOK_STARTED:
                seen = replace(seen, started=billing.started(attempt, self.volume, runtime, state))
            elif action is Action.LOOK_DONE:
                marker = self.upload_marker(state, vrun)
                seen = replace(seen, done=billing.container_done(attempt, self.volume, marker))
            elif action is Action.LOOK_WATCHDOG:
                seen = replace(seen, stuck=self.watchdog(attempt, state))
            elif action is Action.LOOK_DEADLINE:
                seen = replace(seen, deadline=self.passed_deadline(pod_id))
            else:  # SETTLE
                state = self.settle(vrun, min(self.settle_s, DOWN_SETTLE_S))
                seen = replace(seen, run=(state or {}).get("status"), settled=True)
            now, action = decide(seen)
        self.enter(attempt, now)
        if action is Action.POLL:
            time.sleep(self.poll)
            return None
        if action is Action.RECORD_CANCEL:  # `jobs cancel RUN` terminated the pod
            attempt["outcome"] = "cancelled"
            attempt["ended"] = now_iso()
            billing.end(attempt)
            self.save()
            registry.update_job(self.run_id, actual_cost=self.cost(), gpu_hours=self.gpu_hours())
            forget_job_key(self.api, self.run_id)
            say(f"run {self.run_id}: cancelled; cost ${self.cost():.4f}")
            return 130
        if action is Action.STOP_AT_CAP:
            return self.cap(attempt, pod, desired)
        if action is Action.NO_START:
            return self.no_start(attempt, state, runtime)
        if action is Action.FAIL_STUCK:
            return self.stuck(attempt, seen.stuck)
        attempt["ended"] = now_iso()
        return self.ended(attempt, pod, state, action)

    def enter(self, attempt: dict, state: str | None) -> None:
        """The pod's new state (jobs/pod/states.py) into its attempt, saved; a change the table does not
        have raises. An attempt recorded before states were: running once it started, else creating."""
        prev = attempt.get("state") or (State.RUNNING if attempt.get("started_ts") else State.CREATING)
        if state is not None and state != prev:
            states.check(prev, state)
            attempt["state"] = str(state)
            self.save()

    def api_failed(self, attempt: dict, exc: runpod.RunPodError) -> int | None:
        """RunPod's API failing: poll again later, backing off; after API_FAILURES in a row (or a key
        RunPod refuses), stop the pod so it no longer bills (its volume and last checkpoint stay) and
        exit 75 saying how to go on. Never a traceback, never a pod left billing unsaid."""
        self.failures += 1
        pod_id = attempt["pod_id"]
        seen = states.Seen(api_failures=self.failures, api_refused=isinstance(exc, runpod.AuthError))
        if decide(seen)[1] is Action.BACK_OFF:
            delay = min(self.poll * 2 ** (self.failures - 1), 10 * self.poll, 300.0)
            say(f"warning: {exc} (failure {self.failures}/{API_FAILURES}; polling again in {delay:g} s)")
            time.sleep(delay)
            return None
        self.save()
        try:
            self.api.stop(pod_id)
            billing.end(attempt)
            attempt["stopped_by"] = "this launcher: RunPod's API kept failing"  # not an outside stop
            self.save()
            left = (
                f"pod {pod_id} is stopped (no GPU billing; its volume and the run's last checkpoint are "
                f"kept): `jobs follow {self.run_id}` relaunches it from the checkpoint once RunPod "
                f"answers, `jobs cancel {self.run_id}` ends it"
            )
        except runpod.RunPodError as stop_exc:
            left = (
                f"pod {pod_id} may still be running and billing (last seen: run at step {self.last_step}; "
                f"stopping it failed too: {stop_exc}): `jobs follow {self.run_id}` re-attaches, "
                f"`jobs cancel {self.run_id}` terminates it (or the RunPod console, Pods)"
            )
        say(f"error: RunPod's API failed {self.failures} time(s) in a row (last: {exc}); {left}")
        return 75  # EX_TEMPFAIL: nothing is decided about the run; the registry is left as it was

    def upload_marker(self, state: dict, vrun: str) -> str | None:
        """The key the pod writes once its upload to the artifact store is over, when it makes one."""
        if self.info.get("store_upload") and state["status"] == "completed":
            return f"runs/{vrun}/{stored.MARKER}"
        return None

    def no_start(self, attempt: dict, state: dict | None, runtime: dict) -> int | None:
        """A pod whose container never ran our entrypoint: terminated, counted, relaunched or given up."""
        pod_id = attempt["pod_id"]
        why = (
            f"pod {pod_id} did not start the job within --start-timeout {self.start_timeout:g} s "
            f"({'its container ran but never reached the entrypoint' if runtime else 'no runtime'}: "
            f"a host without the image's CUDA {self.info.get('cuda') or '?'}, an image it cannot pull "
            "(private: --registry-auth), or no capacity)"
        )
        say(why)
        if not self.terminate(pod_id):
            return 75
        attempt["ended"] = now_iso()
        return relaunch(self, attempt, None, state, outcome="no start", why=why)

    def mirror(self, state: dict | None) -> None:
        fields = {"actual_cost": self.cost(), "gpu_hours": self.gpu_hours()}
        if state:
            active = state["status"] in ACTIVE
            self.last_step = max(self.last_step, state["step"]) if active else state["step"]
            fields |= {
                "step": state["step"],
                "total_steps": state["total_steps"],
                "metrics": self.with_lost(state["metrics"]),
            }
            if active:
                fields["status"] = state["status"]
        mirror(self.run_id, fields)

    def show(self, pod_id: str, desired: str, state: dict | None) -> None:
        loss = (state or {}).get("metrics", {}).get("loss")
        line = (
            f"pod {pod_id} {desired} | run {(state or {}).get('status', '-')} "
            f"step {(state or {}).get('step', 0)}/{(state or {}).get('total_steps') or '?'}"
            + (f" loss {loss:.4f}" if isinstance(loss, int | float) else "")
            + f" | ${self.cost():.4f}"
            + (f" of ${self.max_cost:.2f}" if self.max_cost is not None else "")
        )
        if line != self.shown:
            say(line)
            self.shown = line

    def alert(self) -> None:
        """Once per run (run.json remembers it across `jobs follow`), before the cap stops the pod."""
        if self.cost() >= ALERT * self.max_cost and not self.lineage.get("budget_alert"):
            self.lineage["budget_alert"] = now_iso()
            self.save()
            said = (
                f"budget alert: ${self.cost():.2f} spent, {self.cost() / self.max_cost:.0%} of the "
                f"${self.max_cost:.2f} cap; the pod is stopped at the cap"
            )
            say(said)
            # An event on the job too (issue 25), not only a line on this terminal: the status it has, a
            # message, the figures. Their handler applies the status (unchanged) and ignores the rest.
            row = registry.get_job(self.run_id)
            alert = {"spent_usd": round(self.cost(), 4), "max_cost_usd": self.max_cost}
            emit_status(
                self.run_dir,
                row,
                row.status,
                **self.after_pod(
                    {"message": said, "budget_alert": alert}, self.attempts[-1]["volume_run_id"]
                ),
            )

    def cap(self, attempt: dict, pod: dict | None, desired: str) -> int:
        pod_id, vrun = attempt["pod_id"], attempt["volume_run_id"]
        say(f"cost cap ${self.max_cost:.2f} reached: stopping pod {pod_id} (the trainer saves a checkpoint)")
        if pod and desired != "EXITED":
            try:
                self.api.stop(pod_id)
            except runpod.RunPodError as exc:
                self.save()
                say(
                    f"error: could not stop pod {pod_id} at the cost cap ({exc}); it may still bill: "
                    f"`jobs cancel {self.run_id}` terminates it"
                )
                return 75
        billing.end(attempt)  # a stopped pod bills its volume only
        state = self.settle(vrun)
        attempt["ended"] = now_iso()
        attempt["outcome"] = "stopped: cost cap"
        attempt["checkpoint_step"] = checkpoint_step(self.volume, vrun)
        step_fields = {"step": state["step"]} if state else {}
        return self.finish(
            "interrupted",
            f"cost cap ${self.max_cost:.2f} reached (${self.cost():.2f} spent); the pod is stopped "
            f"with its volume, the last checkpoint is kept",
            1,
            event={"resumable": False},
            **step_fields,
        )

    def ended(
        self, attempt: dict, pod: dict | None, state: dict | None, action: Action | None = None
    ) -> int | None:
        """The pod is down, or its run over and its container done: the end decide() found (the run's own
        status on the volume, the deadline mark, an outside end), or a relaunch. No action: the run's own
        end, from its status on the volume."""
        pod_id, vrun = attempt["pod_id"], attempt["volume_run_id"]
        action = action or states.RUN_END[state["status"]]
        if action is Action.COMPLETE:
            attempt["outcome"] = "completed"
            # Fetched first, then terminated: a pod's own volume (not a network volume) goes with it.
            fetched = fetch_adapter(self.volume, vrun, self.run_dir)
            where = self.stored(vrun) if self.info.get("store_upload") else None
            if not self.end_pod(attempt, pod):
                return 75
            if fetched:
                record_adapter(self.run_id, self.run_dir, self.lineage)
            path = fetched or f"{self.info['volume_dir'] or POD_VOLUME}/runs/{vrun}/output"
            event = {"lora_artifact_path": path, "metrics": self.with_lost(state["metrics"])}
            if where:
                # Stored by the pod: the customer's lora_artifact_path is its adapter.zip's key in their
                # bucket (their dashboard signs it); the path here stays our registry's artifact_path.
                event |= stored.event_fields(self.lineage["stored"], path)
            code = self.finish(
                "completed",
                None,
                0,
                event=event,
                step=state["step"],
                total_steps=state["total_steps"],
                metrics=self.with_lost(state["metrics"]),
                artifact_path=path,
            )
            if fetched:
                write_report(self.run_dir)
            return code
        if action is Action.RELAUNCH:
            return relaunch(self, attempt, pod, state)
        step, error = (state or {}).get("step", self.last_step), (state or {}).get("error")
        status = "failed" if action in (Action.FAIL, Action.FAIL_DEADLINE, Action.FAIL_ERROR) else "cancelled"
        outcome = {
            Action.FAIL_DEADLINE: "deadline",
            Action.CANCEL_OUTSIDE: "ended outside",
            Action.FAIL_ERROR: "pod error",
        }.get(action, status)
        hours, how = self.info.get("max_hours", 24), "terminated" if pod is None else "stopped"
        why = {
            Action.FAIL: f"the run failed on the pod: {error}",
            Action.CANCEL: error or "cancelled on the pod",
            Action.FAIL_DEADLINE: (
                f"the job's deadline passed (--max-hours {hours:g} from its first pod): pod {pod_id} ended "
                f"itself at step {step}; the last checkpoint is on the volume"
            ),
            Action.CANCEL_OUTSIDE: (
                f"pod {pod_id} was {how} outside this launcher (RunPod console or API) before the run ended "
                f"(step {step}): cancelled, not relaunched"
            ),
            Action.FAIL_ERROR: (
                f"RunPod put pod {pod_id} in ERROR (unrecoverable) before the run ended (step {step}); the "
                "last checkpoint is on the volume"
            ),
        }[action]
        attempt["outcome"] = outcome
        if not self.end_pod(attempt, pod):
            return 75
        return self.finish(status, why, 1 if status == "failed" else 130)

    def watchdog(self, attempt: dict, state: dict | None) -> str:
        """Why a started pod is stuck, "" if it is not (states.watchdog); its progress kept in the attempt."""
        step, restarts = (state or {}).get("step") or 0, attempt.get("restarts", 0)
        marks, why = states.watchdog(attempt, step, restarts, time.time(), self.hang_bound())
        attempt |= marks
        return why

    def hang_bound(self) -> float:
        if self.info.get("hang_timeout"):
            return float(self.info["hang_timeout"])
        est = self.lineage.get("estimate") or {}
        step_s = est["hours"] * 3600 / est["steps"] if est.get("steps") and est.get("hours") else 0.0
        return max(states.HANG_FLOOR_S, 10 * step_s)

    def stuck(self, attempt: dict, why: str) -> int:
        """A hung or crash-looping pod: terminated (confirmed), the run failed with why, the customer told."""
        pod_id = attempt["pod_id"]
        say(f"pod {pod_id}: {why}; terminating it")
        attempt["outcome"] = why.split(":")[0]
        if not self.terminate(pod_id):
            return 75
        attempt["ended"] = now_iso()
        return self.finish("failed", f"pod {pod_id} {why}", 1)

    def passed_deadline(self, pod_id: str) -> bool:
        """The pod left its deadline mark before it ended itself (docker/entrypoint.sh, selfend.py)."""
        try:
            return bool(self.volume) and self.volume.has(selfend.deadline_mark(pod_id))
        except vol.VolumeError:
            return False

    def stored(self, vrun: str) -> dict:
        """Where the pod put the run's files in the artifact store, or why they are not there: kept in
        run.json's `stored` (`promote` takes the adapter from there when it never came here), said, and
        returned for the completed event."""
        found = stored.read_marker(self.volume, vrun) if self.volume else None
        self.lineage["stored"] = found or {"error": "the pod's upload did not finish before its end"}
        self.save()
        say(f"run {self.run_id}: {stored.describe(self.lineage['stored'])}")
        return stored.event_field(self.lineage["stored"])


def mirror(run_id: str, fields: dict) -> None:
    """The pod's progress onto our row, never over a final status (`jobs cancel` may have just set one)."""
    with registry.session() as s:
        job = s.get(registry.TrainingJob, run_id)
        if job.status in registry.TERMINAL:
            fields = {k: v for k, v in fields.items() if k != "status"}
        for key, value in fields.items():
            setattr(job, key, value)
        s.commit()
