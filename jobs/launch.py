"""One training run on a RunPod GPU pod: estimate at the live price, create the pod, follow it, keep the
cost under a cap, relaunch after a preemption, record the outcome.

    python -m jobs launch PRESET MODEL [--input FILE | --data DIR] [--gpu "NVIDIA H100 PCIe"] [--gpus N]
                          [--spot [--bid X]] [--max-cost USD] [--max-retries 3] [--volume-path DIR]
                          [key=value ...]
    python -m jobs status RUN | logs RUN | cancel RUN | follow RUN | fetch RUN

The volume. The pod trains on a persistent volume mounted at /workspace/data (the hardware profile's
volume_path, or --volume-path; docker/entrypoint.sh's BRIGHTRUN_VOLUME; Axolotl's cloud image keeps its own
environment under /workspace): the converted data in datasets/NAME-<manifest hash>, the config in
configs/ID/, the run in runs/ID with its own registry (runs/registry.db). Two cases (jobs/volume.py):
  * `--network-volume ID`: a RunPod network volume. The launcher uploads the data through RunPod's
    S3-compatible API (RUNPOD_S3_ACCESS_KEY / RUNPOD_S3_SECRET_KEY), creates the pod in the volume's
    datacenter, reads the run's progress from the volume the same way, and downloads the adapter at the
    end (`jobs fetch RUN` again at any time).
  * BRIGHTRUN_VOLUME_DIR set: a local directory that *is* the pod's volume (tests/fake_runpod.py's
    workspace; a network filesystem mounted here). Pods see the same path.

Cost so far is the launcher's own sum of each pod's uptime × costPerHr, taken at every poll: RunPod's
runtime goes null once a pod stops, so it cannot be asked afterwards.

The config is rendered once, here, with the pod's paths (jobs/pod_config.py): the local run folder's
config.yaml is the file the pod copies into its run folder and gives Axolotl, byte for byte, so run.json's
config sha256 names what ran. runs/ID/ also holds the data manifest and run.json, whose `launch` says where
and how it ran and whose `attempts` lists one entry per pod (with the sha256 of the config it ran).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from axolotl_configs.profiles import Profiles
from axolotl_configs.profiles import load as load_profile
from axolotl_configs.profiles import names as profile_names
from brightrun.errors import ConfigError
from jobs import pod_config, registry, runpod, webhooks
from jobs import run as run_mod
from jobs import volume as vol
from jobs.status import Cancelled, set_status

SECRETS = ("TRAINING_WEBHOOK_SECRET", "HF_TOKEN", "WANDB_API_KEY")  # sent by name; values read at create
POD_VOLUME = "/workspace/data"  # BRIGHTRUN_VOLUME on a real pod, unless the profile says otherwise
ACTIVE = ("queued", "preprocessing", "model_loaded", "training")
CLOUDS = {"SECURE": True, "COMMUNITY": False, "ALL": None}
ALERT = 0.8  # share of --max-cost at which the launcher warns, once


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def pick_hardware(gpu: str | None, gpus: int | None, hardware: str | None, model: str) -> str:
    """A hardware profile: named, or the one whose gpu_type and gpu_count match --gpu/--gpus."""
    if hardware:
        return hardware
    if gpu is None and gpus is None:
        hw = load_profile("model", model)["default_hardware"]
        if load_profile("hardware", hw)["gpu_type"] != "none":
            return hw
        gpu = "NVIDIA H100 PCIe"
    found = []
    for name in profile_names("hardware"):
        hw = load_profile("hardware", name)
        if (
            (gpu is None or hw["gpu_type"] == gpu)
            and hw["gpu_count"] == (gpus or 1)
            and hw["gpu_type"] != "none"
        ):
            found.append(name)
    if not found:
        raise ConfigError(
            f"no hardware profile for {gpus or 1} × {gpu!r} in axolotl_configs/hardware/ "
            f"({', '.join(profile_names('hardware'))}); add one or pass --hardware"
        )
    return found[0]


def client() -> runpod.Client:
    try:
        return runpod.Client()
    except runpod.AuthError as exc:
        raise ConfigError(str(exc)) from None


# -- the pod's volume, seen from here -----------------------------------------------------------------------


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


# -- launch --------------------------------------------------------------------------------------------------


def launch(
    preset: str,
    model: str,
    input_file: str | None = None,
    data_dir: str | None = None,
    gpu: str | None = None,
    gpus: int | None = None,
    hardware: str | None = None,
    spot: bool = False,
    bid: float | None = None,
    max_cost: float | None = None,
    max_retries: int = 3,
    overrides: list[str] | None = None,
    runs_dir: str = "runs",
    poll: float = 30.0,
    cloud: str = "SECURE",
    network_volume: str | None = None,
    datacenter: str | None = None,
    volume_gb: int = 50,
    allow_drop: bool = False,
    run_id: str | None = None,
    follow_run: bool = True,
    image: str | None = None,
    volume_path: str | None = None,
) -> int:
    from axolotl_configs import data as data_mod
    from axolotl_configs import estimate

    overrides = list(overrides or [])
    if cloud not in CLOUDS:
        raise ConfigError(f"--cloud must be one of {', '.join(CLOUDS)}")
    run_mod.check_run_id(run_id)
    volume_dir = os.environ.get("BRIGHTRUN_VOLUME_DIR") or None
    if volume_dir and network_volume:
        raise ConfigError("--network-volume and BRIGHTRUN_VOLUME_DIR both name the pod's volume: pick one")
    if not volume_dir and not network_volume:
        raise ConfigError(
            "the pod needs its data on a volume: --network-volume ID (a RunPod network volume in a "
            "datacenter with the S3 API; the launcher uploads the data there), or "
            "BRIGHTRUN_VOLUME_DIR=<local dir that is the pod's volume>"
        )
    hw_name = pick_hardware(gpu, gpus, hardware, model)
    profiles = Profiles.load(preset, model, hw_name)
    hw = profiles.hardware
    if hw["gpu_type"] == "none":
        raise ConfigError(f"hardware {hw_name!r} is this machine's CPU: `jobs train` runs it, not launch")
    gpu_id, gpu_count = hw["gpu_type"], int(hw["gpu_count"])
    image = image or os.environ.get("BRIGHTRUN_IMAGE") or hw["image"]
    if "/" not in image:
        raise ConfigError(
            f"image {image!r}: RunPod must pull it from a registry. Build this repo's Dockerfile, push it "
            "(docker build -t REGISTRY/brightrun-lora:0.1.0 . && docker push REGISTRY/brightrun-lora:0.1.0) "
            "and pass --image REGISTRY/brightrun-lora:0.1.0 or set BRIGHTRUN_IMAGE"
        )
    mount = (volume_path or hw.get("volume_path") or POD_VOLUME).rstrip("/")
    if not mount.startswith("/") or mount == "/workspace":
        raise ConfigError(
            f"volume path {mount!r} (--volume-path, or hardware/{hw_name}.yaml's volume_path): an absolute "
            f"path on the pod other than / and /workspace (Axolotl's image keeps its Python there); "
            f"Axolotl's docs mount volumes at {POD_VOLUME}"
        )
    data_dir = data_dir or run_mod.ensure_converted(input_file or run_mod.DEFAULT_INPUT, None)

    # Where the pod finds the data and keeps the run: the config is rendered once, here, with those paths.
    manifest_sha = data_mod.read(data_dir).manifest_sha256
    data_name = f"{Path(data_dir).resolve().name}-{manifest_sha[:8]}"
    pod_volume = vol.LocalVolume(volume_dir).pod_root if volume_dir else mount
    pod_data = f"{pod_volume}/datasets/{data_name}"
    run_id = run_id or run_mod.new_run_id(preset, model)
    run_dir = Path(runs_dir) / run_id
    if run_dir.exists():
        raise ConfigError(f"{run_dir} exists; pick another --run-id")
    rendered = pod_config.render(
        preset, model, data_dir, hw_name, overrides, allow_drop, pod_volume, pod_data, run_id
    )
    est = estimate.estimate(preset, model, data_dir, hw_name, rendered=rendered)

    # The live price: the first call to RunPod, so a wrong key stops everything here.
    api = client()
    try:
        price = api.price(gpu_id, gpu_count, spot=spot, secure_cloud=CLOUDS[cloud])
    except runpod.AuthError as exc:
        raise ConfigError(f"{exc} (nothing was created)") from None
    except runpod.NoInstances as exc:
        raise ConfigError(f"{exc} (nothing was created)") from None
    if spot:
        if bid is None:
            bid = price
        elif bid < price:
            raise ConfigError(f"--bid {bid} is below RunPod's minimum bid {price} per GPU-hour for {gpu_id}")
        price = bid
    volume = open_volume(api, volume_dir, network_volume, datacenter)
    if isinstance(volume, vol.S3Volume):
        datacenter = volume.datacenter
    kind = "spot bid" if spot else "on-demand"
    hours = sum(est.hours.values())
    live_cost = hours * gpu_count * price
    est.hardware = {**hw, "price_per_hour": {**hw["price_per_hour"], f"live {kind}": price}}
    est.costs = {**est.costs, f"live {kind}": live_cost}
    estimate.show(est)
    say(f"live price: ${price:.2f}/GPU-h ({kind}, RunPod now) x {gpu_count} GPU(s) -> ${live_cost:.2f}")
    if max_cost is not None and live_cost > max_cost:
        raise ConfigError(
            f"the estimate ${live_cost:.2f} exceeds --max-cost ${max_cost:.2f}; nothing was created"
        )

    # The data on the volume, the run folder here.
    manifest_path = Path(data_dir) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    try:
        vol.put_dir(volume, Path(data_dir), f"datasets/{data_name}", say=say)
    except (vol.VolumeError, OSError) as exc:
        raise ConfigError(f"uploading {data_dir}: {exc} (no pod was created)") from None
    secrets = [name for name in SECRETS if os.environ.get(name)]
    env = {
        "BRIGHTRUN_CONFIG": pod_config.pod_path(pod_volume, run_id),  # preset, overrides and all, rendered
        "BRIGHTRUN_RUN_ID": run_id,
        "BRIGHTRUN_VOLUME": pod_volume,
        # The customer knows one job id, whatever folder a retry trains in; and an interruption on the
        # pod is this launcher's to resolve (relaunch or give up), not a failure yet (jobs/payload.py).
        "BRIGHTRUN_JOB_ID": run_id,
        "BRIGHTRUN_FOLLOWED": "1",
    }
    if os.environ.get("WEBHOOK_URL"):
        env["WEBHOOK_URL"] = os.environ["WEBHOOK_URL"]
    pod_spec = {
        "name": run_id,
        "imageName": image,
        "gpuTypeId": gpu_id,
        "gpuCount": gpu_count,
        "cloudType": cloud,
        "containerDiskInGb": 40,
        "volumeMountPath": mount,
    }
    if network_volume:
        pod_spec["networkVolumeId"] = network_volume
        pod_spec["dataCenterId"] = datacenter  # a pod mounts only a volume of its own datacenter
    else:
        pod_spec["volumeInGb"] = volume_gb
    launch_info = {
        "gpu": gpu_id,
        "gpus": gpu_count,
        "cloud": cloud,
        "spot": spot,
        "bid_per_gpu": bid if spot else None,
        "price_per_gpu_hour": price,
        "max_cost": max_cost,
        "max_retries": max_retries,
        "allow_drop": allow_drop,  # a relaunch that cannot resume renders its own config (follow)
        "volume_dir": str(volume.root) if isinstance(volume, vol.LocalVolume) else None,
        "network_volume": network_volume,
        "datacenter": datacenter,
        "s3_endpoint": volume.endpoint if isinstance(volume, vol.S3Volume) else None,
        "pod": {k: v for k, v in pod_spec.items() if k != "name"},
        "env": env,  # names and paths only; secrets go by name:
        "secrets": secrets,
    }
    lineage = {
        "run_id": run_id,
        "preset": preset,
        "model": model,
        "hardware": hw_name,
        "overrides": overrides,
        "input": {"path": manifest["input"]["path"], "sha256": manifest["input"]["sha256"]},
        "data": {
            "dir": data_dir,
            "pod_dir": pod_data,
            "manifest_sha256": manifest_sha,
            "files": {k: v["sha256"] for k, v in manifest["outputs"].items()},
        },
        "config": {"path": str(run_dir / "config.yaml"), "sha256": None},
        "lines_dropped_for_length": rendered.derived.get("lines_dropped", 0),
        "estimate": {
            "hours": hours,
            "cost_on_demand": est.costs["on_demand"],
            "cost_live": live_cost,
            "peak_memory_gb": est.peak_gb,
        },
        "launch": launch_info,
        "adapter": None,
        "attempts": [],
    }
    (run_dir / "logs").mkdir(parents=True)
    shutil.copyfile(manifest_path, run_dir / "data-manifest.json")
    try:
        config = run_dir / "config.yaml"
        lineage["config"]["sha256"] = pod_config.publish(volume, rendered, config, lineage, run_id)
    except (vol.VolumeError, OSError) as exc:
        shutil.rmtree(run_dir)
        raise ConfigError(f"uploading the config: {exc} (no pod was created)") from None
    run_mod.write_json(run_dir / "run.json", lineage)
    try:
        pod = create_pod(api, spot, bid, pod_spec, env, secrets)
    except (runpod.RunPodError, ValueError) as exc:
        shutil.rmtree(run_dir)
        raise ConfigError(f"{exc} (nothing was created)") from None
    lineage["attempts"].append(new_attempt(pod, run_id, lineage["config"]["sha256"]))
    run_mod.write_json(run_dir / "run.json", lineage)
    run_mod.register(
        run_id,
        run_dir,
        lineage,
        rendered.values,
        None,
        status="queued",
        pod_id=pod["id"],
        started_at=registry.now(),
    )
    registry.update_job(
        run_id,
        estimated_cost=live_cost,
        gpu_type=gpu_id,
        gpu_count=gpu_count,
        price_per_hour=float(pod.get("costPerHr") or price * gpu_count),
    )
    say(f"run {run_id}: pod {pod['id']} ({gpu_count} × {gpu_id}, {kind} ${pod.get('costPerHr')}/h)")
    if not follow_run:
        return 0
    return follow(run_id, runs_dir, api, poll)


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
    return volume


def create_pod(api: runpod.Client, spot: bool, bid: float | None, spec: dict, env: dict, secrets: list[str]):
    if webhooks.run_keys_required() and "TRAINING_WEBHOOK_SECRET" in secrets:
        # The pod gets its own job's key, never the master secret (jobs/webhooks.py, run_key); made here
        # at each create, so it is never written into run.json with the rest of the pod's env.
        key = webhooks.run_key(os.environ["TRAINING_WEBHOOK_SECRET"], spec["name"])
        env = {**env, "TRAINING_WEBHOOK_SECRET": key}
        secrets = [name for name in secrets if name != "TRAINING_WEBHOOK_SECRET"]
    if spot:
        return api.rent_interruptable(bid, env=env, secrets=secrets, **spec)
    return api.deploy_on_demand(env=env, secrets=secrets, **spec)


def new_attempt(pod: dict, vrun: str, config_sha256: str) -> dict:
    return {
        "pod_id": pod["id"],
        "volume_run_id": vrun,
        "config_sha256": config_sha256,  # the config this pod was given (configs/VRUN/ on the volume)
        "started": now_iso(),
        "cost_per_hr": float(pod.get("costPerHr") or 0),
        "uptime_s": 0,
        "cost": 0.0,
        "outcome": None,
    }


# -- follow --------------------------------------------------------------------------------------------------


def follow(
    run_id: str, runs_dir: str, api: runpod.Client, poll: float = 30.0, settle_s: float = 120.0
) -> int:
    """Poll the pod and the volume until the run ends; returns the exit code (0 done, 1 failed or capped,
    130 cancelled or detached)."""
    run_dir = Path(runs_dir) / run_id
    lineage = json.loads((run_dir / "run.json").read_text())
    info = lineage["launch"]
    volume = volume_of(info)
    gpus, max_cost = info["gpus"], info["max_cost"]
    attempts = lineage["attempts"]
    shown = None
    last_step = 0

    def save():
        run_mod.write_json(run_dir / "run.json", lineage)

    def cost_so_far() -> float:
        return sum(a["cost"] for a in attempts)

    def with_lost(metrics: dict) -> dict:
        """The pod's latest numbers plus ours: work and money lost to preemptions."""
        if not any("lost_steps" in a for a in attempts):
            return metrics
        lost = sum(a.get("lost_steps") or 0 for a in attempts)
        return {**metrics, "lost_steps": lost, "lost_cost": sum(a.get("lost_cost") or 0 for a in attempts)}

    def gpu_hours() -> float:
        return sum(a["uptime_s"] for a in attempts) / 3600 * gpus

    def after_pod(event: dict | None, vrun: str) -> dict:
        """Our event numbered after the last one of the pod's run `vrun` (jobs/volume.py, event_sequence)."""
        if not volume or not os.environ.get("WEBHOOK_URL"):
            return event or {}
        return {**(event or {}), "after": vol.event_sequence(volume, vrun)}

    def finish(status: str, error: str | None, code: int, event: dict | None = None, **fields) -> int:
        """The run's end as this launcher sees it, with what only it knows (cost, the fetched adapter),
        to the registry and as an event: the customer hears of a give-up or a cost cap too."""
        attempts[-1]["ended"] = attempts[-1].get("ended") or now_iso()
        attempts[-1]["outcome"] = attempts[-1]["outcome"] or status
        save()
        try:
            set_status(
                run_dir,
                run_id,
                status,
                event=after_pod(event, attempts[-1]["volume_run_id"]),
                error_message=error,
                completed_at=registry.now(),
                actual_cost=cost_so_far(),
                gpu_hours=gpu_hours(),
                **fields,
            )
        except Cancelled:  # `jobs cancel` got there first: it stays cancelled, with what it cost
            registry.update_job(run_id, actual_cost=cost_so_far(), gpu_hours=gpu_hours())
            status, code = "cancelled", 130
        say(f"run {run_id}: {status}" + (f" ({error})" if error else "") + f"; cost ${cost_so_far():.4f}")
        return code

    def terminate(pod_id: str) -> None:
        try:
            api.terminate(pod_id)
        except runpod.RunPodError as exc:
            if "not found" not in str(exc).lower():
                say(f"warning: could not terminate pod {pod_id}: {exc}")

    def settle(vrun: str) -> dict | None:
        """After a stop or preemption the trainer saves a checkpoint: wait until the run says it stopped."""
        deadline = time.monotonic() + settle_s
        state = volume_state(volume, vrun)
        while volume and time.monotonic() < deadline and (state is None or state["status"] in ACTIVE):
            time.sleep(max(poll, 0.2))
            state = volume_state(volume, vrun)
        return state

    try:
        while True:
            attempt = attempts[-1]
            pod_id, vrun = attempt["pod_id"], attempt["volume_run_id"]
            try:
                pod = api.pod(pod_id)
            except runpod.RateLimited as exc:
                say(f"warning: {exc}")
                time.sleep(poll)
                continue
            runtime = (pod or {}).get("runtime") or {}
            if runtime.get("uptimeInSeconds") is not None:
                attempt["uptime_s"] = max(attempt["uptime_s"], int(runtime["uptimeInSeconds"]))
            if pod and pod.get("costPerHr") is not None:
                attempt["cost_per_hr"] = float(pod["costPerHr"])
            attempt["cost"] = attempt["uptime_s"] / 3600 * attempt["cost_per_hr"]
            state = volume_state(volume, vrun)
            job = registry.get_job(run_id)
            if job.status == "cancelled":  # `jobs cancel RUN` terminated the pod
                attempt["outcome"] = "cancelled"
                attempt["ended"] = now_iso()
                save()
                registry.update_job(run_id, actual_cost=cost_so_far(), gpu_hours=gpu_hours())
                say(f"run {run_id}: cancelled; cost ${cost_so_far():.4f}")
                return 130
            fields = {"actual_cost": cost_so_far(), "gpu_hours": gpu_hours()}
            if state:
                last_step = max(last_step, state["step"]) if state["status"] in ACTIVE else state["step"]
                fields |= {
                    "step": state["step"],
                    "total_steps": state["total_steps"],
                    "metrics": with_lost(state["metrics"]),
                }
                if state["status"] in ACTIVE:
                    fields["status"] = state["status"]
            mirror(run_id, fields)
            desired = pod["desiredStatus"] if pod else "GONE"
            loss = (state or {}).get("metrics", {}).get("loss")
            line = (
                f"pod {pod_id} {desired} | run {(state or {}).get('status', '-')} "
                f"step {(state or {}).get('step', 0)}/{(state or {}).get('total_steps') or '?'}"
                + (f" loss {loss:.4f}" if isinstance(loss, int | float) else "")
                + f" | ${cost_so_far():.4f}"
                + (f" of ${max_cost:.2f}" if max_cost is not None else "")
            )
            if line != shown:
                say(line)
                shown = line

            if max_cost is not None and cost_so_far() >= ALERT * max_cost and not lineage.get("budget_alert"):
                # Once per run (run.json remembers it across `jobs follow`), before the cap stops the pod.
                lineage["budget_alert"] = now_iso()
                save()
                say(
                    f"budget alert: ${cost_so_far():.2f} spent, {cost_so_far() / max_cost:.0%} of the "
                    f"${max_cost:.2f} cap; the pod is stopped at the cap"
                )
            if max_cost is not None and cost_so_far() >= max_cost:
                say(
                    f"cost cap ${max_cost:.2f} reached: stopping pod {pod_id} "
                    "(the trainer saves a checkpoint)"
                )
                if pod and desired != "EXITED":
                    api.stop(pod_id)
                state = settle(vrun)
                attempt["ended"] = now_iso()
                attempt["outcome"] = "stopped: cost cap"
                attempt["checkpoint_step"] = checkpoint_step(volume, vrun)
                step_fields = {"step": state["step"]} if state else {}
                return finish(
                    "interrupted",
                    f"cost cap ${max_cost:.2f} reached (${cost_so_far():.2f} spent); the pod is stopped "
                    f"with its volume, the last checkpoint is kept",
                    1,
                    event={"resumable": False},
                    **step_fields,
                )

            if pod is not None and desired not in ("EXITED", "TERMINATED"):
                time.sleep(poll)
                continue

            # The pod is down: finished, failed, or taken back.
            if state and state["status"] in ACTIVE and volume:
                state = settle(vrun)
            status = (state or {}).get("status")
            attempt["ended"] = now_iso()
            if status == "completed":
                attempt["outcome"] = "completed"
                if pod is not None:
                    terminate(pod_id)
                fetched = fetch_adapter(volume, vrun, run_dir)
                if fetched:
                    record_adapter(run_id, run_dir, lineage)
                path = fetched or f"{info['env']['BRIGHTRUN_VOLUME']}/runs/{vrun}/output"
                code = finish(
                    "completed",
                    None,
                    0,
                    event={"lora_artifact_path": path, "metrics": with_lost(state["metrics"])},
                    step=state["step"],
                    total_steps=state["total_steps"],
                    metrics=with_lost(state["metrics"]),
                    artifact_path=path,
                )
                if fetched:
                    write_report(run_dir)
                return code
            if status == "failed":
                attempt["outcome"] = "failed"
                if pod is not None:
                    terminate(pod_id)
                return finish("failed", f"the run failed on the pod: {state['error']}", 1)
            if status == "cancelled":
                attempt["outcome"] = "cancelled"
                return finish("cancelled", state["error"] or "cancelled on the pod", 130)
            # Preempted (or the container died): lost work and its cost, then a new pod on the volume.
            ckpt = checkpoint_step(volume, vrun)
            seen = max(last_step, (state or {}).get("step", 0))
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
                terminate(pod_id)
            job = registry.get_job(run_id)
            registry.update_job(run_id, metrics=with_lost(job.metrics or {}))
            say(
                f"pod {pod_id} is gone before the run finished (step {seen}, last checkpoint "
                f"{ckpt if ckpt is not None else 'none'}): {lost} step(s) lost, ${attempt['lost_cost']:.4f}"
            )
            if job.retry_count >= info["max_retries"]:
                return finish(
                    "failed",
                    f"gave up after {job.retry_count} relaunch(es) (--max-retries {info['max_retries']}): "
                    f"pod {pod_id} ended at step {seen} with the run {status or 'not started'}",
                    1,
                )
            if volume and ckpt is None and vol.run_exists(volume, vrun):
                # The entrypoint resumes only from a checkpoint; without one it would refuse the existing
                # folder, so the retry starts over under a fresh id on the volume, with a config of its own.
                vrun = f"{run_id}.r{job.retry_count + 1}"
                try:
                    lineage["config"]["sha256"] = render_again(lineage, run_dir, volume, vrun)
                except (ConfigError, vol.VolumeError, OSError) as exc:
                    return finish("failed", f"could not relaunch after pod {pod_id} ended: {exc}", 1)
            pod_volume = info["env"]["BRIGHTRUN_VOLUME"]
            env = {
                **info["env"],
                "BRIGHTRUN_RUN_ID": vrun,
                "BRIGHTRUN_CONFIG": pod_config.pod_path(pod_volume, vrun),
            }
            spec = {"name": run_id, **info["pod"]}
            bid = info["bid_per_gpu"]
            if info["spot"]:
                bid = max(
                    bid, api.price(info["gpu"], info["gpus"], spot=True, secure_cloud=CLOUDS[info["cloud"]])
                )
            try:
                pod = create_pod(api, info["spot"], bid, spec, env, info["secrets"])
            except runpod.RunPodError as exc:
                return finish("failed", f"could not relaunch after pod {pod_id} ended: {exc}", 1)
            new = new_attempt(pod, vrun, lineage["config"]["sha256"])
            new["resumed_from_step"] = ckpt if vrun == attempt["volume_run_id"] else 0
            attempts.append(new)
            save()
            message = (
                f"relaunch {job.retry_count + 1}/{info['max_retries']}: pod {pod['id']} on the same volume"
            )
            try:
                set_status(
                    run_dir,
                    run_id,
                    "queued",
                    event=after_pod(
                        {"relaunch": True, "message": f"{message} after pod {pod_id} ended at step {seen}"},
                        attempt["volume_run_id"],  # the run that ended; the new one has sent nothing yet
                    ),
                    pod_id=pod["id"],
                    retry_count=job.retry_count + 1,
                    price_per_hour=new["cost_per_hr"],
                )
            except Cancelled:  # cancelled while the new pod was made: it must not run (or bill)
                terminate(pod["id"])
                say(f"run {run_id}: cancelled; pod {pod['id']} terminated; cost ${cost_so_far():.4f}")
                return 130
            say(message)
            time.sleep(poll)
    except KeyboardInterrupt:
        save()
        say(
            f"\nstopped following; the pod keeps running (and billing): `jobs follow {run_id}` picks it up "
            f"again, `jobs status {run_id}`, `jobs cancel {run_id}`"
        )
        return 130


def render_again(lineage: dict, run_dir: Path, volume: vol.Volume, vrun: str) -> str:
    """The config of a fresh volume run (its run folder is in it), from what launch() rendered the first
    from; it becomes the run's config.yaml here, as it is the one the adapter will come from."""
    info = lineage["launch"]
    rendered = pod_config.render(
        lineage["preset"],
        lineage["model"],
        lineage["data"]["dir"],
        lineage["hardware"],
        lineage["overrides"],
        info.get("allow_drop", False),
        info["env"]["BRIGHTRUN_VOLUME"],
        lineage["data"]["pod_dir"],
        vrun,
    )
    return pod_config.publish(volume, rendered, run_dir / "config.yaml", lineage, vrun)


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
        run_mod.record_adapter(run_id, run_dir, lineage, config, None)
    except run_mod.RunError as exc:
        say(f"warning: {exc}")


def write_report(run_dir: Path) -> None:
    """runs/RUN/report.html from our side: the pod's own report cannot know what its pods cost."""
    from jobs import report

    try:
        say(f"report: {report.write(run_dir)}")
    except (OSError, ValueError, KeyError) as exc:
        say(f"warning: no report ({exc})")


def mirror(run_id: str, fields: dict) -> None:
    """The pod's progress onto our row, never over a final status (`jobs cancel` may have just set one)."""
    with registry.session() as s:
        job = s.get(registry.TrainingJob, run_id)
        if job.status in registry.TERMINAL:
            fields = {k: v for k, v in fields.items() if k != "status"}
        for key, value in fields.items():
            setattr(job, key, value)
        s.commit()


# -- status, logs, cancel ---------------------------------------------------------------------------------


def _lineage(run_id: str, runs_dir: str) -> dict:
    path = Path(runs_dir) / run_id / "run.json"
    if registry.get_job(run_id) is None or not path.is_file():
        raise run_mod.NotFound(f"no run {run_id!r} (see `just runs`)")
    return json.loads(path.read_text())


def status(run_id: str, runs_dir: str = "runs") -> int:
    job = registry.get_job(run_id)
    if job is None:
        raise run_mod.NotFound(f"no run {run_id!r} (see `just runs`)")
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
                pod = runpod.Client().pod(job.pod_id)
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


def cancel(run_id: str, runs_dir: str = "runs", db_url: str | None = None) -> str:
    """A pod run (jobs.run.cancel sends it here, for the CLI and the API alike): terminate its pod (the
    volume stays) and mark the run cancelled; the launcher following it sees the status and exits."""
    job = registry.get_job(run_id, db_url)
    if job is None:
        raise run_mod.NotFound(f"no run {run_id!r} (see `just runs`)")
    if job.status in registry.TERMINAL:
        raise run_mod.Conflict(f"run {run_id} is already {job.status}")
    api = client()
    try:
        api.terminate(job.pod_id)
    except runpod.AuthError as exc:
        raise ConfigError(str(exc)) from None
    except runpod.RunPodError as exc:
        if "not found" not in str(exc).lower():
            # Not marked cancelled: the pod may still run (and bill). The caller can try again.
            raise run_mod.Conflict(
                f"could not terminate pod {job.pod_id} ({exc}); nothing changed, try again"
            ) from None
    run_dir = Path(runs_dir) / run_id
    if run_dir.is_dir():
        (run_dir / run_mod.CANCEL_FILE).touch()
    message = f"cancelled on request (pod {job.pod_id} terminated)"
    set_status(run_dir, run_id, "cancelled", db_url, error_message=message, completed_at=registry.now())
    return "cancelled"
