"""`jobs template`: a RunPod pod template for the jobs service itself, printed or created.

    python -m jobs template [--create] [--gpu | --cpu] [--name NAME] [--image IMAGE]

The customer's app calls our always-on service at its RUNPOD_ENDPOINT_URL (their "RunPod API").
A pod made from this template runs it: this repo's image (Dockerfile: Axolotl's cloud image with our code
inside), `python -m jobs service` on port 8000, which RunPod's proxy serves as
https://<pod id>-8000.proxy.runpod.net (docs.runpod.io/pods/configuration/expose-ports). Two kinds:
  --gpu (default)  the service trains on the pod's own GPU (local runs), the volume holds the base model
  --cpu            for a service that starts one GPU pod per job (jobs/pod/launch.py): an account API key
                   and the network volume's S3 keys; no volume of its own (RunPod allows none on CPU pods)
Secrets are never values here: each variable is a RunPod secret reference, {{ RUNPOD_SECRET_<name> }}
(docs.runpod.io/pods/templates/secrets), resolved by RunPod when the pod starts.

RunPod's REST API v2, `POST /v2/templates` (createTemplate): REST v1 was retired on 2026-11-15 and
GraphQL retires in early 2027 (github.com/runpod/docs @ a900806e, 2026-08-20: release-notes.mdx,
api-reference-v2/migrate-from-v1.mdx). Its host is GraphQL's, so RUNPOD_API_URL (jobs/pod/runpod.py;
the tests' fake) sets both: https://api.runpod.io/graphql -> https://api.runpod.io/v2/templates.
"""

from __future__ import annotations

import json
import os
import shlex
import sys

from axolotl_configs.profiles import load as load_profile
from brightrun.errors import ConfigError
from jobs.pod import bundle, runpod
from jobs.pod.secrets import placeholder as reference  # one spelling of a secret reference

PORT = 8000
MODEL = "70b-qlora"  # the service's model on both kinds: local training (--gpu), or each job's pod (--cpu)
PLACEHOLDER = "<REGISTRY>/brightrun-lora:<TAG>"
# Every variable the service reads, each from the RunPod secret of the same name. DATABASE_URL may hold a
# password; where the store is counts as secret too (jobs/pod/stored.py STORE_VARS).
SECRETS = (
    *("JOBS_API_TOKEN", "TRAINING_WEBHOOK_SECRET", "DATABASE_URL", "HF_TOKEN"),
    *("ARTIFACT_STORE", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
)
# --cpu starts pods: an account key (RunPod's own RUNPOD_API_KEY in a pod is pod-scoped, docs.runpod.io
# pods/templates/environment-variables) and the network volume's S3 keys (jobs/pod/volume.py KEY_VARS).
# BRIGHTRUN_NETWORK_VOLUME: the network volume id each job's pod mounts (`jobs launch --network-volume`).
POD_SECRETS = ("RUNPOD_API_KEY", "RUNPOD_S3_ACCESS_KEY", "RUNPOD_S3_SECRET_KEY", "BRIGHTRUN_NETWORK_VOLUME")
# Storage, USD per GB-month while the pod runs (volume: 0.20 while stopped): docs.runpod.io/pods/pricing
# (github.com/runpod/docs pods/pricing.mdx @ e979ee42, 2026-07-20). It lists no CPU pod price.
STORAGE_GB_MONTH = 0.10


def secrets(cpu: bool) -> list[str]:
    return [*SECRETS, *(POD_SECRETS if cpu else ())]


def hardware() -> tuple[str, dict]:
    """The hardware the model is sized for (models/70b-qlora.yaml default_hardware): its volume path,
    CUDA and prices."""
    name = load_profile("model", MODEL)["default_hardware"]
    return name, load_profile("hardware", name)


def pick_image(image: str | None) -> str:
    """This repo's pushed image (--image, else BRIGHTRUN_IMAGE as `jobs launch --image`); Axolotl's own
    image has no code of ours. None given: the placeholder, which only printing accepts."""
    image = image or os.environ.get("BRIGHTRUN_IMAGE") or PLACEHOLDER
    if image != PLACEHOLDER and (bundle.installs_code(image) or "/" not in image):
        raise ConfigError(
            f"image {image!r}: the service runs from this repo's image, pushed to a registry RunPod can "
            "pull (docker build -t REGISTRY/brightrun-lora:0.1.0 . && docker push ...); Axolotl's own "
            "image has no code of ours"
        )
    return image


def command(volume: str, cpu: bool = False) -> str:
    """The container's arguments: Axolotl's ENTRYPOINT (/root/cloud-entrypoint.sh, kept by our Dockerfile)
    ends in `exec "$@"`, so they run in place of our CMD, which trains one job (docker/entrypoint.sh).
    Runs and API inputs on the volume; 0.0.0.0 for RunPod's proxy. --runs: local trains on this pod's GPU;
    pods starts one GPU pod per job (jobs/service/queue.py) on the network volume BRIGHTRUN_NETWORK_VOLUME."""
    args = ["python", "-m", "jobs", "--runs-dir", f"{volume}/runs", "service", "--host", "0.0.0.0"]
    args += ["--port", str(PORT), "--model", MODEL, "--data-dir", f"{volume}/data"]
    args += ["--runs", "pods" if cpu else "local"]
    return shlex.join(args)


def build(cpu: bool = False, name: str | None = None, image: str | None = None) -> dict:
    """The request body of POST /v2/templates. Fields: CreateTemplateRequest in RunPod's v2 API reference,
    docs.runpod.io/api-reference-v2/templates/create-a-template (github.com/runpod/docs
    api-reference-v2/openapi.json @ a900806e: ContainerConfig + name, category, mounts, serverless,
    public, startSsh, startJupyter, allowedCudaVersions; no other field is accepted)."""
    _, hw = hardware()
    volume = str(hw["volume_path"]).rstrip("/")  # not /workspace: the image keeps its Python there
    env = {key: reference(key) for key in secrets(cpu)}
    env["JUPYTER_DISABLE"] = "1"  # Axolotl's entrypoint starts Jupyter Lab on 8888 unless this is 1
    body = {
        "name": name or f"brightrun-jobs-service-{'cpu' if cpu else 'gpu'}",  # unique per account
        "image": pick_image(image),
        "category": "CPU" if cpu else "NVIDIA",  # TemplateCategory: the console's grouping only
        "args": command(volume, cpu),  # "Arguments passed to the container entrypoint"
        "ports": [f"{PORT}/http"],  # "port/protocol"; http: https://<pod id>-8000.proxy.runpod.net
        "env": env,  # an object of strings
        "disk": 50,  # container disk, GB, wiped on restart: logs, temporary files
        "serverless": False,
        "public": False,  # a public template is listed to every RunPod user
        "startJupyter": False,  # else RunPod injects a JUPYTER_PASSWORD
        "startSsh": True,  # RunPod's PUBLIC_KEY: sshd for whoever deploys it (the default)
    }
    if not cpu:
        # A persistent volume ("Disallowed on CPU pods"; templates take no network volume, one is chosen at
        # deploy): ~140 GB of Llama 3 70B bf16 weights (models/70b-qlora.yaml) in HF_HOME, which Axolotl's
        # image keeps under /workspace/data, plus runs, checkpoints and the SQLite registry.
        body["mounts"] = {"persistent": {"size": 200, "path": volume}}
        # Hosts whose CUDA is at least the image's (hardware/<hw>.yaml cuda; "major.minor", exact match).
        body["allowedCudaVersions"] = runpod.cuda_at_least(str(hw["cuda"]))
    registry = os.environ.get("RUNPOD_REGISTRY_AUTH_ID")
    if registry:
        body["registry"] = registry  # a private image's saved registry credentials (ContainerConfig)
    return body


def notes(body: dict, cpu: bool) -> list[str]:
    """What to do with it: the customer's two settings, the secrets to create, what it costs."""
    hw_name, hw = hardware()
    price, volume = hw["price_per_hour"], hw["volume_path"]
    storage = body["disk"] + body.get("mounts", {}).get("persistent", {}).get("size", 0)
    lines = [
        f"RUNPOD_ENDPOINT_URL (the customer's app): https://<pod id>-{PORT}.proxy.runpod.net",
        "RUNPOD_API_KEY (the customer's app): the value of our JOBS_API_TOKEN secret, their bearer token",
        "RunPod secrets to create first (https://www.console.runpod.io/user/secrets), each named as its "
        f"variable, or the pod does not start: {', '.join(secrets(cpu))}",
        "DATABASE_URL: postgresql://... (our own schema, never the customer's tables)"
        + ("" if cpu else f", or sqlite:///{volume}/runs/registry.db on the pod's volume"),
    ]
    if cpu:
        lines += [
            "cost: the CPU pod's hourly price, see RunPod's CPU pricing at deploy (docs.runpod.io/pods/"
            "pricing publishes no CPU figure); then each job's GPU pod, priced live by `jobs launch` "
            f"(hardware/{hw_name}.yaml lists ${price['on_demand']:.2f}/h on demand)",
            f"a CPU pod has no persistent volume: attach a network volume at {volume} when deploying, "
            "or its runs are lost on restart",
        ]
    else:
        lines.append(
            f"cost: 1 × {hw['gpu_type']} (hardware/{hw_name}.yaml price_per_hour, see its price_source): "
            f"${price['on_demand']:.2f}/h on demand, ${price['on_demand'] * 24:.2f} a day always on; "
            f"spot ${price['spot']:.2f}/h can be taken back at any time, and the URL with it"
        )
    monthly = storage * STORAGE_GB_MONTH
    lines.append(
        f"storage: {storage} GB × ${STORAGE_GB_MONTH:.2f}/GB-month = ${monthly:.2f} a month while running "
        "(docs.runpod.io/pods/pricing)"
    )
    if body["image"] == PLACEHOLDER:
        lines.append(f"image: {PLACEHOLDER} stands for this repo's image, pushed: --image or BRIGHTRUN_IMAGE")
    return lines


def create(body: dict) -> dict:
    """POST /v2/templates; the created Template (201). Errors are RFC 9457 problems {title, status,
    detail, errors?} (api-reference-v2/migrate-from-v1.mdx). Never re-sent: a lost answer may still have
    made it, and a second create fails on the taken name."""
    import httpx

    key = os.environ.get("RUNPOD_API_KEY", "").strip()
    if not key:
        raise ConfigError("--create needs RUNPOD_API_KEY (https://www.console.runpod.io/user/settings)")
    base = (os.environ.get("RUNPOD_API_URL") or runpod.ENDPOINT).removesuffix("/graphql").rstrip("/")

    def error(cls, message: str) -> runpod.RunPodError:
        return cls(f"createTemplate: {message}".replace(key, "[RUNPOD_API_KEY]"))

    try:
        response = httpx.post(
            f"{base}/v2/templates",
            json=body,
            headers={"Authorization": f"Bearer {key}", "User-Agent": "brightrun-lora"},
            timeout=30,
        )
    except httpx.HTTPError as exc:
        where = f"look for {body['name']!r} in the console's templates before creating it again"
        raise error(runpod.RunPodError, f"{type(exc).__name__}: {exc} ({where})") from None
    try:
        payload = response.json()
    except ValueError:
        payload = {}
    payload = payload if isinstance(payload, dict) else {}
    if response.status_code in (200, 201) and payload.get("id"):
        return payload
    said = " ".join(str(payload.get(k) or "") for k in ("title", "detail")).strip() or response.text[:200]
    if payload.get("errors"):
        said += f" ({'; '.join(map(str, payload['errors']))})"
    if response.status_code in (401, 403):
        raise error(runpod.AuthError, f"RunPod refused the API key (HTTP {response.status_code}: {said})")
    raise error(runpod.RunPodError, f"HTTP {response.status_code}: {said}")


def main(create_it: bool = False, cpu: bool = False, name: str | None = None, image: str | None = None):
    """Print the template (stdout: its JSON), or create it (stdout: its id); what to do next on stderr."""
    if create_it and not os.environ.get("RUNPOD_API_KEY", "").strip():
        raise ConfigError("--create needs RUNPOD_API_KEY (https://www.console.runpod.io/user/settings)")
    body = build(cpu, name, image)
    if not create_it:
        print(json.dumps(body, indent=2))
    elif body["image"] == PLACEHOLDER:
        raise ConfigError("--create: no image: --image REGISTRY/brightrun-lora:TAG, or BRIGHTRUN_IMAGE")
    else:
        try:
            made = create(body)
        except runpod.RunPodError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(made["id"])
        say(f"created RunPod template {made['id']} ({made.get('name', body['name'])}): deploy a pod from it")
    for line in notes(body, cpu):
        say(line)
    return 0


def say(line: str) -> None:
    print(line, file=sys.stderr)
