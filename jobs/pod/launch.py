"""One training run on a RunPod GPU pod: estimate at the live price, create the pod, follow it, keep the
cost under a cap, relaunch after a preemption, record the outcome.

    python -m jobs launch PRESET MODEL [--input FILE | --data DIR] [--gpu "NVIDIA H100 PCIe"] [--gpus N]
                          [--spot [--bid X]] [--max-cost USD] [--max-hours 24] [--max-retries 3]
                          [--volume-path DIR] [--image REF [--registry-auth ID]] [--start-timeout S]
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

The image. By default Axolotl's own cloud image (the hardware file's `image:`): the launcher puts our code
and the wheels it adds to Axolotl's stack on the volume (brightrun/<hash>/), and the pod's start command
installs them, then runs docker/entrypoint.sh (jobs/pod/bundle.py). `--image` / BRIGHTRUN_IMAGE: this
repo's Dockerfile image, pushed, which has the code inside and starts the entrypoint itself.

Cost so far is the launcher's own sum over its pods of billed time × costPerHr, each pod billed from just
before its create to its termination (jobs/pod/billing.py).

The config is rendered once, here, with the pod's paths (jobs/pod_config.py): the local run folder's
config.yaml is the file the pod copies into its run folder and gives Axolotl, byte for byte, so run.json's
config sha256 names what ran. runs/ID/ also holds the data manifest and run.json, whose `launch` says where
and how it ran and whose `attempts` lists one entry per pod (with the sha256 of the config it ran).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from axolotl_configs.profiles import Profiles
from axolotl_configs.profiles import load as load_profile
from axolotl_configs.profiles import names as profile_names
from brightrun.errors import ConfigError
from jobs import preflight, registry, runfolder
from jobs import run as run_mod
from jobs.pod import bundle, owner, runpod, stored
from jobs.pod import config as pod_config
from jobs.pod import volume as vol
from jobs.pod.follow import follow
from jobs.pod.pods import (
    CLOUDS,
    POD_VOLUME,
    client,
    create_or_find,
    forget_job_key,
    new_attempt,
    open_volume,
    say,
    with_account_secrets,
)


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


def preflight_answer(checks: list[preflight.Check], table: bool) -> int:
    """`jobs preflight --launch`: the table, exit 2 on a failure; `jobs launch`: a failure raises."""
    if table:
        preflight.table(checks, "Preflight (launch)")
        if preflight.failures(checks):
            print(f"error: {preflight.refusal(checks)}", file=sys.stderr)
            return 2
        return 0
    preflight.require(checks)
    return 0


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
    start_timeout: float | None = None,
    registry_auth: str | None = None,
    targets_per_step: int | None = None,
    check_only: bool = False,
    max_hours: float = 24.0,
    hang_timeout: float | None = None,
) -> int:
    """`check_only`: the preflight table alone (`jobs preflight --launch`), nothing uploaded or created."""
    from axolotl_configs import data as data_mod
    from axolotl_configs import estimate

    overrides = list(overrides or [])
    if cloud not in CLOUDS:
        raise ConfigError(f"--cloud must be one of {', '.join(CLOUDS)}")
    if network_volume and cloud != "SECURE":
        # docs.runpod.io/storage/network-volumes: "Network volumes are only available for Pods in the
        # Secure Cloud"; with ALL the price would be read across both clouds, below what the pod costs.
        raise ConfigError(
            f"--cloud {cloud} with --network-volume: RunPod attaches network volumes to Secure Cloud pods "
            "only (docs.runpod.io/storage/network-volumes); use --cloud SECURE (the default)"
        )
    if start_timeout is not None and start_timeout <= 0:
        raise ConfigError(f"--start-timeout {start_timeout:g}: seconds, more than 0")
    if hang_timeout is not None and hang_timeout <= 0:
        raise ConfigError(f"--hang-timeout {hang_timeout:g}: seconds, more than 0")
    if not 0 < max_hours <= 24 * 28:
        raise ConfigError(f"--max-hours {max_hours:g}: hours, more than 0 and at most 672 (28 days)")
    registry_auth = registry_auth or os.environ.get("RUNPOD_REGISTRY_AUTH_ID") or None
    runfolder.check_run_id(run_id)
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
    if max_cost is None and hw.get("default_max_cost") is not None:
        # A cap is on unless said otherwise (issue 25): the hardware file's, said in the estimate's output.
        max_cost = float(hw["default_max_cost"])
        say(f"cost cap ${max_cost:.2f}: hardware/{hw_name}.yaml's default_max_cost (--max-cost to change)")
    if hw["gpu_type"] == "none":
        raise ConfigError(f"hardware {hw_name!r} is this machine's CPU: `jobs train` runs it, not launch")
    gpu_id, gpu_count = hw["gpu_type"], int(hw["gpu_count"])
    # Default: Axolotl's own cloud image (the hardware file's), our code installed from the volume at start
    # (jobs/pod/bundle.py); --image: this repo's Dockerfile image, pushed, with the code inside.
    image = image or os.environ.get("BRIGHTRUN_IMAGE") or hw["image"]
    if "/" not in image:
        raise ConfigError(
            f"image {image!r}: RunPod must pull it from a registry. Build this repo's Dockerfile, push it "
            "(docker build -t REGISTRY/brightrun-lora:0.1.0 . && docker push REGISTRY/brightrun-lora:0.1.0) "
            "and pass --image REGISTRY/brightrun-lora:0.1.0 or set BRIGHTRUN_IMAGE; or leave both unset "
            f"for Axolotl's own image ({hw['image']})"
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
    run_id = run_id or runfolder.new_run_id(preset, model)
    run_dir = Path(runs_dir) / run_id
    if run_dir.exists():
        raise ConfigError(f"{run_dir} exists; pick another --run-id")
    rendered = pod_config.render(
        preset,
        model,
        data_dir,
        hw_name,
        overrides,
        allow_drop,
        pod_volume,
        pod_data,
        run_id,
        targets_per_step,
    )
    est = estimate.estimate(preset, model, data_dir, hw_name, rendered=rendered)

    # Preflight (jobs/preflight.py): what the pod would find out once billed, asked before anything is
    # created. The volume first (a network volume names the datacenter), then the live price there: a
    # wrong key stops everything at the first call to RunPod.
    model_check, model_gb = preflight.base_model(profiles, rendered.values, for_pod=True)
    checks = [
        model_check,
        preflight.image_cuda(image, str(hw["cuda"]) if hw.get("cuda") else None, list(runpod.CUDA_VERSIONS)),
        preflight.registry_credential(image, hw["image"], registry_auth, None),
    ]
    try:
        api = client()
    except ConfigError as exc:  # no RUNPOD_API_KEY: nothing below can be asked
        checks.append(preflight.Check("RunPod", preflight.FAIL, str(exc)))
        return preflight_answer(checks, check_only)
    try:
        volume = open_volume(api, volume_dir, network_volume, datacenter)
    except ConfigError as exc:
        checks.append(
            preflight.Check("volume", preflight.FAIL, str(exc).removesuffix(" (nothing was created)"))
        )
        return preflight_answer(checks, check_only)
    if isinstance(volume, vol.S3Volume):
        datacenter = volume.datacenter
        size, which = volume.size_gb, f"network volume {network_volume}"
    else:
        size, which = volume_gb, f"the pod's volume (--volume-gb {volume_gb})"
    data_gb = sum(f.stat().st_size for f in Path(data_dir).rglob("*") if f.is_file()) / preflight.DISK_GB
    keep_gb = preflight.checkpoint_gb(profiles, rendered.values)
    checks.append(preflight.volume_size(which, float(size or 0), model_gb, data_gb, keep_gb))
    try:
        where = datacenter if network_volume else None  # the pod is pinned there: its price, its stock
        price = api.price(gpu_id, gpu_count, spot=spot, secure_cloud=CLOUDS[cloud], datacenter=where)
    except (runpod.AuthError, runpod.NoInstances) as exc:
        checks.append(preflight.Check("price", preflight.FAIL, str(exc)))
        return preflight_answer(checks, check_only)
    if spot:
        if bid is None:
            bid = price
        elif bid < price:
            raise ConfigError(f"--bid {bid} is below RunPod's minimum bid {price} per GPU-hour for {gpu_id}")
        price = bid
    kind = "spot bid" if spot else "on-demand"
    hours = sum(est.hours.values())
    live_cost = hours * gpu_count * price
    est.hardware = {**hw, "price_per_hour": {**hw["price_per_hour"], f"live {kind}": price}}
    est.costs = {**est.costs, f"live {kind}": live_cost}
    estimate.show(est)
    say(f"live price: ${price:.2f}/GPU-h ({kind}, RunPod now) x {gpu_count} GPU(s) -> ${live_cost:.2f}")
    checks += [preflight.cost(live_cost, max_cost), preflight.deadline(hours, max_hours, "--max-hours")]
    if check_only or preflight.failures(checks):
        return preflight_answer(checks, check_only)

    # The data on the volume, the run folder here.
    manifest_path = Path(data_dir) / "manifest.json"
    try:
        vol.put_dir(volume, Path(data_dir), f"datasets/{data_name}", say=say)
    except (vol.VolumeError, OSError) as exc:
        raise ConfigError(f"uploading {data_dir}: {exc} (no pod was created)") from None
    bundle_key = None
    if bundle.installs_code(image):
        try:
            bundle_key = bundle.publish(volume, say=say)
        except (vol.VolumeError, OSError, RuntimeError) as exc:
            raise ConfigError(f"putting our code on the volume: {exc} (no pod was created)") from None
    # The secrets a pod gets are named by its hardware profile: as RunPod secrets (jobs/pod/secrets.py),
    # from this environment's values, or as the account holds them already.
    named = list(hw.get("secrets") or [])
    try:
        secrets, without = with_account_secrets(api, named, [n for n in named if os.environ.get(n)])
    except runpod.RunPodError as exc:
        raise ConfigError(f"reading the account's RunPod secrets: {exc} (no pod was created)") from None
    if without:
        say(
            f"note: {', '.join(without)} neither set here nor a RunPod secret (brightrun_<name>): the pod "
            "runs without it"
        )
    # An S3 artifact store: the pod puts the completed run's files there itself (jobs/pod/stored.py).
    store_vars = stored.pod_vars()
    secrets += [name for name in store_vars if name not in secrets]
    if os.environ.get("ARTIFACT_STORE") and not store_vars:
        say(
            "note: ARTIFACT_STORE is a folder here, which a pod cannot reach: the adapter comes home by fetch"
        )
    env = {
        "BRIGHTRUN_CONFIG": pod_config.pod_path(pod_volume, run_id),  # preset, overrides and all, rendered
        "BRIGHTRUN_RUN_ID": run_id,
        "BRIGHTRUN_VOLUME": pod_volume,
        # The customer knows one job id, whatever folder a retry trains in; and an interruption on the
        # pod is this launcher's to resolve (relaunch or give up), not a failure yet (jobs/payload.py).
        "BRIGHTRUN_JOB_ID": run_id,
        "BRIGHTRUN_FOLLOWED": "1",
        # The pod ends itself once its run has ended (the volume outlives it: a network volume, or the
        # directory that is the pod's volume) and at the job's deadline, so a dead owner cannot leave it
        # billing (docker/entrypoint.sh, jobs/pod/selfend.py). Relaunches keep the first deadline.
        "BRIGHTRUN_SELF_END": "1",
        "BRIGHTRUN_DEADLINE_TS": str(int(time.time() + max_hours * 3600)),
    }
    if bundle_key:
        env["BRIGHTRUN_BUNDLE"] = f"{pod_volume}/{bundle_key}"  # what START_COMMAND installs and runs
    # Where the pod's own events go: WEBHOOK_URL, or (a job of the jobs service) the service's receiver,
    # which passes them on to that job's customer URL with a secret the pod never holds (jobs/service).
    if pod_url := os.environ.get("BRIGHTRUN_POD_WEBHOOK_URL") or os.environ.get("WEBHOOK_URL"):
        env["WEBHOOK_URL"] = pod_url
    pod_spec = {
        "name": run_id,
        "imageName": image,
        "gpuTypeId": gpu_id,
        "gpuCount": gpu_count,
        "cloudType": cloud,
        "containerDiskInGb": 40,
        "volumeMountPath": mount,
        # SSH and Jupyter while the job runs (Axolotl's image starts both: docker/entrypoint.sh); RunPod's
        # format "port/protocol,..." (SDK mutations/pods.py `ports`, e.g. "8080/tcp,22/tcp"; REST default
        # "8888/http,22/tcp", github.com/runpod/docs api-reference/openapi.json).
        "ports": "22/tcp,8888/http",
    }
    if bundle_key:
        # In place of the image's CMD: install our wheels from the volume, then run our entrypoint.
        pod_spec["dockerArgs"] = bundle.START_COMMAND
    if network_volume:
        pod_spec["networkVolumeId"] = network_volume
        pod_spec["dataCenterId"] = datacenter  # a pod mounts only a volume of its own datacenter
    else:
        pod_spec["volumeInGb"] = volume_gb
    cuda = str(hw["cuda"]) if hw.get("cuda") else None
    if cuda:
        # Hosts whose driver is older than the image's CUDA fail with "OCI runtime create failed"
        # (docs.runpod.io pods/manage-pods); Axolotl's own RunPod template sets allowedCudaVersions
        # ["13.0"] (axolotl-ai-cloud/axolotl .runpod/hub.json). Matching is exact, so every version
        # RunPod lists that is not older than the image's is sent.
        try:
            pod_spec["allowedCudaVersions"] = runpod.cuda_at_least(cuda)
        except ValueError as exc:
            raise ConfigError(f"hardware/{hw_name}.yaml's cuda: {exc}") from None
    if registry_auth:
        pod_spec["containerRegistryAuthId"] = registry_auth  # a private image's pull credentials
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
        "cuda": cuda,
        "start_timeout": start_timeout,
        "max_hours": max_hours,
        "hang_timeout": hang_timeout,
        "pod": {k: v for k, v in pod_spec.items() if k != "name"},
        "env": env,  # names and paths only; secrets go by name:
        "secrets": secrets,
        "store_upload": bool(store_vars),  # the follower waits for the pod's upload (stored.json)
    }
    job = {
        "preset": preset,
        "model": model,
        "hardware": hw_name,
        "overrides": overrides,
        "targets_per_step": targets_per_step,
        "lines_dropped_for_length": rendered.derived.get("lines_dropped", 0),
        "estimate": {
            "hours": hours,
            "steps": est.numbers["total_steps"],  # with hours: the watchdog's hang bound (follow.py)
            "cost_on_demand": est.costs["on_demand"],
            "cost_live": live_cost,
            "peak_memory_gb": est.peak_gb,
        },
    }
    # The config's sha256 is known once its file is on the volume (publish, below).
    lineage = runfolder.lineage_of(run_id, run_dir, data_dir, job, config_sha256="")
    lineage["data"]["pod_dir"] = pod_data
    lineage["launch"] = launch_info
    (run_dir / "logs").mkdir(parents=True)
    owner.hold(run_dir)  # this launcher follows it from now: no supervisor starts a second follower
    try:
        shutil.copyfile(manifest_path, run_dir / "data-manifest.json")
        try:
            config = run_dir / "config.yaml"
            lineage["config"]["sha256"] = pod_config.publish(volume, rendered, config, lineage, run_id)
        except (vol.VolumeError, OSError) as exc:
            shutil.rmtree(run_dir)
            raise ConfigError(f"uploading the config: {exc} (no pod was created)") from None
        # Written before the create: a launcher killed after it leaves the time the pod's billing began, which
        # prices the pod the service's orphan sweep terminates (jobs/service/pods.py orphan_pods).
        lineage["launch"]["create_ts"] = created_ts = time.time()
        runfolder.write_json(run_dir / "run.json", lineage)
        try:
            pod, why = create_or_find(api, spot, bid, pod_spec, env, secrets)
        except runpod.CreateUnsure:  # unverified: a pod may exist, so the run folder stays (exit 1, said why)
            raise
        except (runpod.RunPodError, ValueError) as exc:
            forget_job_key(api, run_id)  # made before the create, for a pod that now never boots
            shutil.rmtree(run_dir)
            raise ConfigError(f"{exc} (nothing was created)") from None
        if pod is None:
            forget_job_key(api, run_id)
            shutil.rmtree(run_dir)
            raise ConfigError(f"{why} (nothing was created)")
        lineage["attempts"].append(new_attempt(pod, run_id, lineage["config"]["sha256"], created_ts))
        runfolder.write_json(run_dir / "run.json", lineage)
        runfolder.register(
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
    finally:
        owner.release(run_dir)  # a detached launch's supervisor may follow it now
