"""A start request when the service runs its jobs on RunPod (`jobs service --runs pods`): checked here as a
local start is (the data converted, the config rendered and accepted by Axolotl), priced at RunPod's live
price, then queued for the dispatcher, which starts `jobs launch` for it (jobs/service/queue.py): one pod
per job through the launcher every pod run uses, which creates it, follows it to its end and terminates it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from sqlalchemy.engine import Engine

from axolotl_configs.profiles import Profiles
from brightrun.errors import ConfigError
from jobs.service import customer, queue, secrets, start


def live_price(hardware: dict, spot: bool) -> tuple[float, str]:
    """USD per GPU-hour now (RunPod's gpuTypes), or the hardware file's figure when RunPod does not say."""
    from jobs.pod import runpod
    from jobs.pod.pods import client

    try:
        return float(
            client().price(hardware["gpu_type"], int(hardware["gpu_count"]), spot=spot)
        ), "RunPod now"
    except (runpod.RunPodError, ValueError, TypeError):
        kind = "spot" if spot else "on_demand"
        return float(hardware["price_per_hour"][kind]), f"axolotl_configs/hardware/{hardware['name']}.yaml"


def start_job(
    engine: Engine,
    settings,
    asked: dict,
    record: dict,
    path: Path,
    overrides: list[str],
    batch: int | None,
    hardware: str,
    base_url: str,
) -> dict:
    from axolotl_configs import estimate, render

    model, preset = record["model"], settings.preset
    try:
        data_dir, made = start.convert(settings.data_root, path)
    except ConfigError as exc:
        raise customer.Refused(422, str(exc)) from None
    try:
        checked = start.check_overrides(overrides, data_dir)
        with tempfile.TemporaryDirectory() as tmp:
            rendered = render.render(
                preset, model, str(data_dir), hardware, checked, f"{tmp}/config.yaml", targets_per_step=batch
            )
        est = estimate.estimate(preset, model, str(data_dir), hardware, rendered=rendered)
    except ConfigError as exc:
        if made:
            shutil.rmtree(data_dir, ignore_errors=True)
        raise customer.Refused(422, str(exc)) from None
    spot = asked["runpod_config"].get("instance_type") == "spot"
    hw = Profiles.load(preset, model, hardware).hardware
    price, source = live_price(hw, spot)
    hours = sum(est.hours.values())
    record |= {
        "data": str(data_dir),
        "overrides": checked,
        "batch_size": batch,
        "hardware": hardware,
        "spot": spot,
        "receiver": f"{base_url}/api/training/webhook",  # where the pod's events go (the service's receiver)
    }
    sealed = secrets.seal(settings.service_secret, asked["webhook_secret"])
    queue.add(engine, asked["job_id"], asked["webhook_url"], sealed, "pod", record)
    return {
        "success": True,
        "job_id": asked["job_id"],
        "status": "queued",
        "pod_id": None,  # RunPod's id once the launcher has created the pod (status, and every event)
        "endpoint_url": f"{base_url}/training/status/{asked['job_id']}",
        "estimated_steps": est.numbers["total_steps"],
        "estimated_duration_minutes": round(hours * 60, 1),
        "estimated_cost_usd": round(hours * int(hw["gpu_count"]) * price, 2),
        "price_per_gpu_hour": price,
        "price_source": source,
        "queue_position": 0,  # its own pod: nothing to wait for
    }
