"""Following a launched run to its end (`jobs launch`, `jobs follow RUN`): poll the pod and the run on its
volume, mirror the progress onto our registry row, keep the cost under the cap, relaunch a pod that is gone
before the run finished (on the same volume: from the last checkpoint), give up after --max-retries, and
at the end fetch the adapter. Every end goes to the registry and out as a signed event (jobs/status.py).

Cost so far is the sum of each pod's uptime × costPerHr, taken at every poll: RunPod's runtime goes null
once a pod stops, so it cannot be asked afterwards.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from brightrun.errors import ConfigError
from jobs import registry, runfolder
from jobs.pod import config as pod_config
from jobs.pod import runpod
from jobs.pod import volume as vol
from jobs.pod.pods import (
    ACTIVE,
    CLOUDS,
    POD_VOLUME,
    checkpoint_step,
    create_pod,
    fetch_adapter,
    new_attempt,
    now_iso,
    record_adapter,
    say,
    volume_of,
    volume_state,
    write_report,
)
from jobs.status import Cancelled, set_status

ALERT = 0.8  # share of --max-cost at which the launcher warns, once


def follow(
    run_id: str, runs_dir: str, api: runpod.Client, poll: float = 30.0, settle_s: float = 120.0
) -> int:
    """Follow the run until it ends; the exit code (0 done, 1 failed or capped, 130 cancelled or detached)."""
    return Follower(run_id, runs_dir, api, poll, settle_s).run()


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
        self.shown: str | None = None
        self.last_step = 0

    # -- what it knows ---------------------------------------------------------------------------------------

    def save(self) -> None:
        runfolder.write_json(self.run_dir / "run.json", self.lineage)

    def cost(self) -> float:
        return sum(a["cost"] for a in self.attempts)

    def gpu_hours(self) -> float:
        return sum(a["uptime_s"] for a in self.attempts) / 3600 * self.info["gpus"]

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

    def terminate(self, pod_id: str) -> None:
        try:
            self.api.terminate(pod_id)
        except runpod.RunPodError as exc:
            if "not found" not in str(exc).lower():
                say(f"warning: could not terminate pod {pod_id}: {exc}")

    def settle(self, vrun: str) -> dict | None:
        """After a stop or preemption the trainer saves a checkpoint: wait until the run says it stopped."""
        deadline = time.monotonic() + self.settle_s
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
        except runpod.RateLimited as exc:
            say(f"warning: {exc}")
            time.sleep(self.poll)
            return None
        runtime = (pod or {}).get("runtime") or {}
        if runtime.get("uptimeInSeconds") is not None:
            attempt["uptime_s"] = max(attempt["uptime_s"], int(runtime["uptimeInSeconds"]))
        if pod and pod.get("costPerHr") is not None:
            attempt["cost_per_hr"] = float(pod["costPerHr"])
        attempt["cost"] = attempt["uptime_s"] / 3600 * attempt["cost_per_hr"]
        state = volume_state(self.volume, vrun)
        if registry.get_job(self.run_id).status == "cancelled":  # `jobs cancel RUN` terminated the pod
            attempt["outcome"] = "cancelled"
            attempt["ended"] = now_iso()
            self.save()
            registry.update_job(self.run_id, actual_cost=self.cost(), gpu_hours=self.gpu_hours())
            say(f"run {self.run_id}: cancelled; cost ${self.cost():.4f}")
            return 130
        self.mirror(state)
        desired = pod["desiredStatus"] if pod else "GONE"
        self.show(pod_id, desired, state)
        if self.max_cost is not None:
            self.alert()
            if self.cost() >= self.max_cost:
                return self.cap(attempt, pod, desired)
        if pod is not None and desired not in ("EXITED", "TERMINATED"):
            time.sleep(self.poll)
            return None
        # The pod is down: finished, failed, or taken back.
        if state and state["status"] in ACTIVE and self.volume:
            state = self.settle(vrun)
        attempt["ended"] = now_iso()
        return self.ended(attempt, pod, state)

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
            say(
                f"budget alert: ${self.cost():.2f} spent, {self.cost() / self.max_cost:.0%} of the "
                f"${self.max_cost:.2f} cap; the pod is stopped at the cap"
            )

    def cap(self, attempt: dict, pod: dict | None, desired: str) -> int:
        pod_id, vrun = attempt["pod_id"], attempt["volume_run_id"]
        say(f"cost cap ${self.max_cost:.2f} reached: stopping pod {pod_id} (the trainer saves a checkpoint)")
        if pod and desired != "EXITED":
            self.api.stop(pod_id)
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
            if pod is not None:
                self.terminate(pod_id)
            fetched = fetch_adapter(self.volume, vrun, self.run_dir)
            if fetched:
                record_adapter(self.run_id, self.run_dir, self.lineage)
            path = fetched or f"{self.info['volume_dir'] or POD_VOLUME}/runs/{vrun}/output"
            code = self.finish(
                "completed",
                None,
                0,
                event={"lora_artifact_path": path, "metrics": self.with_lost(state["metrics"])},
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
            if pod is not None:
                self.terminate(pod_id)
            return self.finish("failed", f"the run failed on the pod: {state['error']}", 1)
        if status == "cancelled":
            attempt["outcome"] = "cancelled"
            return self.finish("cancelled", state["error"] or "cancelled on the pod", 130)
        return self.relaunch(attempt, pod, state)

    def relaunch(self, attempt: dict, pod: dict | None, state: dict | None) -> int | None:
        """Lost work and its cost, then a new pod on the same volume (or the give-up)."""
        pod_id, vrun = attempt["pod_id"], attempt["volume_run_id"]
        status = (state or {}).get("status")
        ckpt = checkpoint_step(self.volume, vrun)
        seen = max(self.last_step, (state or {}).get("step", 0))
        attempt_steps = seen - (attempt.get("resumed_from_step") or 0)
        lost = max(0, seen - (ckpt or 0))
        attempt |= {
            "outcome": "preempted"
            if pod is None or "Interrupted" in str(pod.get("lastStatusChange"))
            else "exited",
            "checkpoint_step": ckpt,
            "lost_steps": lost,
            "lost_cost": attempt["cost"] * lost / attempt_steps if attempt_steps > 0 else attempt["cost"],
        }
        if pod is not None:
            self.terminate(pod_id)
        job = registry.get_job(self.run_id)
        registry.update_job(self.run_id, metrics=self.with_lost(job.metrics or {}))
        say(
            f"pod {pod_id} is gone before the run finished (step {seen}, last checkpoint "
            f"{ckpt if ckpt is not None else 'none'}): {lost} step(s) lost, ${attempt['lost_cost']:.4f}"
        )
        info = self.info
        if job.retry_count >= info["max_retries"]:
            return self.finish(
                "failed",
                f"gave up after {job.retry_count} relaunch(es) (--max-retries {info['max_retries']}): "
                f"pod {pod_id} ended at step {seen} with the run {status or 'not started'}",
                1,
            )
        if self.volume and ckpt is None and vol.run_exists(self.volume, vrun):
            # The entrypoint resumes only from a checkpoint; without one it would refuse the existing
            # folder, so the retry starts over under a fresh id on the volume, with a config of its own.
            vrun = f"{self.run_id}.r{job.retry_count + 1}"
            try:
                self.lineage["config"]["sha256"] = pod_config.render_again(
                    self.lineage, self.run_dir, self.volume, vrun
                )
            except (ConfigError, vol.VolumeError, OSError) as exc:
                return self.finish("failed", f"could not relaunch after pod {pod_id} ended: {exc}", 1)
        env = {
            **info["env"],
            "BRIGHTRUN_RUN_ID": vrun,
            "BRIGHTRUN_CONFIG": pod_config.pod_path(info["env"]["BRIGHTRUN_VOLUME"], vrun),
        }
        spec = {"name": self.run_id, **info["pod"]}
        bid = info["bid_per_gpu"]
        if info["spot"]:
            live = self.api.price(info["gpu"], info["gpus"], spot=True, secure_cloud=CLOUDS[info["cloud"]])
            bid = max(bid, live)
        try:
            new_pod = create_pod(self.api, info["spot"], bid, spec, env, info["secrets"])
        except runpod.RunPodError as exc:
            return self.finish("failed", f"could not relaunch after pod {pod_id} ended: {exc}", 1)
        new = new_attempt(new_pod, vrun, self.lineage["config"]["sha256"])
        new["resumed_from_step"] = ckpt if vrun == attempt["volume_run_id"] else 0
        self.attempts.append(new)
        self.save()
        message = (
            f"relaunch {job.retry_count + 1}/{info['max_retries']}: pod {new_pod['id']} on the same volume"
        )
        try:
            set_status(
                self.run_dir,
                self.run_id,
                "queued",
                event=self.after_pod(
                    {"relaunch": True, "message": f"{message} after pod {pod_id} ended at step {seen}"},
                    attempt["volume_run_id"],  # the run that ended; the new one has sent nothing yet
                ),
                pod_id=new_pod["id"],
                retry_count=job.retry_count + 1,
                price_per_hour=new["cost_per_hr"],
            )
        except Cancelled:  # cancelled while the new pod was made: it must not run (or bill)
            self.terminate(new_pod["id"])
            say(f"run {self.run_id}: cancelled; pod {new_pod['id']} terminated; cost ${self.cost():.4f}")
            return 130
        say(message)
        time.sleep(self.poll)
        return None


def mirror(run_id: str, fields: dict) -> None:
    """The pod's progress onto our row, never over a final status (`jobs cancel` may have just set one)."""
    with registry.session() as s:
        job = s.get(registry.TrainingJob, run_id)
        if job.status in registry.TERMINAL:
            fields = {k: v for k, v in fields.items() if k != "status"}
        for key, value in fields.items():
            setattr(job, key, value)
        s.commit()
