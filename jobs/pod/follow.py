"""Following a launched run to its end (`jobs launch`, `jobs follow RUN`): poll the pod and the run on its
volume, mirror the progress onto our registry row, keep the cost under the cap, relaunch a pod that is gone
before the run finished (on the same volume: from the last checkpoint), give up after --max-retries, and
at the end fetch the adapter. Every end goes to the registry and out as a signed event (jobs/status.py).

Cost so far is the sum over its pods of billed time × costPerHr, from just before each create to its
termination, restarts and image pulls included (jobs/pod/billing.py).

The run's end is the run's own status on the volume, not the pod's: RunPod restarts a container whose
process exits (dstack issue 1142), so a pod may say RUNNING for ever after its run completed. Once the
run is over on the volume and its container has exited (pods/POD.exited, docker/entrypoint.sh), the
adapter is fetched and then the pod terminated; a pod whose container never starts (--start-timeout) is
terminated and counted as an attempt.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from jobs import registry, runfolder
from jobs.pod import billing, owner, runpod, selfend, stored
from jobs.pod import volume as vol
from jobs.pod.pods import (
    ACTIVE,
    POD_VOLUME,
    checkpoint_step,
    fetch_adapter,
    now_iso,
    record_adapter,
    say,
    volume_of,
    volume_state,
    write_report,
)
from jobs.pod.relaunch import relaunch
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
# Polls in a row that RunPod's API may fail (each after the client's own retries, backing off up to
# 10 polls or 5 min apart: about 40 min at the default 30 s poll) before the follower stops the pod.
API_FAILURES = 8
# Terminates sent before a pod not confirmed gone leaves the run undecided (backing off from the poll
# interval, doubling, at most a minute apart: about 2 min in all at the default poll).
TERMINATE_TRIES = 6
# The watchdog (issue 25, item 3): container restarts with no new step before the run counts as
# crash-looping, and the least time with no new step before it counts as hung (model loading included:
# ~15 min for the 70B's weights, models/70b-qlora.yaml load_minutes).
CRASH_LOOP = 3
HANG_FLOOR_S = 3600.0


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
        say(f"run {self.run_id}: {status}" + (f" ({error})" if error else "") + f"; cost ${self.cost():.4f}")
        return code

    def terminate(self, pod_id: str) -> bool:
        """Terminate the pod and see it gone (RunPod's pod query answers null): sent again, backing off,
        while RunPod refuses it or still lists the pod. False: it may still bill, said with what to do;
        the caller leaves the run undecided (issue 25: a run is not final while its pod exists)."""
        last = ""
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
            if pod is None or pod.get("desiredStatus") == "TERMINATED":
                for attempt in self.attempts:  # billing ends once RunPod no longer has the pod
                    if attempt["pod_id"] == pod_id:
                        billing.end(attempt)
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
        if desired in ("EXITED", "TERMINATED", "GONE"):
            billing.end(attempt)  # billing stops with the container (a stopped pod bills its disk only)
        billing.account(attempt)
        state = volume_state(self.volume, vrun)
        if registry.get_job(self.run_id).status == "cancelled":  # `jobs cancel RUN` terminated the pod
            attempt["outcome"] = "cancelled"
            attempt["ended"] = now_iso()
            billing.end(attempt)
            self.save()
            registry.update_job(self.run_id, actual_cost=self.cost(), gpu_hours=self.gpu_hours())
            say(f"run {self.run_id}: cancelled; cost ${self.cost():.4f}")
            return 130
        self.mirror(state)
        self.show(pod_id, desired, state)
        if self.max_cost is not None:
            self.alert()
            if self.cost() >= self.max_cost:
                return self.cap(attempt, pod, desired)
        if pod is not None and desired not in ("EXITED", "TERMINATED"):
            if not billing.started(attempt, self.volume, runtime, state):
                if time.time() - attempt.get("created_ts", time.time()) >= self.start_timeout:
                    return self.no_start(attempt, state, runtime)
            elif (
                state
                and state["status"] in billing.OVER
                and billing.container_done(attempt, self.volume, self.upload_marker(state, vrun))
            ):
                attempt["ended"] = now_iso()
                return self.ended(attempt, pod, state)
            elif not (state and state["status"] in billing.OVER) and (why := self.watchdog(attempt, state)):
                return self.stuck(attempt, why)
            time.sleep(self.poll)
            return None
        # The pod is down: finished, failed, or taken back. A container still at work had SIGTERM, and
        # SIGKILL about 5 s later on a reclaimed spot pod: its last status is worth that long, not more.
        if state and state["status"] in ACTIVE and self.volume:
            state = self.settle(vrun, min(self.settle_s, DOWN_SETTLE_S))
        attempt["ended"] = now_iso()
        return self.ended(attempt, pod, state)

    def api_failed(self, attempt: dict, exc: runpod.RunPodError) -> int | None:
        """RunPod's API failing: poll again later, backing off; after API_FAILURES in a row (or a key
        RunPod refuses), stop the pod so it no longer bills (its volume and last checkpoint stay) and
        exit 75 saying how to go on. Never a traceback, never a pod left billing unsaid."""
        self.failures += 1
        pod_id = attempt["pod_id"]
        if self.failures < API_FAILURES and not isinstance(exc, runpod.AuthError):
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
        return self.relaunch(attempt, None, state, outcome="no start", why=why)

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

    def ended(self, attempt: dict, pod: dict | None, state: dict | None) -> int | None:
        """The pod is down: the run's own status on the volume says how it ended; none (or one still at
        work) means the pod was taken back or died, and a relaunch goes on."""
        pod_id, vrun = attempt["pod_id"], attempt["volume_run_id"]
        status = (state or {}).get("status")
        if status == "completed":
            attempt["outcome"] = "completed"
            # Fetched first, then terminated: a pod's own volume (not a network volume) goes with it.
            fetched = fetch_adapter(self.volume, vrun, self.run_dir)
            where = self.stored(vrun) if self.info.get("store_upload") else None
            if pod is not None and not self.terminate(pod_id):
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
        if status == "failed":
            attempt["outcome"] = "failed"
            if pod is not None and not self.terminate(pod_id):
                return 75
            return self.finish("failed", f"the run failed on the pod: {state['error']}", 1)
        if status == "cancelled":
            attempt["outcome"] = "cancelled"
            if pod is not None and not self.terminate(pod_id):
                return 75
            return self.finish("cancelled", state["error"] or "cancelled on the pod", 130)
        if self.passed_deadline(pod_id):
            attempt["outcome"] = "deadline"
            if pod is not None and not self.terminate(pod_id):
                return 75
            return self.finish(
                "failed",
                f"the job's deadline passed (--max-hours {self.info.get('max_hours', 24):g} from its first "
                f"pod): pod {pod_id} ended itself at step {(state or {}).get('step', self.last_step)}; the "
                "last checkpoint is on the volume",
                1,
            )
        reclaimed = self.info["spot"] and pod is not None and pod.get("desiredStatus") == "EXITED"
        if not attempt.get("stopped_by") and not reclaimed:
            # Only a spot reclaim relaunches: RunPod keeps a reclaimed pod EXITED with its disk. A pod gone,
            # or an on-demand pod stopped, that this launcher did not end was ended outside it (the RunPod
            # console, the customer's app): their decision, not a failure to undo by renting another.
            attempt["outcome"] = "ended outside"
            if pod is not None and not self.terminate(pod_id):
                return 75
            how = "terminated" if pod is None else "stopped"
            return self.finish(
                "cancelled",
                f"pod {pod_id} was {how} outside this launcher (RunPod console or API) before the run "
                f"ended (step {(state or {}).get('step', self.last_step)}): cancelled, not relaunched",
                130,
            )
        return self.relaunch(attempt, pod, state)

    def watchdog(self, attempt: dict, state: dict | None) -> str | None:
        """Why a started pod is stuck (issue 25, item 3), or None: its container restarted CRASH_LOOP times
        with no new step (a trainer dying without writing its end: the OOM killer, a segfault), or no new
        step for the hang bound (--hang-timeout; default: HANG_FLOOR_S or 10 estimated steps, the longer)."""
        step, now = (state or {}).get("step") or 0, time.time()
        if step > attempt.get("progress_step", -1):
            attempt |= {
                "progress_step": step,
                "progress_ts": now,
                "restarts_at_progress": attempt.get("restarts", 0),
            }
            return None
        restarts = attempt.get("restarts", 0) - attempt["restarts_at_progress"]
        if restarts >= CRASH_LOOP:
            return f"crash loop: its container restarted {restarts} times with no new step (last step {step})"
        bound = self.hang_bound()
        if now - attempt["progress_ts"] >= bound:
            return f"hung: no new step for {bound:g} s (last step {step}; --hang-timeout to change)"
        return None

    def hang_bound(self) -> float:
        if self.info.get("hang_timeout"):
            return float(self.info["hang_timeout"])
        est = self.lineage.get("estimate") or {}
        step_s = est["hours"] * 3600 / est["steps"] if est.get("steps") and est.get("hours") else 0.0
        return max(HANG_FLOOR_S, 10 * step_s)

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

    def relaunch(
        self, attempt: dict, pod: dict | None, state: dict | None, outcome: str | None = None, why: str = ""
    ) -> int | None:
        return relaunch(self, attempt, pod, state, outcome, why)


def mirror(run_id: str, fields: dict) -> None:
    """The pod's progress onto our row, never over a final status (`jobs cancel` may have just set one)."""
    with registry.session() as s:
        job = s.get(registry.TrainingJob, run_id)
        if job.status in registry.TERMINAL:
            fields = {k: v for k, v in fields.items() if k != "status"}
        for key, value in fields.items():
            setattr(job, key, value)
        s.commit()
