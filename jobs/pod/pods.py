"""What the launcher, the follower and the verbs share: the RunPod client, a pod's creation and its attempt
record, and the pod's volume as read from here (its run's registry row and newest checkpoint)."""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from brightrun.errors import ConfigError
from jobs import registry, runfolder, webhooks
from jobs.pod import rest, runpod
from jobs.pod import secrets as pod_secrets
from jobs.pod import volume as vol

POD_VOLUME = "/workspace/data"  # BRIGHTRUN_VOLUME on a real pod, unless the profile says otherwise
# A pod's run not ended yet: queued (the container starts) or at work.
ACTIVE = ("queued", *registry.RUNNING)
CLOUDS = {"SECURE": True, "COMMUNITY": False, "ALL": None}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def client() -> runpod.Client | rest.RestClient:
    """The pod API: REST v2 (jobs/pod/rest.py), or GraphQL with RUNPOD_API=graphql."""
    try:
        return rest.client()
    except runpod.RunPodError as exc:  # no key, or RUNPOD_API misspelled
        raise ConfigError(str(exc)) from None


def volume_of(info: dict) -> vol.Volume | None:
    """The volume a launched run trains on, from run.json's `launch`; None when it cannot be read from
    here (a network volume without the S3 keys in this environment: then only the pod is followed)."""
    if info.get("volume_dir"):
        return vol.LocalVolume(info["volume_dir"])
    if info.get("network_volume") and info.get("datacenter"):
        try:
            return vol.S3Volume(info["network_volume"], info["datacenter"], info.get("s3_endpoint"))
        except vol.VolumeError as exc:
            say(f"warning: {exc}")
    return None


def volume_state(volume: vol.Volume | None, vrun: str) -> dict | None:
    return vol.registry_row(volume, vrun) if volume else None


def checkpoint_step(volume: vol.Volume | None, vrun: str) -> int | None:
    return vol.checkpoint_step(volume, vrun) if volume else None


def open_volume(
    api: runpod.Client, volume_dir: str | None, network_volume: str | None, datacenter: str | None
) -> vol.Volume:
    """The local directory, or the network volume (its datacenter from the account's volumes)."""
    if volume_dir:
        return vol.LocalVolume(volume_dir)
    try:
        found = {v["id"]: v for v in api.network_volumes()}
    except runpod.RunPodError as exc:
        raise ConfigError(f"{exc} (nothing was created)") from None
    if network_volume not in found:
        mine = ", ".join(f"{v['id']} ({v['name']}, {v['dataCenterId']})" for v in found.values()) or "none"
        raise ConfigError(f"--network-volume {network_volume}: not on this RunPod account (yours: {mine})")
    home = found[network_volume]["dataCenterId"]
    if datacenter and datacenter != home:
        raise ConfigError(f"--datacenter {datacenter}: network volume {network_volume} is in {home}")
    try:
        volume = vol.S3Volume(network_volume, home)
        volume.folders("")  # the keys and the endpoint work, before anything is created
    except vol.VolumeError as exc:
        raise ConfigError(f"{exc} (nothing was created)") from None
    volume.size_gb = found[network_volume].get("size")  # GB (RunPod's networkVolumes), for preflight
    return volume


def gone(pod: dict | None) -> bool:
    """RunPod no longer has the pod: its query answers null, or it lists it TERMINATED (REST may)."""
    return pod is None or pod.get("desiredStatus") == "TERMINATED"


def create_pod(api: runpod.Client, spot: bool, bid: float | None, spec: dict, env: dict, secrets: list[str]):
    key = run_signing_key(spec["name"], secrets)
    if key:
        secrets = [name for name in secrets if name != "TRAINING_WEBHOOK_SECRET"]
    if (key or secrets) and not isinstance(api, rest.RestClient):
        # RUNPOD_API=graphql: the secrets still go as RunPod secrets, through REST v2's account secrets
        # (GraphQL has none), never as values GraphQL's pod query would show (review of issue 25).
        with rest.RestClient() as account:
            env = {**env, **pod_secrets.provide(account, list(secrets)), **job_key(account, spec, key)}
        secrets = []
    elif key:
        env = {**env, **job_key(api, spec, key)}
    if spot:
        return api.rent_interruptable(bid, env=env, secrets=secrets, **spec)
    return api.deploy_on_demand(env=env, secrets=secrets, **spec)


@contextmanager
def account_api(api: runpod.Client):
    """The client for the account's secrets: REST v2's (GraphQL has none), this one when it is REST already,
    else one made for the call (RUNPOD_API=graphql)."""
    if isinstance(api, rest.RestClient):
        yield api
        return
    with rest.RestClient() as account:
        yield account


def run_signing_key(run_id: str, secrets: list[str]) -> str | None:
    """The key a run's pods sign their events with, when they get one of their own. A job of the jobs
    service: its job's key for the service's receiver, never the customer's secret (the service holds that
    one, and passes the events on). Else, where run keys are required, the run's own key, never the master
    secret (jobs/webhooks.py, run_key)."""
    if key := os.environ.get("BRIGHTRUN_POD_WEBHOOK_KEY"):
        return key
    master = os.environ.get("TRAINING_WEBHOOK_SECRET")
    if webhooks.run_keys_required() and "TRAINING_WEBHOOK_SECRET" in secrets and master:
        return webhooks.run_key(master, run_id)
    return None


def job_key(account: rest.RestClient, spec: dict, key: str | None) -> dict:
    """The run's signing key as its own RunPod secret, made at each create (so never written into run.json
    with the rest of the pod's env), referenced from the pod's env, never a value RunPod's API would show."""
    if not key:
        return {}
    name = pod_secrets.job_secret(spec["name"])
    return {
        "TRAINING_WEBHOOK_SECRET": pod_secrets.put(account, name, key, f"webhook key of run {spec['name']}")
    }


def forget_job_key(api: runpod.Client, run_id: str) -> None:
    """The run is over and its pods gone: its signing key's secret is deleted (none: nothing to do). A
    failure is said, not raised: the key signs only this run's events, which the service no longer takes.
    Where no run key is made (run_signing_key), there is none to delete and RunPod is not asked."""
    if not run_signing_key(run_id, ["TRAINING_WEBHOOK_SECRET"]):
        return
    name = pod_secrets.job_secret(run_id)
    try:
        with account_api(api) as account:
            pod_secrets.forget(account, name)
    except (runpod.RunPodError, ConfigError) as exc:
        say(
            f"warning: run {run_id}'s webhook key stays on the account as RunPod secret {name!r} ({exc}); "
            "delete it in the RunPod console (Secrets)"
        )


def with_account_secrets(api, names: list[str], set_here: list[str]) -> tuple[list[str], list[str]]:
    """The secrets a launch sends: those set in this environment, plus the hardware file's others that the
    account holds as RunPod secrets already (made in the console: used as they are); and the names in
    neither place, for the launcher to say the pod runs without them."""
    rest_of = [n for n in names if n not in set_here]
    if not rest_of:
        return list(set_here), []
    with account_api(api) as account:
        held = pod_secrets.account_secrets(account)
    found = [n for n in rest_of if pod_secrets.secret_name(n) in held]
    return [*set_here, *found], [n for n in rest_of if n not in found]


def create_or_find(
    api: runpod.Client, spot: bool, bid: float | None, spec: dict, env: dict, secrets: list[str], known=()
) -> tuple[dict | None, str]:
    """create_pod, and after an ambiguous failure (RunPod may have made the pod: runpod.CreateUnsure) the
    pod looked up by its name, the run id (myself { pods }, SDK queries/pods.py; a pod's name is ours to
    give): (pod, "") when created or found, (None, why) only when the account verifiably has no such pod.
    `known`: ids of the run's earlier pods, which carry the same name. Several found: the first is
    adopted, the others terminated. The lookup failing too raises runpod.CreateUnsure, saying so."""
    try:
        return create_pod(api, spot, bid, spec, env, secrets), ""
    except runpod.CreateUnsure as exc:
        unsure = exc
    try:
        found = find_by_name(api, spec["name"], known)
    except runpod.RunPodError as exc:
        raise runpod.CreateUnsure(
            f"{unsure}; looking it up failed too ({exc}): a pod named {spec['name']!r} may exist and bill. "
            "Look for it in the RunPod console (Pods) and terminate it"
        ) from None
    if not found:
        return None, f"{unsure}; verified: the account has no pod named {spec['name']!r}"
    for extra in found[1:]:
        try:
            api.terminate(extra["id"])
        except runpod.RunPodError as exc:
            say(f"warning: could not terminate duplicate pod {extra['id']}: {exc}")
    say(f"{unsure}: RunPod made pod {found[0]['id']} ({spec['name']}) anyway; adopting it")
    return found[0], ""


# How long after a create the account's pod list may still lack the pod: RunPod publishes no figure
# (issue 25: "no allowance for listing lag"); the lookup after an unsure create looks over this window.
LISTING_LAG_S = 30.0


def find_by_name(api: runpod.Client, name: str, known=(), window: float = LISTING_LAG_S) -> list[dict]:
    """The account's pods named `name` (not in `known`), asked again, backing off, until one is listed or
    the window is over (an empty answer then: verified)."""
    deadline, delay = time.monotonic() + window, 1.0
    while True:
        found = [p for p in api.pods() if p.get("name") == name and p["id"] not in known]
        left = deadline - time.monotonic()
        if found or left <= 0:
            return found
        time.sleep(min(delay, left))
        delay = min(delay * 2, 10.0)


def new_attempt(pod: dict, vrun: str, config_sha256: str, created_ts: float) -> dict:
    """One pod's record; `created_ts`: our clock just before its create call (jobs/pod/billing.py)."""
    return {
        "pod_id": pod["id"],
        "volume_run_id": vrun,
        "config_sha256": config_sha256,  # the config this pod was given (configs/VRUN/ on the volume)
        "started": now_iso(),
        "created_ts": created_ts,
        "cost_per_hr": float(pod.get("costPerHr") or 0),
        "uptime_s": 0,
        "billed_s": 0.0,
        "cost": 0.0,
        "outcome": None,
    }


# -- the end of a run, from here ------------------------------------------------------------------------


def fetch_adapter(volume: vol.Volume | None, vrun: str, run_dir: Path) -> str | None:
    """The finished run's adapter, logs and metrics into the local run folder (checkpoints stay on the
    volume); the local output/ path, or None when the volume cannot be read from here."""
    if volume is None:
        return None
    try:
        vol.fetch_run(volume, vrun, run_dir, say=say)
    except (vol.VolumeError, OSError) as exc:
        say(f"warning: could not fetch the adapter ({exc}); `jobs fetch {run_dir.name}` tries again")
        return None
    return str((run_dir / "output").resolve())


def record_adapter(run_id: str, run_dir: Path, lineage: dict) -> None:
    """The fetched adapter as the run's artifact (path, size, sha256, LoRA settings), as a local run does."""
    import yaml

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    try:
        runfolder.record_adapter(run_id, run_dir, lineage, config, None)
    except runfolder.RunError as exc:
        say(f"warning: {exc}")


def write_report(run_dir: Path) -> None:
    """runs/RUN/report.html from our side: the pod's own report cannot know what its pods cost."""
    from jobs import report

    try:
        say(f"report: {report.write(run_dir)}")
    except (OSError, ValueError, KeyError) as exc:
        say(f"warning: no report ({exc})")
