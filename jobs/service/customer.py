"""The checks of the customer's start request (their "RunPod API": jobs/service/training_api.py routes it).

A start is checked whole before anything is made: the body's keys and values (422 naming the field), then
(training_api.start_job) the dataset fetched at once (its signed URL expires in an hour) and converted
(the converter's own message), the config rendered and accepted by Axolotl. A refused request leaves no
run folder, no row, no pod. Their field names throughout (customer-start-flow.md).
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import Request

from axolotl_configs import profiles as profiles_mod
from axolotl_configs.profiles import shown
from brightrun.errors import ConfigError
from jobs.service import dataset, start

log = logging.getLogger("jobs.service")
# Their seven (customer-start-flow.md), each to what it sets. batch_size: trained pairs per optimizer step
# (their app counts steps as pairs / batch_size × epochs); the renderer turns it into
# gradient_accumulation_steps for packed rows (axolotl_configs/render.py, derive).
HYPERPARAMETERS = (
    "num_epochs",
    "batch_size",
    "learning_rate",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "warmup_ratio",
)
BODY_KEYS = (
    "job_id",
    "dataset_url",
    "hyperparameters",
    "webhook_url",
    "webhook_secret",
    "base_model",
    "runpod_config",
)
RUNPOD_CHOICES = {"gpu_type": ("H100_PCIE", "A100_80GB"), "instance_type": ("spot", "on_demand")}
MAX_DURATION_HOURS = (float, 0.1, 168.0)
SECRET_LENGTH = (8, 512)


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def field_error(name: str, message: str) -> Refused:
    return Refused(422, f"{name}: {message}")


def check_webhook_url(url) -> str:
    """https (http only to loopback, for tests), and WEBHOOK_URL_ALLOW's pattern when it is set."""
    if not isinstance(url, str) or not 0 < len(url) <= 2048:
        raise field_error("webhook_url", "a URL (https://…/api/training/webhook) of at most 2048 characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- a port out of range raises here, not at the first event
    except ValueError:
        raise field_error("webhook_url", f"{shown(url)} is not a URL") from None
    if parts.username or parts.password or not parts.hostname or any(c < " " for c in url):
        raise field_error("webhook_url", f"{shown(url)} is not a URL we send to (a host, no user:password@)")
    if parts.scheme != "https" and not (parts.scheme == "http" and dataset.loopback(parts.hostname)):
        raise field_error("webhook_url", f"{shown(url)}: https only (plain http only to this machine)")
    allow = os.environ.get("WEBHOOK_URL_ALLOW")
    if allow and not re.fullmatch(allow, url):
        raise field_error("webhook_url", f"{shown(url)} is not allowed by this service's WEBHOOK_URL_ALLOW")
    return url


def check_hyperparameters(given, data_dir: Path | None = None) -> tuple[list[str], int | None]:
    """Their seven keys to (Axolotl overrides, batch_size); the API's own allow-list and bounds
    (jobs/service/start.py), so a value the API refuses is refused here in the same words."""
    if given is None:
        return [], None
    if not isinstance(given, dict):
        raise field_error("hyperparameters", "an object with " + ", ".join(HYPERPARAMETERS))
    unknown = sorted(k for k in given if k not in HYPERPARAMETERS)
    if unknown:
        raise field_error(
            "hyperparameters", f"unknown key {shown(unknown[0])}; the keys are {', '.join(HYPERPARAMETERS)}"
        )
    overrides, batch = [], None
    for key, value in given.items():
        if value is None:
            continue  # not given: the preset's value
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise field_error(f"hyperparameters.{key}", f"expected a number, got {shown(value, 32)}")
        raw = str(value).strip()
        try:
            if key == "batch_size":
                batch = start.check_number(key, raw, *start.BATCH_SIZE)
            else:
                overrides += start.check_overrides([f"{key}={raw}"], data_dir)
        except ConfigError as exc:
            raise field_error(f"hyperparameters.{key}", str(exc).split(": ", 1)[-1]) from None
    return overrides, batch


def model_for(base_model, default: str) -> str:
    """A Hub id to the model profile that trains it; none given: the service's default."""
    if base_model is None:
        return default
    known = {}
    for name in profiles_mod.names("model"):
        hub = profiles_mod.load("model", name)["axolotl"]["base_model"]
        if not hub.startswith("assets/"):  # the repo's own tiny models are not Hub ids
            known.setdefault(hub, name)
    if not isinstance(base_model, str) or base_model not in known:
        raise field_error("base_model", f"unknown {shown(base_model)}; known: {', '.join(sorted(known))}")
    return known[base_model]


# Their runpod_config.gpu_type to RunPod's gpuTypeId (SDK queries/gpus.py ids, as hardware profiles name them)
GPU_TYPES = {"H100_PCIE": "NVIDIA H100 PCIe", "A100_80GB": "NVIDIA A100 80GB PCIe"}


def hardware_for(gpu_type: str | None, model: str) -> str:
    """The hardware profile a pod job gets: the one for their gpu_type, else the model's (a GPU)."""
    from jobs.pod.launch import pick_hardware

    try:
        return pick_hardware(GPU_TYPES[gpu_type] if gpu_type else None, None, None, model)
    except ConfigError as exc:
        raise field_error("runpod_config.gpu_type", str(exc)) from None


def check_runpod_config(given) -> dict:
    if given is None:
        return {}
    if not isinstance(given, dict):
        raise field_error("runpod_config", "an object with gpu_type, instance_type, max_duration_hours")
    out = {}
    for key, value in given.items():
        if key in RUNPOD_CHOICES:
            if value not in RUNPOD_CHOICES[key]:
                raise field_error(f"runpod_config.{key}", f"one of {', '.join(RUNPOD_CHOICES[key])}")
            out[key] = value
        elif key == "max_duration_hours":
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise field_error("runpod_config.max_duration_hours", "a number of hours")
            try:
                out[key] = start.check_number(key, str(value), *MAX_DURATION_HOURS)
            except ConfigError as exc:
                raise field_error("runpod_config.max_duration_hours", str(exc).split(": ", 1)[-1]) from None
        else:
            raise field_error("runpod_config", f"unknown key {shown(key)}")
    return out


def parse_start(body) -> dict:
    """The start body's shape: every key known, each of its type. The dataset and the config come after."""
    if not isinstance(body, dict):
        raise Refused(400, "the body is a JSON object")
    unknown = sorted(k for k in body if k not in BODY_KEYS)
    if unknown:
        raise field_error(unknown[0], f"unknown field; the fields are {', '.join(BODY_KEYS)}")
    for name in ("job_id", "dataset_url", "webhook_url", "webhook_secret"):
        if name not in body:
            raise field_error(name, "required")
    try:
        job_id = str(uuid.UUID(body["job_id"])) if isinstance(body["job_id"], str) else None
    except ValueError:
        job_id = None
    if job_id is None or job_id != body["job_id"].lower():
        raise field_error("job_id", f"a UUID (their training_jobs.id), got {shown(body['job_id'])}")
    secret = body["webhook_secret"]
    low, high = SECRET_LENGTH
    if not isinstance(secret, str) or not low <= len(secret) <= high:
        raise field_error("webhook_secret", f"a string of {low} to {high} characters")
    if not isinstance(body["dataset_url"], str):
        raise field_error("dataset_url", "a URL")
    # Whoever holds the token makes this service fetch a URL: DATASET_URL_ALLOW (e.g. their project's
    # signed-URL prefix, https://<ref>\.supabase\.co/storage/v1/object/sign/.*) keeps it from reaching
    # anything else on our network.
    allow = os.environ.get("DATASET_URL_ALLOW")
    if allow and not re.fullmatch(allow, body["dataset_url"]):
        raise field_error("dataset_url", "not allowed by this service's DATASET_URL_ALLOW")
    return {
        "job_id": body["job_id"],
        "dataset_url": body["dataset_url"],
        "webhook_url": check_webhook_url(body["webhook_url"]),
        "webhook_secret": secret,
        "hyperparameters": body.get("hyperparameters"),
        "base_model": body.get("base_model"),
        "runpod_config": check_runpod_config(body.get("runpod_config")),
    }


def public_url(request: Request) -> str:
    """This service's address as the customer reaches it: PUBLIC_URL; on a RunPod pod, its proxy URL
    (https://<pod id>-<port>.proxy.runpod.net, RunPod's HTTP proxy); else what the request came to."""
    if url := os.environ.get("PUBLIC_URL"):
        return url.rstrip("/")
    if pod := os.environ.get("RUNPOD_POD_ID"):
        return f"https://{pod}-{request.url.port or 8000}.proxy.runpod.net"
    return str(request.base_url).rstrip("/")
