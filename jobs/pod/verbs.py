"""`jobs status | logs | fetch | follow RUN` for a launched run: what its pod and its volume say, its files
fetched (again), following it again after a Ctrl-C or from another shell."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from brightrun.errors import ConfigError
from jobs import registry, runfolder
from jobs.pod import billing as pod_billing
from jobs.pod import owner, rest, runpod, stored
from jobs.pod import volume as vol
from jobs.pod.follow import follow
from jobs.pod.pods import client, say, volume_of, volume_state
from jobs.runfolder import NotFound


def _lineage(run_id: str, runs_dir: str) -> dict:
    path = Path(runs_dir) / run_id / "run.json"
    if registry.get_job(run_id) is None or not path.is_file():
        raise NotFound(f"no run {run_id!r} (see `just runs`)")
    return json.loads(path.read_text())


def status(run_id: str, runs_dir: str = "runs") -> int:
    job = registry.get_job(run_id)
    if job is None:
        raise NotFound(f"no run {run_id!r} (see `just runs`)")
    path = Path(runs_dir) / run_id / "run.json"
    lineage = json.loads(path.read_text()) if path.is_file() else {}
    info = lineage.get("launch")
    print(f"run       {run_id}")
    print(f"status    {job.status}" + (f" ({job.error_message})" if job.error_message else ""))
    step, total = job.step, job.total_steps
    loss = (job.metrics or {}).get("loss")
    if info and lineage["attempts"] and job.status not in registry.TERMINAL:
        state = volume_state(volume_of(info), lineage["attempts"][-1]["volume_run_id"])
        if state:
            step, total, loss = state["step"], state["total_steps"], state["metrics"].get("loss", loss)
    print(
        f"step      {step}/{total or '?'}" + (f"  loss {loss:.4f}" if isinstance(loss, int | float) else "")
    )
    if info:
        pod_line = job.pod_id or "-"
        if job.pod_id and os.environ.get("RUNPOD_API_KEY"):
            try:
                pod = rest.client().pod(job.pod_id)
                pod_line += f" ({pod['desiredStatus'] if pod else 'gone'})"
            except runpod.RunPodError as exc:
                pod_line += f" (RunPod: {exc})"
        print(f"pod       {pod_line}  {info['gpus']} × {info['gpu']}" + (" spot" if info["spot"] else ""))
        print(f"retries   {job.retry_count}/{info['max_retries']}")
    cost = job.actual_cost or 0.0
    cap = f" of cap ${info['max_cost']:.2f}" if info and info.get("max_cost") is not None else ""
    est = f" (estimate ${job.estimated_cost:.2f})" if job.estimated_cost is not None else ""
    price = f"; ${job.price_per_hour:.2f}/h now" if job.price_per_hour is not None else ""
    print(f"cost      ${cost:.4f}{cap}{est}; {job.gpu_hours or 0:.4f} GPU-h{price}")
    if lineage.get("stored"):
        print(f"store     {stored.describe(lineage['stored'])}")
    return 0


def logs(run_id: str, runs_dir: str = "runs") -> int:
    lineage = _lineage(run_id, runs_dir)
    info = lineage.get("launch")
    if not info:  # a local run
        for log in sorted((Path(runs_dir) / run_id / "logs").glob("*.log")):
            print(f"==> {log} <==")
            print(log.read_text("utf-8", errors="replace"), end="")
        return 0
    volume = volume_of(info)
    if volume is None:
        raise ConfigError(
            f"run {run_id}'s logs are on network volume {info['network_volume']} (runs/<id>/logs/): set "
            "RUNPOD_S3_ACCESS_KEY and RUNPOD_S3_SECRET_KEY to read them from here"
        )
    with tempfile.TemporaryDirectory() as tmp:
        for vrun in dict.fromkeys(a["volume_run_id"] for a in lineage["attempts"]):
            folder = f"runs/{vrun}/logs"
            try:
                for name in volume.files(folder):
                    if not name.endswith(".log"):
                        continue
                    local = Path(tmp) / vrun / name
                    volume.get(f"{folder}/{name}", local)
                    print(f"==> {volume} {folder}/{name} <==")
                    print(local.read_text("utf-8", errors="replace"), end="")
            except vol.VolumeError as exc:
                raise ConfigError(str(exc)) from None
    return 0


def fetch(run_id: str, runs_dir: str = "runs", checkpoints: bool = False) -> int:
    """`jobs fetch RUN`: the run's files from its volume into runs/RUN/ (again)."""
    lineage = _lineage(run_id, runs_dir)
    info = lineage.get("launch")
    if not info:
        raise ConfigError(f"run {run_id} ran on this machine: its files are in {Path(runs_dir) / run_id}/")
    volume = volume_of(info)
    if volume is None:
        raise ConfigError(
            f"run {run_id}: set RUNPOD_S3_ACCESS_KEY and RUNPOD_S3_SECRET_KEY to read its volume"
        )
    vrun = lineage["attempts"][-1]["volume_run_id"]
    try:
        count = vol.fetch_run(volume, vrun, Path(runs_dir) / run_id, say=say, checkpoints=checkpoints)
    except vol.VolumeError as exc:
        raise ConfigError(str(exc)) from None
    if lineage.get("stored"):  # what the pod put in the artifact store at the run's end (jobs/pod/stored.py)
        say(f"run {run_id}: {stored.describe(lineage['stored'])}")
    return 0 if count else 1


def reattach(run_id: str, runs_dir: str = "runs", poll: float = 30.0) -> int:
    """`jobs follow RUN`: follow a launched run again (after Ctrl-C, or from another shell)."""
    lineage = _lineage(run_id, runs_dir)
    if not lineage.get("launch"):
        raise ConfigError(f"run {run_id} ran on this machine, not on a pod: `jobs show {run_id}`")
    job = registry.get_job(run_id)
    if job.status in registry.TERMINAL:
        say(f"run {run_id} is already {job.status}")
        return 0 if job.status == "completed" else 1
    return follow(run_id, runs_dir, client(), poll)


def billing(run_id: str, runs_dir: str = "runs") -> int:
    """`jobs billing RUN`: each pod's cost as we counted it beside RunPod's own bill for it (billing.py,
    reconcile), kept in run.json. Exit 0 when they agree (or RunPod has not posted a bill yet: said), 1
    when a pod's differ by more than 1%, 75 when RunPod's API fails."""
    lineage = _lineage(run_id, runs_dir)
    if not lineage.get("launch"):
        raise ConfigError(f"run {run_id} ran on this machine: RunPod billed nothing")
    if (holder := owner.holder(Path(runs_dir) / run_id)) is not None:  # it writes run.json: not both
        say(f"run {run_id} is followed by {holder}: its bill is read once the run is final")
        return 75
    try:
        with rest.RestClient() as api:  # billing is REST v2's, whichever API the pods went through
            seen = pod_billing.reconcile(api, lineage["attempts"])
    except runpod.RunPodError as exc:
        say(f"error: RunPod's billing could not be read: {exc}")
        return 75
    runfolder.write_json(Path(runs_dir) / run_id / "run.json", lineage)
    print(f"{'pod':<16} {'ours $':>10} {'RunPod $':>10}")
    for a in lineage["attempts"]:
        theirs = a.get("runpod_billed")
        print(f"{a['pod_id']:<16} {a['cost']:>10.4f} {'pending' if theirs is None else f'{theirs:.4f}':>10}")
    print(f"{'total':<16} {seen['ours']:>10.4f} {seen['runpod']:>10.4f}")
    if seen["pending"]:
        say(f"RunPod lists no bill yet for {', '.join(seen['pending'])}: run this again later")
    if seen["differs"]:
        say(f"ours and RunPod's bill differ by more than 1% for {', '.join(seen['differs'])}")
        return 1
    return 0
