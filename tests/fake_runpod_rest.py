"""RunPod's REST API v2 pod routes for tests/fake_runpod.py, over the same pods as its GraphQL API: a pod
made by either is seen, stopped and terminated by both, and the fake's switches act on REST too.

    POST   /v2/pods              createPod   201 Pod; 422 contract, 400 no capacity or a refused create
    GET    /v2/pods              listPods    200 {"pods": [Pod]} (listing_lag applies)
    GET    /v2/pods/{id}         getPod      200 Pod; 404 once gone (or TERMINATED: `rest_gone`)
    POST   /v2/pods/{id}/action  podAction   stop: 200 Pod (EXITED); terminate: 204; 409 if not valid now
    DELETE /v2/pods/{id}         deletePod   204, no body; 404 once gone

Source, SPEC = github.com/runpod/docs api-reference-v2/openapi.json @ a900806e (2026-08-20), as read into
/work/notes/runpod-rest-v2.md: CreatePodRequest (name; image; gpu {id, count, allowedCudaVersions}; cloud
SECURE|COMMUNITY, default SECURE; disk; mounts {persistent {size >= 10, path}} or {network [{volumeId,
path}]}, both: 400; dataCenterIds; env {str: str}; ports ["port/protocol"]; registry; args; templateId;
startSsh...; unevaluatedProperties false: 422 with `errors`), the Pod object (status PROVISIONING |
STARTING | RUNNING | EXITED | ERROR | TERMINATED, actions, cost "USD per hour (0.0 when EXITED or
TERMINATED)", runtime {uptime, gpus, cpu, memory, ports [{private, public, type, ip}]} "Null when the pod
is not RUNNING", createdAt, startedAt...), errors as RFC 9457 problems {title, status, detail, errors?}
with application/problem+json (MIG = api-reference-v2/migrate-from-v1.mdx), 429 with Retry-After in
integer seconds, 401 "missing bearer token", 403 "when a valid key lacks access".
Made up here (v2 does not publish them): the wording of refusals, that a refused terminate (the fake's
fail_terminates) is a 409, that a create refused by the GraphQL side's rules (fail_next, an unknown GPU,
no stock) is a 400, that a pod-scoped key reaches its own pod only (403 otherwise), that a server error
after a create (fail_after_create: 502; error_after_create: 500) leaves the pod made, that a failing pod
read (query_errors) is a 500, and whether a terminated pod answers 404 or TERMINATED (not in SPEC:
`rest_gone`, "404" by default).
"""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlparse


def _base(fake):
    """The fake's own module: a test may import it as tests.fake_runpod or as fake_runpod (tests/ on
    sys.path), two modules with classes of their own, and the fake's pods must get that one's Enum."""
    return sys.modules[type(fake).__module__]


def _problem(status: int, title: str, detail: str, errors: list[str] | None = None) -> tuple[int, dict]:
    return status, {
        "title": title,
        "status": status,
        "detail": detail,
        **({"errors": errors} if errors else {}),
    }


CREATE_TYPES = {
    "name": str, "image": str, "gpu": dict, "cpu": dict, "cloud": str, "disk": int, "mounts": dict,
    "dataCenterIds": list, "env": dict, "ports": list, "registry": (str, type(None)), "args": str,
    "templateId": str, "globalNetworking": bool, "startSsh": bool, "startJupyter": bool,
}  # fmt: skip
GPU_KEYS = {"id", "count", "allowedCudaVersions", "minCudaVersion"}  # CreateGpuConfig


def answer(fake, method: str, path: str, key: str | None, body: bytes) -> tuple[int, dict | None]:
    """One REST v2 pod request to (status, JSON body or None for 204)."""
    parts = path.strip("/").split("/")[2:]  # after v2/pods
    pod_id, action = (parts + [None, None])[:2]
    if key != fake.api_key:
        with fake.lock:
            own = next((p.id for p in fake.pods.values() if p.pod_key == key), None) if key else None
            own = own if fake.rest_pod_keys else None
        if own is None:  # SPEC's UnauthorizedError example; a wrong key's wording made up
            return _problem(401, "Unauthorized", "missing bearer token" if not key else "invalid api key")
        if pod_id != own:  # a pod-scoped key: its own pod only, never the list or a create (made up)
            return _problem(403, "Forbidden", "access denied")
    try:
        given = json.loads(body) if body else {}
    except ValueError:
        return _problem(400, "Bad Request", "request could not be processed")
    route = (method, pod_id is not None, action)
    if route == ("POST", False, None):
        return create(fake, given)
    if route == ("GET", False, None):
        with fake.lock:
            fake.calls.append(("listPods", {}))
            # LAG (tests/fake_runpod.py): listed only listing_lag seconds after its create.
            listed = [p for p in fake.pods.values() if time.time() - p.created_at >= fake.listing_lag]
            return 200, {"pods": [view(fake, p) for p in listed]}
    if route == ("GET", True, None):
        return get(fake, pod_id)
    if route == ("POST", True, "action"):
        return act(fake, pod_id, given.get("action") if isinstance(given, dict) else None, given)
    if route == ("DELETE", True, None):
        with fake.lock:
            fake.calls.append(("deletePod", {"id": pod_id}))
        return terminate(fake, pod_id)
    return _problem(404, "Not Found", "resource not found")


def create(fake, given) -> tuple[int, dict]:
    with fake.lock:
        fake.calls.append(("createPod", given))
    errors = create_errors(given)
    if errors:
        return _problem(422, "Unprocessable Entity", "Request validation failed.", errors)
    mounts, gpu = given.get("mounts") or {}, given.get("gpu") or {}
    if mounts.get("persistent") and mounts.get("network"):
        return _problem(400, "Bad Request", "mounts: persistent and network are mutually exclusive")
    if gpu.get("minCudaVersion") and gpu.get("allowedCudaVersions"):
        return _problem(400, "Bad Request", "gpu: minCudaVersion and allowedCudaVersions together")
    if not gpu:
        return _problem(400, "Bad Request", "this fake makes GPU pods only (gpu is required)")
    try:
        made = fake._deploy(graphql_input(given, _base(fake).Enum), interruptible=False, rest=True)
    except _base(
        fake
    ).GraphQLError as exc:  # no stock, fail_next, an unknown GPU: nothing made (wording: the fake's)
        return _problem(400, "Bad Request", str(exc))
    with fake.lock:
        pod = fake.pods[made["id"]]
        if fake._create_then_fail:  # the pod was made all the same (fail_after_create)
            fake._create_then_fail -= 1
            return _problem(502, "Bad Gateway", "upstream error")
        if fake._create_then_error:  # error_after_create: made, its answer a server error
            fake._create_then_error -= 1
            return _problem(500, "Internal Server Error", fake._create_error_message)
        return 201, view(fake, pod)


def get(fake, pod_id: str) -> tuple[int, dict]:
    with fake.lock:
        fake.calls.append(("getPod", {"id": pod_id}))
        if fake._query_errors:  # a read that fails on RunPod's side
            fake._query_errors -= 1
            return _problem(500, "Internal Server Error", fake._query_error_message)
        pod = fake.pods.get(pod_id)
        if pod is not None:
            return 200, view(fake, pod)
        if pod_id in fake.gone and fake.rest_gone == "terminated":
            return 200, view(fake, fake.gone[pod_id], terminated=True)
    return _problem(404, "Not Found", "resource not found")


def act(fake, pod_id: str, action, given) -> tuple[int, dict | None]:
    with fake.lock:
        fake.calls.append(("podAction", {"id": pod_id, **(given if isinstance(given, dict) else {})}))
    if not isinstance(given, dict) or set(given) != {"action"}:
        return _problem(422, "Unprocessable Entity", "Request validation failed.", ["$: action only"])
    if action not in ("start", "stop", "restart", "terminate"):
        return _problem(422, "Unprocessable Entity", "Request validation failed.", [f"$.action: {action!r}"])
    if action == "terminate":
        return terminate(fake, pod_id)
    with fake.lock:
        pod = fake.pods.get(pod_id)
        if pod is None:
            return _problem(404, "Not Found", "resource not found")
        if action not in view(fake, pod)["actions"] or action != "stop":  # start/restart: not modelled
            return _problem(409, "Conflict", f"cannot {action} a pod that is {view(fake, pod)['status']}")
        fake._halt(pod, "Stopped by User")
        return 200, view(fake, pod)


def terminate(fake, pod_id: str) -> tuple[int, dict | None]:
    with fake.lock:
        pod = fake.pods.get(pod_id)
        if pod is None:
            return _problem(404, "Not Found", "resource not found")
        if fake._terminate_failures:  # fail_terminates: refused, the pod as it was (409: made up)
            fake._terminate_failures -= 1
            return _problem(409, "Conflict", fake._terminate_message)
        fake._halt(pod, "Terminated by User")
    fake._forget(pod_id)
    return 204, None


def view(fake, pod, terminated: bool = False) -> dict:
    """SPEC `Pod` from the fake's pod. Its status from the fake's: CREATED (the image is pulled) is
    PROVISIONING; RUNNING with no container up (no host fits it, or between restarts) STARTING, with
    runtime null; EXITED; gone TERMINATED."""
    spec = pod.input
    if terminated:
        status = "TERMINATED"
    elif pod.status == "RUNNING":
        status = "RUNNING" if pod.started is not None else "STARTING"
    else:
        status = {"CREATED": "PROVISIONING"}.get(pod.status, pod.status)
        status = "ERROR" if pod.errored and status == "EXITED" else status
    actions = {
        "RUNNING": ["stop", "restart", "terminate"],
        "EXITED": ["start", "terminate"],
        "ERROR": ["start", "terminate"],
        "PROVISIONING": ["stop", "terminate"],
        "STARTING": ["stop", "terminate"],
    }.get(status, [])
    ports = [p for p in spec.get("ports", "").split(",") if p]
    runtime = None
    if status == "RUNNING":
        runtime = {
            "uptime": int((time.monotonic() - pod.started) * fake.speed),
            "gpus": [{"util": 0, "memoryUtil": 0} for _ in range(spec.get("gpuCount", 1))],
            "cpu": {"util": 0},
            "memory": {"util": 0},
            "ports": [
                {"private": int(port), "public": 60000 + int(port) % 5000, "type": kind, "ip": "100.65.0.101"}
                for port, _, kind in (p.partition("/") for p in ports)
            ],
        }
    started = None
    if pod.started is not None:
        started = iso(time.time() - (time.monotonic() - pod.started))
    mounts: dict = {}
    if spec.get("networkVolumeId"):
        mounts["network"] = [{"volumeId": spec["networkVolumeId"], "path": spec.get("volumeMountPath")}]
    elif spec.get("volumeInGb"):
        mounts["persistent"] = {"size": spec["volumeInGb"], "path": spec.get("volumeMountPath", "/workspace")}
    return {
        "id": pod.id,
        "name": spec["name"],
        "status": status,
        "actions": actions,
        "image": spec["imageName"],
        "args": spec.get("dockerArgs", ""),
        "disk": spec.get("containerDiskInGb", 0),
        "mounts": mounts,
        "ports": ports,
        "env": dict(pod.env),  # SPEC Pod.env; values included, as the GraphQL side's
        "registry": spec.get("containerRegistryAuthId"),
        "cloud": "COMMUNITY" if spec.get("cloudType") == "COMMUNITY" else "SECURE",
        "dataCenterId": spec.get("dataCenterId") or "EU-RO-1",
        "cudaVersion": pod.host_cuda,  # SPEC: "CUDA version reported by the host machine"
        "ssh": {"proxy": None, "direct": None},
        "template": None,
        "cost": 0.0 if status in ("EXITED", "TERMINATED") else pod.cost_per_hr,
        "locked": False,
        "runtime": runtime,
        "createdAt": iso(pod.created_at),
        "startedAt": started,
        "globalNetworking": {"enabled": False},
        "gpu": {"id": spec["gpuTypeId"], "count": spec.get("gpuCount", 1)},
    }


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def create_errors(given) -> list[str]:
    """CreatePodRequest's contract (SPEC): what a 422 lists."""
    if not isinstance(given, dict):
        return ["$: expected object"]
    errors = [f"$: additional properties '{k}' not allowed" for k in given if k not in CREATE_TYPES]
    errors += [f"$: missing property '{k}'" for k in ("name",) if not given.get(k)]
    if not given.get("image") and not given.get("templateId"):
        errors.append("$: missing property 'image'")
    for key, kind in CREATE_TYPES.items():
        if key in given and (
            not isinstance(given[key], kind) or isinstance(given[key], bool) != (kind is bool)
        ):
            errors.append(f"$.{key}: wrong type")
    if errors:
        return errors
    gpu, mounts = given.get("gpu") or {}, given.get("mounts") or {}
    errors += [f"$.gpu: additional properties '{k}' not allowed" for k in set(gpu) - GPU_KEYS]
    if gpu and not isinstance(gpu.get("id"), str):
        errors.append("$.gpu: missing property 'id'")
    if not isinstance(gpu.get("count", 1), int) or gpu.get("count", 1) < 1:
        errors.append("$.gpu.count: minimum 1")
    cuda = gpu.get("allowedCudaVersions", [])
    if not isinstance(cuda, list) or not all(
        isinstance(v, str) and re.fullmatch(r"\d+\.\d+", v) for v in cuda
    ):
        errors.append("$.gpu.allowedCudaVersions: strings like '12.8'")
    floor = gpu.get("minCudaVersion")
    if floor is not None and not (isinstance(floor, str) and re.fullmatch(r"\d+\.\d+", floor)):
        errors.append("$.gpu.minCudaVersion: a string like '12.8'")
    if given.get("cloud", "SECURE") not in ("SECURE", "COMMUNITY"):
        errors.append("$.cloud: value must be one of 'SECURE', 'COMMUNITY'")
    if given.get("disk", 1) < 1:
        errors.append("$.disk: minimum: got < 1, want 1")
    errors += [
        f"$.env.{k}: expected string" for k, v in given.get("env", {}).items() if not isinstance(v, str)
    ]
    errors += [
        f"$.ports: {p!r} is not port/protocol"
        for p in given.get("ports", [])
        if not re.fullmatch(r"\d+/(http|tcp|udp)", str(p))
    ]
    if set(mounts) - {"persistent", "network"}:
        errors.append("$.mounts: additional properties not allowed")
    persistent, network = mounts.get("persistent"), mounts.get("network")
    if persistent is not None and not (
        isinstance(persistent, dict)
        and set(persistent) == {"size", "path"}
        and isinstance(persistent["size"], int)
        and persistent["size"] >= 10
        and isinstance(persistent["path"], str)
    ):
        errors.append("$.mounts.persistent: size (integer >= 10) and path required, nothing else")
    if network is not None and not (
        isinstance(network, list)
        and len(network) <= 1
        and all(isinstance(n, dict) and set(n) == {"volumeId", "path"} for n in network)
    ):
        errors.append("$.mounts.network: at most one {volumeId, path}")
    return errors


def graphql_input(given: dict, enum: type[str]) -> dict:
    """A valid CreatePodRequest as the fake's pod model (GraphQL's input names, which FakePod reads): the
    same pod, whichever API made it."""
    gpu, mounts = given["gpu"], given.get("mounts") or {}
    out = {
        "name": given["name"],
        "imageName": given.get("image", ""),
        "gpuTypeId": gpu["id"],
        "gpuCount": gpu.get("count", 1),
        "cloudType": enum(given.get("cloud", "SECURE")),  # v2's default: SECURE; a bare GraphQL enum
    }
    for key in ("allowedCudaVersions", "minCudaVersion"):  # the fake places a pod on a host by both
        if gpu.get(key):
            out[key] = gpu[key]
    if "disk" in given:
        out["containerDiskInGb"] = given["disk"]
    if mounts.get("persistent"):
        out |= {"volumeInGb": mounts["persistent"]["size"], "volumeMountPath": mounts["persistent"]["path"]}
    if mounts.get("network"):
        network = mounts["network"][0]
        out |= {"networkVolumeId": network["volumeId"], "volumeMountPath": network["path"]}
    if given.get("dataCenterIds"):
        out["dataCenterId"] = given["dataCenterIds"][0]  # the fake prices one datacenter
    if given.get("env"):
        out["env"] = [{"key": k, "value": v} for k, v in given["env"].items()]
    if given.get("ports"):
        out["ports"] = ",".join(given["ports"])
    if given.get("registry"):
        out["containerRegistryAuthId"] = given["registry"]
    if given.get("args"):
        out["dockerArgs"] = given["args"]
    for key in ("startSsh", "templateId"):
        if key in given:
            out[key] = given[key]
    return out


# -- account secrets: GET/POST /v2/account/secrets, PATCH/DELETE /v2/account/secrets/{id} ----------------------
# ACCOUNT = docs.runpod.io api-reference-v2/account/{list-secrets, create-a-secret, get-a-secret,
# update-a-secret, delete-a-secret} (read 2026-12-07): {name, value, description?} to create, name `^[a-zA-Z_][a-zA-Z0-9_.\-/]*$`
# (1-191), RUNPOD... reserved, a secret {id, name, createdAt, description, valueLastUpdatedAt}, the value
# write-only. Made up here: the list's envelope ({"secrets": [...]}, as listPods' {"pods"}), PATCH for the
# update, 409 for a name taken, the wording of each refusal.
SECRET_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.\-/]{0,190}$")


def answer_secrets(fake, method: str, path: str, key: str | None, body: bytes) -> tuple[int, dict | None]:
    if key != fake.api_key:  # the account's key only: a pod's own key has no business here (made up)
        return _problem(401, "Unauthorized", "invalid api key")
    try:
        given = json.loads(body) if body else {}
    except ValueError:
        return _problem(400, "Bad Request", "request could not be processed")
    parts = path.strip("/").split("/")[3:]  # after v2/account/secrets
    with fake.lock:
        if method == "GET" and not parts:
            fake.calls.append(("listSecrets", {}))
            return 200, {"secrets": [_public(s) for s in fake.account_secrets.values()]}
        if method == "POST" and not parts:
            fake.calls.append(("createSecret", {k: v for k, v in given.items() if k != "value"}))
            name, value = given.get("name"), given.get("value")
            if not isinstance(name, str) or not SECRET_NAME.match(name) or name.upper().startswith("RUNPOD"):
                return _problem(
                    422, "Unprocessable Entity", "Request validation failed.", ["$.name: invalid"]
                )
            if not isinstance(value, str) or not value:
                return _problem(
                    422, "Unprocessable Entity", "Request validation failed.", ["$.value: required"]
                )
            if name in fake.account_secrets:
                return _problem(409, "Conflict", f"a secret named {name} exists")
            stamp = _stamp_now()
            fake.account_secrets[name] = {
                "id": _base(fake)._id(12),
                "name": name,
                "createdAt": stamp,
                "description": given.get("description"),
                "valueLastUpdatedAt": stamp,
                "value": value,
            }
            return 201, _public(fake.account_secrets[name])
        if method == "PATCH" and len(parts) == 1:
            fake.calls.append(
                ("updateSecret", {"id": parts[0], **{k: v for k, v in given.items() if k != "value"}})
            )
            found = next((s for s in fake.account_secrets.values() if s["id"] == parts[0]), None)
            if found is None:
                return _problem(404, "Not Found", "secret not found")
            if "value" in given:
                found |= {"value": given["value"], "valueLastUpdatedAt": _stamp_now()}
            if "description" in given:
                found["description"] = given["description"]
            return 200, _public(found)
        if method == "DELETE" and len(parts) == 1:  # ACCOUNT delete-a-secret; its answer made up (204)
            fake.calls.append(("deleteSecret", {"id": parts[0]}))
            found = next((s for s in fake.account_secrets.values() if s["id"] == parts[0]), None)
            if found is None:
                return _problem(404, "Not Found", "secret not found")
            del fake.account_secrets[found["name"]]
            return 204, None
    return _problem(404, "Not Found", "resource not found")


def _public(secret: dict) -> dict:
    return {k: v for k, v in secret.items() if k != "value"}  # ACCOUNT: "never returned by the API"


def _stamp_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# -- billing: GET /v2/billing/pods (SPEC getPodBillingHistory: ?podId, startTime, endTime, bucketSize, lastN;
# {"records": [{startTime, endTime, podId, totalAmount, gpuAmount, cpuAmount, diskAmount}], "metadata"}) ----
# One record per pod, its whole bill (the fake's own ledger, FakeRunPod.billed), once `billing_lag` seconds
# have passed since it ended: the buckets RunPod snaps the window to are not modelled.


def pod_billing(fake, path: str, key: str | None) -> tuple[int, dict]:
    if key != fake.api_key:
        return _problem(401, "Unauthorized", "invalid api key")
    query = parse_qs(urlparse(path).query)
    wanted = query.get("podId", [None])[0]
    with fake.lock:
        fake.calls.append(("getPodBillingHistory", {k: v[0] for k, v in query.items()}))
        pods = [*fake.pods.values(), *fake.gone.values()]
        shown = [
            p
            for p in pods
            if (wanted is None or p.id == wanted)
            and (p.halted_at is None or time.time() - p.halted_at >= fake.billing_lag)
        ]
    records = []
    for pod in shown:
        amount = round(fake.billed(pod.id), 6)
        disk = 0.0001  # a disk's share (made up): in the total, not in the compute our count is compared to
        start = datetime.fromtimestamp(pod.created_at, UTC).strftime("%Y-%m-%dT%H:00:00Z")
        records.append(
            {"startTime": start, "endTime": None, "podId": pod.id, "totalAmount": round(amount + disk, 6),
             "gpuAmount": amount, "cpuAmount": 0, "diskAmount": disk}
        )  # fmt: skip
    total = round(sum(r["totalAmount"] for r in records), 6)
    return 200, {
        "records": records,
        "metadata": {
            "recordCount": len(records),
            "totals": {"totalAmount": total},
            "uniquePodCount": len(records),
        },
    }
