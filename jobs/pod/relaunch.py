"""A launched run's next pod, after one ended before the run did (taken back, exited, never started): the
work and money that pod lost, then a new pod on the same volume (resuming from its last checkpoint, or
under a fresh id with a config of its own when there is none), or the give-up after --max-retries.

Below jobs/pod/follow.py, which calls it with its Follower: this module never imports follow.py (not even
for a type), so the two are no circle (issue 25, item 8)."""

from __future__ import annotations

import time

from brightrun.errors import ConfigError
from jobs import registry
from jobs.pod import config as pod_config
from jobs.pod import runpod
from jobs.pod import volume as vol
from jobs.pod.pods import (
    CLOUDS,
    LISTING_LAG_S,
    checkpoint_step,
    create_or_find,
    find_by_name,
    forget_job_key,
    new_attempt,
    say,
)
from jobs.status import Cancelled, set_status


def relaunch(
    follower,  # the jobs/pod/follow.py Follower of the run
    attempt: dict,
    pod: dict | None,
    state: dict | None,
    outcome: str | None = None,
    why: str = "",
) -> int | None:
    """Lost work and its cost, then a new pod on the same volume (or the give-up). `outcome` and `why`:
    what ended the attempt, when the launcher knows (a pod that never started)."""
    pod_id, vrun = attempt["pod_id"], attempt["volume_run_id"]
    status = (state or {}).get("status")
    ckpt = checkpoint_step(follower.volume, vrun)
    seen = max(follower.last_step, (state or {}).get("step", 0))
    attempt_steps = seen - (attempt.get("resumed_from_step") or 0)
    lost = max(0, seen - (ckpt or 0))
    attempt |= {
        # RunPod documents no reason field: a spot pod down before its run finished was taken back (what
        # an interruptible pod is for); an on-demand one ended by itself. lastStatusChange is prose.
        "outcome": outcome or ("preempted" if follower.info["spot"] else "exited"),
        "checkpoint_step": ckpt,
        "lost_steps": lost,
        "lost_cost": attempt["cost"] * lost / attempt_steps if attempt_steps > 0 else attempt["cost"],
    }
    if not follower.end_pod(attempt, pod):
        return 75  # no second pod on the volume while the first may still run (issue 25)
    job = registry.get_job(follower.run_id)
    registry.update_job(follower.run_id, metrics=follower.with_lost(job.metrics or {}))
    say(
        f"pod {pod_id} is gone before the run finished (step {seen}, last checkpoint "
        f"{ckpt if ckpt is not None else 'none'}): {lost} step(s) lost, ${attempt['lost_cost']:.4f}"
    )
    info = follower.info
    if job.retry_count >= info["max_retries"]:
        return follower.finish(
            "failed",
            f"gave up after {job.retry_count} relaunch(es) (--max-retries {info['max_retries']}): "
            f"pod {pod_id} ended at step {seen} with the run {status or 'not started'}"
            + (f" ({why})" if why else ""),
            1,
        )
    if follower.volume and ckpt is None and vol.run_exists(follower.volume, vrun):
        # The entrypoint resumes only from a checkpoint; without one it would refuse the existing
        # folder, so the retry starts over under a fresh id on the volume, with a config of its own.
        vrun = f"{follower.run_id}.r{job.retry_count + 1}"
        try:
            follower.lineage["config"]["sha256"] = pod_config.render_again(
                follower.lineage, follower.run_dir, follower.volume, vrun
            )
        except (ConfigError, vol.VolumeError, OSError) as exc:
            return follower.finish("failed", f"could not relaunch after pod {pod_id} ended: {exc}", 1)
    env = {
        **info["env"],
        "BRIGHTRUN_RUN_ID": vrun,
        "BRIGHTRUN_CONFIG": pod_config.pod_path(info["env"]["BRIGHTRUN_VOLUME"], vrun),
    }
    spec = {"name": follower.run_id, **info["pod"]}
    bid = info["bid_per_gpu"]
    created_ts = time.time()
    try:
        if info["spot"]:  # the minimum bid now, where the pod must run (a network volume's datacenter)
            where = info["datacenter"] if info.get("network_volume") else None
            live = follower.api.price(
                info["gpu"], info["gpus"], spot=True, secure_cloud=CLOUDS[info["cloud"]], datacenter=where
            )
            bid = max(bid, live)
            created_ts = time.time()
        known = [a["pod_id"] for a in follower.attempts]
        # A follower killed after the create and before the attempt is saved leaves this: the next one
        # adopts the pod it made (follow.py adopt_unrecorded) rather than leave it billing unowned.
        resumed = ckpt if vrun == attempt["volume_run_id"] else 0
        follower.lineage["creating"] = {"created_ts": created_ts, "vrun": vrun, "resumed_from_step": resumed}
        follower.save()
        new_pod, why = create_or_find(follower.api, info["spot"], bid, spec, env, info["secrets"], known)
    except runpod.CreateUnsure as exc:  # a pod may exist: `creating` stays, the next follower looks for it
        say(f"run {follower.run_id}: {exc}; `jobs follow {follower.run_id}` looks for it again")
        return 75
    except runpod.RunPodError as exc:
        follower.lineage.pop("creating", None)
        return follower.finish("failed", f"could not relaunch after pod {pod_id} ended: {exc}", 1)
    follower.lineage.pop("creating", None)
    if new_pod is None:
        return follower.finish("failed", f"could not relaunch after pod {pod_id} ended: {why}", 1)
    new = new_attempt(new_pod, vrun, follower.lineage["config"]["sha256"], created_ts)
    new["resumed_from_step"] = resumed
    follower.attempts.append(new)
    follower.save()
    message = f"relaunch {job.retry_count + 1}/{info['max_retries']}: pod {new_pod['id']} on the same volume"
    try:
        set_status(
            follower.run_dir,
            follower.run_id,
            "queued",
            event=follower.after_pod(
                {"relaunch": True, "message": f"{message} after pod {pod_id} ended at step {seen}"},
                attempt["volume_run_id"],  # the run that ended; the new one has sent nothing yet
            ),
            pod_id=new_pod["id"],
            retry_count=job.retry_count + 1,
            price_per_hour=new["cost_per_hr"],
        )
    except Cancelled:  # cancelled while the new pod was made: it must not run (or bill)
        if follower.terminate(new_pod["id"]):
            forget_job_key(follower.api, follower.run_id)
        say(f"run {follower.run_id}: cancelled; pod {new_pod['id']} terminated; cost ${follower.cost():.4f}")
        return 130
    say(message)
    time.sleep(follower.poll)
    return None


def adopt_unrecorded(follower) -> int | None:
    """A relaunch whose follower died between its create and saving the new attempt (run.json's
    `creating`): the pod it made, named the run id and not among the attempts, looked up over the
    listing lag and adopted as the run's next attempt (several: the others terminated); terminated
    instead when the run was cancelled or ended meanwhile. When the account verifiably has none, the
    relaunch is owed still: the last attempt is marked ours to replace, so the table relaunches it
    rather than read its gone pod as ended outside. Returns 75 (undecided, `creating` kept for the next
    follower) when RunPod cannot say, or a pod found is not confirmed gone; else None: follow on."""
    creating = follower.lineage.get("creating")
    if not creating:
        return None
    known = [a["pod_id"] for a in follower.attempts]
    window = max(0.0, LISTING_LAG_S - (time.time() - creating["created_ts"]))
    try:
        found = find_by_name(follower.api, follower.run_id, known, window=window)
    except runpod.RunPodError as exc:
        say(f"run {follower.run_id}: looking for the pod its last follower was creating: {exc}; undecided")
        return 75
    job = registry.get_job(follower.run_id)
    over = job is None or job.status in registry.TERMINAL
    for extra in found if over else found[1:]:  # a cancelled run's pod must not run (or bill)
        if not follower.terminate(extra["id"]):
            return 75  # not confirmed gone: `creating` stays, so the next follower looks again
    if found and not over:
        sha = follower.lineage["config"]["sha256"]
        attempt = new_attempt(found[0], creating["vrun"], sha, creating["created_ts"])
        attempt["resumed_from_step"] = creating.get("resumed_from_step", 0)
        follower.attempts.append(attempt)
        mine = found[0]["id"]
        say(f"run {follower.run_id}: adopting pod {mine}, made by a follower that died before saving it")
        registry.update_job(
            follower.run_id,
            pod_id=mine,
            price_per_hour=attempt["cost_per_hr"],
            retry_count=job.retry_count + 1,
        )
    elif not found and follower.attempts:
        follower.attempts[-1]["stopped_by"] = "this launcher: a relaunch interrupted before its pod"
    follower.lineage.pop("creating")
    follower.save()
    return None
