"""What a pod costs and whether its container ever ran, per attempt (one pod each, run.json's `attempts`).

Cost is billed time × costPerHr, billed time being the longer of
  * our own clock from just before the create call to just after our terminate or stop returned (or to
    the first poll that saw the pod EXITED or gone): RunPod bills a pod from its creation, image pull and
    a host that never starts the image included, and the container's uptime starts again at each restart;
  * the container's uptimeInSeconds as RunPod reported it (never longer in practice; a fake RunPod may
    run its clock fast, and the larger figure is the conservative one).
The cost cap and its 80% alert use this figure. RunPod documents no creation time on the GraphQL Pod type
(github.com/runpod/runpod-python api/queries/pods.py asks none), so the clock is ours.

Whether a container ran: docker/entrypoint.sh writes pods/POD_ID.started on the volume once it can run the
job, and pods/POD_ID.exited (the job's exit code) once the job is over. A pod with no `.started` after
--start-timeout never ran our code (a host whose CUDA is older than the image's, a private image pulled
without registry credentials, a container that exits before the entrypoint runs): it is terminated and
counted as an attempt.
"""

from __future__ import annotations

import time

from jobs import registry
from jobs.pod import volume as vol

OVER = registry.TERMINAL  # a run's own end, read from its registry on the volume
START_TIMEOUT_S = 15 * 60  # `jobs launch --start-timeout`: image pull included (Axolotl's image is ~10 GB)
# How long a run that is over on the volume may leave its container running before the pod is terminated
# anyway, when the container never says it exited (pods/ID.exited): held-out eval and webhooks take time.
END_GRACE_S = 10 * 60


def started_mark(pod_id: str) -> str:
    return f"pods/{pod_id}.started"


def exited_mark(pod_id: str) -> str:
    return f"pods/{pod_id}.exited"


def end(attempt: dict) -> None:
    """Billing of the attempt's pod ends now (we stopped or terminated it, or saw it EXITED or gone)."""
    attempt["ended_ts"] = attempt.get("ended_ts") or time.time()
    account(attempt)


def account(attempt: dict) -> None:
    """The attempt's billed seconds and cost, up to its end, or up to now while it runs. Each stretch of
    billed time is priced at the price seen when it is added (`priced_s`/`priced_cost` hold what is priced
    already), so a price that changes mid-run re-prices nothing before it (issue 25)."""
    created = attempt.get("created_ts")
    clock = (attempt.get("ended_ts") or time.time()) - created if created else 0.0
    attempt["billed_s"] = max(clock, float(attempt.get("uptime_s") or 0))
    if "priced_s" not in attempt:  # an attempt recorded before stretches were priced: all at its price
        attempt["priced_s"], attempt["priced_cost"] = 0.0, 0.0
    stretch = max(0.0, attempt["billed_s"] - attempt["priced_s"])
    attempt["priced_cost"] += stretch / 3600 * attempt["cost_per_hr"]
    attempt["priced_s"] = max(attempt["priced_s"], attempt["billed_s"])
    attempt["cost"] = attempt["priced_cost"]


def saw_price(attempt: dict, cost_per_hr) -> None:
    """The pod's costPerHr from a poll. What was billed so far is priced first at the price it ran at; a 0
    is ignored: RunPod reports 0 for exited or terminated pods in places (issue 25), which would make
    the rest of the attempt free."""
    try:
        price = float(cost_per_hr)
    except (TypeError, ValueError):
        return
    if price > 0 and price != attempt["cost_per_hr"]:
        account(attempt)
        attempt["cost_per_hr"] = price


def saw_runtime(attempt: dict, runtime: dict) -> None:
    """The container's uptime from a poll; a drop means RunPod started the container again."""
    uptime = runtime.get("uptimeInSeconds")
    if uptime is None:
        return
    uptime = int(uptime)
    if uptime < attempt.get("last_uptime_s", 0):
        attempt["restarts"] = attempt.get("restarts", 0) + 1
    attempt["last_uptime_s"] = uptime
    attempt["uptime_s"] = max(attempt["uptime_s"], uptime)


def started(attempt: dict, volume: vol.Volume | None, runtime: dict, state: dict | None) -> bool:
    """Whether the pod's container got as far as our entrypoint: its mark on the volume, or the run at work
    or over there (an image older than the mark; `jobs follow` after the end), or, with no volume readable
    from here, a runtime. Remembered in the attempt (started_ts) once seen."""
    if not attempt.get("started_ts"):
        seen = bool(state and state["status"] in (*registry.RUNNING, *OVER))
        if volume and not seen:
            try:
                seen = volume.has(started_mark(attempt["pod_id"]))
            except vol.VolumeError:
                seen = bool(runtime)  # unknown: never replace a pod that may be at work
        elif not volume:
            seen = seen or bool(runtime)
        if seen:
            attempt["started_ts"] = time.time()
    return bool(attempt.get("started_ts"))


def container_done(attempt: dict, volume: vol.Volume | None, after: str | None = None) -> bool:
    """The run is over on the volume: is its container done too (eval, uploads, webhooks)? Yes once it wrote
    its exit mark, once RunPod restarted it since, or END_GRACE_S after the end was first seen. `after`: a
    file the container writes last of its work (the artifact store's marker): until it is on the volume, a
    restart is no end (the restarted container finishes the upload, jobs/pod/stored.py)."""
    if not attempt.get("over_seen_ts"):
        attempt |= {"over_seen_ts": time.time(), "restarts_at_over": attempt.get("restarts", 0)}
    restarted = attempt.get("restarts", 0) > attempt["restarts_at_over"]
    if time.time() - attempt["over_seen_ts"] >= END_GRACE_S:
        return True
    try:
        if after and volume and not volume.has(after):
            return False
        return restarted or (bool(volume) and volume.has(exited_mark(attempt["pod_id"])))
    except vol.VolumeError:
        return False


# Ours and RunPod's bill agree when within this share (issue 25's chaos check: "within 1%").
AGREE = 0.01


def reconcile(api, attempts: list[dict]) -> dict:
    """Each ended attempt's cost beside RunPod's own bill for its pod (REST v2's billing endpoint; the
    GraphQL client has none: nothing to compare then). Kept in the attempt (`runpod_billed`), summed:
    {ours, runpod, pending (pods RunPod lists no bill for yet), differs (pods more than AGREE apart)}.
    RunPod posts bills after the fact: run it again later (`jobs billing RUN`) while some are pending."""
    read = getattr(api, "pod_billing", None)
    pending, differs = [], []
    for attempt in attempts:
        if read is None or not attempt.get("ended_ts"):
            pending.append(attempt["pod_id"])
            continue
        billed = read(attempt["pod_id"], attempt.get("created_ts") or attempt["ended_ts"])
        attempt["runpod_billed"] = billed
        if billed is None:
            pending.append(attempt["pod_id"])
        elif abs(attempt["cost"] - billed) > AGREE * max(billed, attempt["cost"], 1e-9):
            differs.append(attempt["pod_id"])
    ours = sum(a["cost"] for a in attempts)
    runpod_sum = sum(a.get("runpod_billed") or 0.0 for a in attempts)
    return {"ours": ours, "runpod": runpod_sum, "pending": pending, "differs": differs}
