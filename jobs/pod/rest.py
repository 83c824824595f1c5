"""RunPod's REST API v2 for pods, beside the GraphQL client (jobs/pod/runpod.py), which RunPod retires in
early 2027 (github.com/runpod/docs release-notes.mdx, 2026-08-18: "The GraphQL API will be retired in
early 2027. For new integrations, use REST API v2").

    api = client()   # RestClient unless RUNPOD_API=graphql; either has runpod.Client's methods and errors

RestClient has runpod.Client's public methods and raises its errors, and answers pods in the GraphQL shape
the rest of jobs/pod reads (id, name, desiredStatus, costPerHr, runtime {uptimeInSeconds, ports} or None):
one translation, graphql_pod() below. Over REST v2: an on-demand create, get, list, stop, terminate.
Through the GraphQL client (self.graphql, the one place it is used), what v2 cannot do:
  * spot pods (rent_interruptable) and their minimum bid (price(spot=True)): v2 has no interruptible,
    spot or bid field anywhere (SPEC below; a search for "interrupt", "spot", "bid" finds none);
  * prices and GPU types: v2's catalog lists one list price per GPU and cloud, not the lowest price now
    for a GPU count in one datacenter that price() answers (SPEC GET /v2/catalog/gpus, GpuType.price);
  * network volumes: the reference notes read for this give v2's list wrapper only ({"networkVolumes"},
    MIG), not its fields;
  * an on-demand create that v2 cannot express: cloudType ALL (v2's `cloud` is SECURE or COMMUNITY and
    "does not search for capacity"), or a GraphQL input with no v2 field (minVcpuCount, countryCode...).
Sources (as read for issue 25, item 6):
  SPEC = github.com/runpod/docs api-reference-v2/openapi.json @ a900806e (2026-08-20, "Runpod REST API"
         2.0.0): createPod, getPod, listPods, podAction, deletePod, Pod, ErrorResponse
  MIG  = the same repo's api-reference-v2/migrate-from-v1.mdx: Bearer auth unchanged, errors RFC 9457
The base URL is RUNPOD_API_URL's scheme and host (https://api.runpod.io, SPEC `servers`): one variable
points both APIs at one place (RunPod serves both from api.runpod.io; so does tests/fake_runpod.py), as
jobs/pod/template.py's REST call already does. The key goes in `Authorization: Bearer` only (SPEC
bearerAuth), never logged, scrubbed from errors.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterable
from urllib.parse import quote, urlsplit

import httpx

from jobs.pod import runpod
from jobs.pod import secrets as pod_secrets
from jobs.pod.runpod import AuthError, CreateUnsure, NoInstances, RateLimited, RunPodError

# GraphQL input name -> where it goes in v2's CreatePodRequest (SPEC; unevaluatedProperties false, so a
# key v2 lacks would be a 422). Anything else in POD_INPUT_FIELDS has no v2 field: that create is GraphQL's.
REST_FIELDS = frozenset(
    "name imageName gpuTypeId gpuCount cloudType containerDiskInGb volumeInGb volumeMountPath "
    "networkVolumeId dataCenterId dockerArgs ports env allowedCudaVersions containerRegistryAuthId "
    "startSsh templateId".split()
)
# SPEC PodStatus -> the desiredStatus jobs/pod reads (follow.py: EXITED/TERMINATED are "down").
# PROVISIONING and STARTING: RUNNING, as GraphQL's desiredStatus says of a pod being started (what was
# asked for; runtime null until the container is up). ERROR ("unrecoverable", SPEC; its actions are
# start/terminate, as EXITED's): down, so the follower ends or relaunches it rather than wait on it.
DESIRED = {"PROVISIONING": "RUNNING", "STARTING": "RUNNING", "RUNNING": "RUNNING", "EXITED": "EXITED"}
DESIRED |= {"ERROR": "EXITED", "TERMINATED": "TERMINATED"}


def api_choice() -> str:
    """RUNPOD_API: `rest` (default) or `graphql`."""
    choice = (os.environ.get("RUNPOD_API") or "rest").strip().lower()
    if choice not in ("rest", "graphql"):
        raise RunPodError(f"RUNPOD_API={choice!r}: rest (the default) or graphql")
    return choice


def client(api_key: str | None = None, max_time: float = 60):
    """The pod API RUNPOD_API names: RestClient, or runpod.Client (GraphQL) with RUNPOD_API=graphql."""
    if api_choice() == "graphql":
        return runpod.Client(api_key=api_key, max_time=max_time)
    return RestClient(api_key=api_key, max_time=max_time)


def rest_base(url: str | None) -> str:
    """https://api.runpod.io from RUNPOD_API_URL (https://api.runpod.io/graphql): its scheme and host."""
    parts = urlsplit(url or runpod.ENDPOINT)
    return f"{parts.scheme}://{parts.netloc}"


def graphql_pod(pod: dict | None) -> dict | None:
    """A v2 Pod (SPEC `Pod`) as the GraphQL Pod jobs/pod reads (runpod.POD_FIELDS); None for a pod that is
    gone (TERMINATED: "the pod has been permanently deleted", SPEC PodStatus), as GraphQL answers null."""
    if not pod or pod.get("status") == "TERMINATED":
        return None
    runtime = pod.get("runtime") or None  # "Null when the pod is not RUNNING" (SPEC); createPod shows {}
    mounts = pod.get("mounts") or {}
    network = (mounts.get("network") or [{}])[0]  # maxItems 1 (SPEC NetworkMount)
    return {
        "id": pod["id"],
        "name": pod.get("name"),
        "desiredStatus": DESIRED.get(pod.get("status"), pod.get("status")),
        "status": pod.get("status"),  # v2's own, for messages
        # "Current cost in USD per hour (0.0 when EXITED or TERMINATED)" (SPEC Pod.cost): GraphQL's costPerHr,
        # which billing.saw_price reads and whose 0 it ignores.
        "costPerHr": pod.get("cost"),
        "gpuCount": (pod.get("gpu") or {}).get("count", 0),  # SPEC Pod.gpu {id, count}; absent on CPU pods
        "imageName": pod.get("image"),
        "volumeMountPath": (mounts.get("persistent") or {}).get("path") or network.get("path"),
        "networkVolumeId": network.get("volumeId"),
        "dataCenterId": pod.get("dataCenterId"),
        # Not in v2 (SPEC; no desiredStatus, lastStatusChange, machine): None, as a field GraphQL nulls.
        "lastStatusChange": None,
        "machineId": None,
        "machine": None,
        # SPEC PodRuntime: uptime ("Seconds since the container started"), ports [{private, public, type,
        # ip}] -> GraphQL's uptimeInSeconds and ports {ip isIpPublic privatePort publicPort type}.
        "runtime": None
        if runtime is None
        else {
            "uptimeInSeconds": runtime.get("uptime"),
            "ports": [
                {
                    "ip": p.get("ip"),
                    "isIpPublic": p.get("public") is not None,  # v2 gives a public port only when public
                    "privatePort": p.get("private"),
                    "publicPort": p.get("public"),
                    "type": p.get("type"),
                }
                for p in runtime.get("ports") or []
            ],
        },
    }


def create_body(pod: dict, env: dict[str, str]) -> dict:
    """GraphQL's pod input (runpod.POD_INPUT_FIELDS, REST_FIELDS only) as v2's CreatePodRequest (SPEC)."""
    body: dict = {"name": pod["name"], "image": pod["imageName"]}
    gpu: dict = {"id": pod["gpuTypeId"], "count": int(pod.get("gpuCount", 1))}  # CreateGpuConfig
    if pod.get("allowedCudaVersions"):
        # Our lists are floors (runpod.cuda_at_least: every known version from the image's up), and v2
        # has the floor itself: CreateGpuConfig.minCudaVersion, "Lowest acceptable CUDA version for the
        # host machine ... compared numerically" (SPEC, 2026-08-20), so a host on a CUDA newer than our
        # list (which GraphQL's exact matching would exclude) is taken too. The two together are a 400.
        gpu["minCudaVersion"] = min(pod["allowedCudaVersions"], key=runpod.cuda_key)
    body["gpu"] = gpu
    if pod.get("cloudType"):
        body["cloud"] = pod["cloudType"]  # SECURE | COMMUNITY (ALL went to GraphQL)
    if "containerDiskInGb" in pod:
        body["disk"] = pod["containerDiskInGb"]  # "Container disk in GB (ephemeral, wiped on restart)"
    path = pod.get("volumeMountPath") or "/workspace"  # GraphQL's default mount path
    if pod.get("networkVolumeId"):  # mounts.network: [{volumeId, path}], "No default" for the path
        body["mounts"] = {"network": [{"volumeId": pod["networkVolumeId"], "path": path}]}
    elif pod.get("volumeInGb"):  # mounts.persistent {size >= 10, path}: the pod's own volume
        if int(pod["volumeInGb"]) < 10:
            raise ValueError(
                f"createPod: volumeInGb {pod['volumeInGb']}: RunPod's REST API needs 10 GB or more"
            )
        body["mounts"] = {"persistent": {"size": int(pod["volumeInGb"]), "path": path}}
    if pod.get("dataCenterId"):
        body["dataCenterIds"] = [pod["dataCenterId"]]
    if pod.get("dockerArgs"):
        body["args"] = pod["dockerArgs"]  # "Arguments passed to the container entrypoint" (v2 has no CMD)
    if pod.get("ports"):  # GraphQL "22/tcp,8888/http" -> ["22/tcp", "8888/http"] ("port/protocol")
        body["ports"] = [p.strip() for p in str(pod["ports"]).split(",") if p.strip()]
    if env:
        body["env"] = {key: str(value) for key, value in env.items()}  # an object in v2, not [{key, value}]
    if pod.get("containerRegistryAuthId"):
        body["registry"] = pod["containerRegistryAuthId"]  # "Container registry credential ID"
    for key in ("startSsh", "templateId"):
        if key in pod:
            body[key] = pod[key]
    return body


class RestClient:
    """runpod.Client's interface over REST v2. Same retry policy: 429 (waiting Retry-After, SPEC "integer
    seconds"), 5xx and transport errors, backing off with full jitter for at most `max_time` seconds; a
    create is re-sent only when RunPod cannot have acted on it (429, connection refused): a 5xx or a timeout
    after sending raises CreateUnsure, and the caller looks the pod up by name (jobs/pod/pods.py)."""

    def __init__(
        self, api_key: str | None = None, url: str | None = None, timeout: float = 30, max_time: float = 60
    ):
        # The same key check and message as runpod.Client; `url` is RUNPOD_API_URL's kind (the GraphQL
        # endpoint), which both clients are derived from.
        self.graphql = runpod.Client(api_key=api_key, url=url, timeout=timeout, max_time=max_time)
        self._key = self.graphql._key
        self.base = rest_base(self.graphql.url)
        self.max_time = max_time
        headers = {"User-Agent": "brightrun-lora", "Authorization": f"Bearer {self._key}"}
        self._http = httpx.Client(timeout=timeout, headers=headers)  # httpx's repr masks Authorization

    def __repr__(self) -> str:
        return f"RestClient(base={self.base!r})"

    def close(self) -> None:
        self._http.close()
        self.graphql.close()

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- through GraphQL: what v2 lacks (module docstring) --------------------------------------------------

    def gpu_types(self, gpu_count: int = 1, secure_cloud: bool | None = None) -> list[dict]:
        return self.graphql.gpu_types(gpu_count, secure_cloud)

    def price(self, gpu_id: str, gpu_count: int = 1, spot: bool = False, secure_cloud=None, datacenter=None):
        return self.graphql.price(gpu_id, gpu_count, spot, secure_cloud, datacenter)

    def network_volumes(self) -> list[dict]:
        return self.graphql.network_volumes()

    def rent_interruptable(self, bid_per_gpu: float, *, env=None, secrets: Iterable[str] = (), **pod):
        # The secrets as RunPod secrets here too (secrets.py): GraphQL gets references, never values.
        env = {**(env or {}), **pod_secrets.provide(self, list(secrets))}
        return self.graphql.rent_interruptable(bid_per_gpu, env=env, **pod)

    # -- over REST v2 -------------------------------------------------------------------------------------

    def deploy_on_demand(self, *, env: dict[str, str] | None = None, secrets: Iterable[str] = (), **pod):
        """POST /v2/pods (createPod): 201 and the Pod. `pod`: GraphQL's input names, as runpod.Client takes
        them; `secrets`: names whose values are read from this process's environment now."""
        unknown = sorted(set(pod) - runpod.POD_INPUT_FIELDS)
        if unknown:
            raise ValueError(
                f"createPod: unknown pod field(s) {', '.join(unknown)}; RunPod's are "
                f"{', '.join(sorted(runpod.POD_INPUT_FIELDS))}"
            )
        if pod.get("cloudType", "SECURE") not in runpod.CLOUD_TYPES:
            raise ValueError(f"createPod: cloudType must be one of {', '.join(runpod.CLOUD_TYPES)}")
        # Secrets go as references to the account's RunPod secrets, made current first (secrets.py): the
        # pod's env, which RunPod's API answers to any key of the account, holds no value.
        pairs = {**(env or {}), **pod_secrets.provide(self, list(secrets))}
        if pod.get("cloudType", "SECURE") == "ALL" or set(pod) - REST_FIELDS:
            return self.graphql.deploy_on_demand(env=pairs, **pod)
        body = create_body(pod, pairs)
        response = self._send("createPod", "POST", "/v2/pods", body, create=pod["name"])
        if not 200 <= response.status_code < 300:  # 201 (SPEC); any success means a pod was made
            detail = _said(response)
            # 400: a cross-field rule, or "this GPU+DC could not be placed" (capacity; no machine-readable
            # code, SPEC createPod's table): an answer, nothing made. Never re-sent.
            if response.status_code == 400 and _capacity(detail):
                raise self._error(NoInstances, "createPod", detail)
            raise self._error(RunPodError, "createPod", f"{detail} (nothing was created)")
        try:
            made = graphql_pod(response.json())
        except (ValueError, KeyError, TypeError, AttributeError):
            made = None
        if made is None:  # a success we cannot read: a pod was made, which only its name can find
            # Not the body itself: a pod's answer carries its env, the secrets' values among them.
            said = f"HTTP {response.status_code} with an unreadable body ({len(response.content)} bytes)"
            raise self._unsure(pod["name"], said)
        return made

    def pod(self, pod_id: str) -> dict | None:
        """GET /v2/pods/{id} (getPod); None on 404 ("not found or is not accessible", SPEC) or TERMINATED."""
        response = self._send("getPod", "GET", f"/v2/pods/{quote(pod_id, safe='')}")
        if response.status_code == 404:
            return None
        return graphql_pod(self._payload("getPod", response, 200))

    def pods(self) -> list[dict]:
        """GET /v2/pods (listPods): {"pods": [Pod]}; no name filter or paging in v2 (SPEC)."""
        payload = self._payload("listPods", self._send("listPods", "GET", "/v2/pods"), 200)
        return [p for p in map(graphql_pod, payload.get("pods") or []) if p is not None]

    def stop(self, pod_id: str) -> dict:
        """POST /v2/pods/{id}/action {"action": "stop"} (podAction): 200 and the Pod, now EXITED ("releasing
        GPU/CPU compute while keeping its disk", SPEC). 409: not valid in the pod's status."""
        path = f"/v2/pods/{quote(pod_id, safe='')}/action"
        return graphql_pod(
            self._payload("podAction", self._send("podAction", "POST", path, {"action": "stop"}), 200)
        )

    def terminate(self, pod_id: str) -> None:
        """DELETE /v2/pods/{id} (deletePod, "Terminate a pod"): 204, no body. A 404 (gone already, whatever
        its body says) is done too: what a terminate is for is true, and the caller confirms with pod()."""
        response = self._send("deletePod", "DELETE", f"/v2/pods/{quote(pod_id, safe='')}")
        if response.status_code not in (204, 404):
            raise self._error(RunPodError, "deletePod", _said(response))

    def pod_billing(self, pod_id: str, since: float) -> float | None:
        """What RunPod billed the pod's compute, in USD (GET /v2/billing/pods?podId, SPEC
        getPodBillingHistory: hourly buckets from the hour of `since`, each record's gpuAmount + cpuAmount);
        None while it lists no record (not posted yet, or never: a pod it did not bill)."""
        start = time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(since))
        query = f"?podId={quote(pod_id, safe='')}&bucketSize=hour&startTime={start}"
        payload = self._payload(
            "getPodBillingHistory", self._send("getPodBillingHistory", "GET", "/v2/billing/pods" + query), 200
        )
        records = [
            r for r in payload.get("records") or [] if isinstance(r, dict) and r.get("podId") == pod_id
        ]
        if not records:
            return None
        try:  # compute only, as our count is: a stopped pod's disk bills on (diskAmount), not its GPU
            return sum(float(r.get("gpuAmount") or 0) + float(r.get("cpuAmount") or 0) for r in records)
        except (TypeError, ValueError):
            raise self._error(
                RunPodError, "getPodBillingHistory", f"amounts not numbers: {records[:1]}"
            ) from None

    # -- the wire ---------------------------------------------------------------------------------------

    def _payload(self, operation: str, response: httpx.Response, ok: int) -> dict:
        if response.status_code != ok:
            raise self._error(RunPodError, operation, _said(response))
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise self._error(
                RunPodError, operation, f"HTTP {ok} without a JSON object: {response.text[:200]}"
            )
        return payload

    def _send(
        self, operation: str, method: str, path: str, body: dict | None = None, create: str | None = None
    ):
        """One request, retried as the class says; the answer once it is neither a 429, a 5xx nor lost.
        401/403 raise AuthError at once (SPEC: 403 "when a valid key lacks access"). `create`: the pod's
        name, for a create (never re-sent once RunPod may have acted)."""
        deadline, tries = time.monotonic() + self.max_time, 0
        while True:
            wait, limited = None, False
            try:
                response = self._http.request(method, self.base + path, json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # never reached RunPod
                reason = f"{type(exc).__name__}: {exc}"
            except httpx.TransportError as exc:  # sent, then lost: RunPod may have acted
                if create is not None:
                    raise self._unsure(create, f"{type(exc).__name__}: {exc}") from None
                reason = f"{type(exc).__name__}: {exc}"
            else:
                status = response.status_code
                if status in (401, 403):
                    raise self._error(
                        AuthError,
                        operation,
                        f"RunPod refused the API key ({_said(response)}); check RUNPOD_API_KEY",
                    )
                if status == 429:  # RunPod did nothing: a create may be sent again too
                    reason, limited, wait = _said(response), True, _retry_after(response)
                elif status >= 500:
                    if create is not None:
                        raise self._unsure(create, _said(response))
                    reason = _said(response)
                else:
                    return response
            left = deadline - time.monotonic()
            # Retry-After: 0 is not "at once, for ever": at least a beat between tries.
            pause = max(wait, 0.2) if wait is not None else random.uniform(0, min(10.0, 0.5 * 2**tries))
            if pause > left or left <= 0:
                cls = RateLimited if limited else RunPodError
                raise self._error(
                    cls, operation, f"{reason} (still failing after {self.max_time:g} s of retries)"
                )
            time.sleep(pause)
            tries += 1

    def _checked(self, operation: str, response: httpx.Response) -> httpx.Response:
        """The response if it is a success; else RunPodError saying RunPod's problem (never our body)."""
        if not 200 <= response.status_code < 300:
            raise self._error(RunPodError, operation, _said(response))
        return response

    def _unsure(self, name: str, reason: str) -> RunPodError:
        return self._error(
            CreateUnsure,
            "createPod",
            f"{reason}; the pod may exist anyway: look for name {name!r} in the account's pods before "
            "creating it again",
        )

    def _error(self, cls: type[RunPodError], operation: str, message: str) -> RunPodError:
        return cls(f"{operation}: {message}".replace(self._key, "[RUNPOD_API_KEY]"))


def _said(response: httpx.Response) -> str:
    """An RFC 9457 problem (SPEC ErrorResponse: title, status, detail, errors?) as one line."""
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        return f"HTTP {response.status_code} {response.text[:200]}".strip()
    said = f"HTTP {response.status_code} {problem.get('title') or ''}".strip()
    if problem.get("detail"):
        said += f": {problem['detail']}"
    if problem.get("errors"):
        said += f" ({'; '.join(map(str, problem['errors']))})"
    return said


def _capacity(detail: str) -> bool:
    """A 400 that says no capacity: v2 gives no code for it (SPEC), so its words, and GraphQL's."""
    words = detail.lower()
    return runpod.NO_INSTANCES in words or "capacity" in words or "could not be placed" in words


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in integer seconds (SPEC TooManyRequestsError); None when absent or not a number."""
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None
