"""RunPod's GraphQL API, only what the launcher needs: live GPU prices, create a pod (on-demand or
interruptible), follow it, stop it, terminate it.

Usage:
    client = Client()   # key from RUNPOD_API_KEY; RUNPOD_API_URL points tests at tests/fake_runpod.py
    bid = client.price("NVIDIA H100 PCIe", gpu_count=1, spot=True)
    pod = client.rent_interruptable(bid, name="run-1", imageName="axolotlai/axolotl-cloud:main-latest",
                                    gpuTypeId="NVIDIA H100 PCIe", gpuCount=1, cloudType="SECURE",
                                    volumeMountPath="/workspace", secrets=["HF_TOKEN"])
    client.pod(pod["id"])   # desiredStatus, runtime.uptimeInSeconds, costPerHr; None once the pod is gone

The launcher's pods go through REST v2 by default (jobs/pod/rest.py, which uses this client for what v2
lacks); RUNPOD_API=graphql puts everything here. The `runpod` SDK creates only on-demand pods;
interruptible (spot) pods exist only as the GraphQL mutation podRentInterruptable (bidPerGpu); REST v1 is
retired and REST v2 has no spot field.
Pod settings are RunPod's own input names (gpuTypeId, cloudType, volumeMountPath...), no aliases of ours.
What is copied, and from where (each operation below names its source again):
  SDK  = github.com/runpod/runpod-python @ 07fc6e2 (2026-08-10): runpod/api/graphql.py, api/ctl_commands.py,
         api/mutations/pods.py, api/queries/gpus.py, api/queries/pods.py, runpod/error.py
  DOCS = docs.runpod.io/sdks/graphql/manage-pods (github.com/runpod/docs, sdks/graphql/manage-pods.mdx)
  SKY  = github.com/skypilot-org/skypilot sky/provision/runpod/api/pods.py (podRentInterruptable's inputs,
         which RunPod's docs no longer show)

The key comes from RUNPOD_API_KEY only and goes in `Authorization: Bearer`, as the SDK sends it since
2025-01 (graphql.py, PR #394), not in the docs' `?api_key=` query string: a URL lands in httpx's request
log and in exception text, a header does not. It is never logged or stored, and scrubbed from errors.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable

import backoff
import httpx

ENDPOINT = "https://api.runpod.io/graphql"  # SDK graphql.py: RUNPOD_API_BASE_URL default + "/graphql"
NO_INSTANCES = "no longer any instances available"  # RunPod's words when the capacity is gone

# The input fields of podFindAndDeployOnDemand (SDK mutations/pods.py, DOCS "Create on-demand Pod");
# podRentInterruptable takes the same plus bidPerGpu (DOCS "Create spot Pod", SKY). A misspelled name
# fails here, before any request, instead of being refused (or ignored) by RunPod.
POD_INPUT_FIELDS = frozenset(
    "name imageName gpuTypeId cloudType gpuCount volumeInGb containerDiskInGb minVcpuCount minMemoryInGb "
    "dockerArgs ports volumeMountPath networkVolumeId templateId dataCenterId countryCode supportPublicIp "
    "startSsh allowedCudaVersions minDownload minUpload containerRegistryAuthId".split()
)
# containerRegistryAuthId: a private image's saved registry credentials (DOCS
# sdks/graphql/configurations.mdx, "Common input fields ... when creating Pods and templates"; REST
# PodCreateInput in github.com/runpod/docs api-reference/openapi.json).

# The CUDA versions RunPod lets a pod ask for (api-reference/openapi.json in github.com/runpod/docs,
# PodCreateInput.allowedCudaVersions' enum, 2026-08-20); v2's reference says "Matching is exact".
CUDA_VERSIONS = (
    *("11.8", "12.0", "12.1", "12.2", "12.3", "12.4", "12.5", "12.6", "12.7", "12.8", "12.9", "13.0"),
)


def cuda_key(version: str) -> tuple[int, ...]:
    """A CUDA version compared numerically (12.10 after 12.9), as RunPod compares minCudaVersion."""
    return tuple(int(x) for x in version.split("."))


def cuda_at_least(version: str) -> list[str]:
    """allowedCudaVersions for an image built on CUDA `version`: each listed host CUDA not older than it
    (a driver runs the CUDA it was released with and older)."""

    found = [v for v in CUDA_VERSIONS if cuda_key(v) >= cuda_key(version)]
    if not found:
        raise ValueError(f"CUDA {version}: RunPod lists no host CUDA that new ({', '.join(CUDA_VERSIONS)})")
    return found


ENUM_FIELDS = frozenset({"cloudType"})  # GraphQL enums go bare (cloudType: SECURE), never quoted
CLOUD_TYPES = ("ALL", "SECURE", "COMMUNITY")  # SDK ctl_commands.py create_pod's check

# What we ask back about a pod (SDK queries/pods.py, DOCS "Get Pod by ID"). Not `env`: RunPod answers it
# with the values, and those are secrets.
POD_FIELDS = (
    "id name desiredStatus lastStatusChange costPerHr gpuCount imageName machineId volumeMountPath "
    "machine { podHostId } runtime { uptimeInSeconds ports { ip isIpPublic privatePort publicPort type } }"
)
GPU_FIELDS = "id displayName memoryInGb securePrice communityPrice secureSpotPrice communitySpotPrice"


class RunPodError(Exception):
    """A RunPod call failed; the message starts with the operation (podRentInterruptable: ...)."""


class AuthError(RunPodError):
    """No key, or RunPod refused it (HTTP 401/403). Never retried."""


class RateLimited(RunPodError):
    """Still HTTP 429 after the retries."""


class NoInstances(RunPodError):
    """No capacity for that GPU type and count (no price listed, or RunPod's 'no longer any instances')."""


class CreateUnsure(RunPodError):
    """A create whose answer was lost after RunPod may have acted on it (5xx, a timeout after sending, an
    error inside a 200 other than no capacity): the pod may exist. Never re-sent; the caller looks the pod
    up by its name (jobs/pod/pods.py)."""


class _Retry(Exception):
    """One attempt failed in a way that sending the same request again can fix."""

    def __init__(self, reason: str, limited: bool = False):
        super().__init__(reason)
        self.limited = limited


def literal(value, enum: bool = False) -> str:
    """A Python value as a GraphQL literal. Strings go through json.dumps: JSON's escapes are GraphQL's,
    so a secret holding quotes, backslashes or newlines arrives intact (the SDK pastes values between
    quotes unescaped)."""
    if enum:
        if not (isinstance(value, str) and re.fullmatch(r"[A-Z][A-Z0-9_]*", value)):
            raise ValueError(f"not a GraphQL enum value: {value!r}")
        return value
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int | float | str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(literal(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {literal(v, k in ENUM_FIELDS)}" for k, v in value.items()) + "}"
    raise TypeError(f"no GraphQL literal for {type(value).__name__}")


class Client:
    """One API key, one HTTP connection pool. Retries 429, 5xx and transport errors with exponential
    backoff and full jitter for at most `max_time` seconds; a create is only re-sent when RunPod cannot
    have acted on it (429, connection refused), since a second create is a second bill."""

    def __init__(
        self, api_key: str | None = None, url: str | None = None, timeout: float = 30, max_time: float = 60
    ):
        key = api_key or os.environ.get("RUNPOD_API_KEY", "")
        if not key.strip():
            raise AuthError(
                "RUNPOD_API_KEY is not set: create a key at https://www.console.runpod.io/user/settings "
                "and export it in the shell that launches"
            )
        self._key = key
        self.url = url or os.environ.get("RUNPOD_API_URL") or ENDPOINT
        self.max_time = max_time
        # Same headers and timeout as SDK graphql.py run_graphql_query.
        self._http = httpx.Client(
            timeout=timeout,
            headers={
                "Content-Type": "application/json",
                "User-Agent": "brightrun-lora",
                "Authorization": f"Bearer {key}",  # httpx's repr of headers masks this value
            },
        )

    def __repr__(self) -> str:
        return f"Client(url={self.url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- GPU types and prices --------------------------------------------------------------------------

    def gpu_types(self, gpu_count: int = 1, secure_cloud: bool | None = None) -> list[dict]:
        """Every GPU type with its list prices and lowestPrice for `gpu_count` GPUs (USD per GPU-hour).
        SDK queries/gpus.py generate_gpu_query (fields, lowestPrice(input: {gpuCount})); secureCloud from
        DOCS "Check GPU type availability". None: both clouds."""
        query = f"query GpuTypes {{ gpuTypes {{ {GPU_FIELDS} {_lowest_price(gpu_count, secure_cloud)} }} }}"
        return self._call("gpuTypes", query) or []

    def price(
        self,
        gpu_id: str,
        gpu_count: int = 1,
        spot: bool = False,
        secure_cloud: bool | None = None,
        datacenter: str | None = None,
    ):
        """USD per GPU-hour now: on-demand = lowestPrice.uninterruptablePrice, spot = minimumBidPrice.
        SDK queries/gpus.py (gpuTypes(input: {id})); an unknown id answers [] (SDK ctl_commands get_gpu).
        `datacenter`: that datacenter's price and stock only (a pod pinned to a network volume's)."""
        query = (
            f"query GpuTypes {{ gpuTypes(input: {literal({'id': gpu_id})}) "
            f"{{ id {_lowest_price(gpu_count, secure_cloud, datacenter)} }} }}"
        )
        found = self._call("gpuTypes", query) or []
        if not found:
            raise RunPodError(
                f"gpuTypes: RunPod has no GPU type {gpu_id!r} (ids look like 'NVIDIA H100 PCIe'; "
                "Client().gpu_types() lists them)"
            )
        lowest = found[0].get("lowestPrice") or {}
        value = lowest.get("minimumBidPrice" if spot else "uninterruptablePrice")
        if not value:
            kind = "spot" if spot else "on-demand"
            where = f" in {datacenter}" if datacenter else ""
            raise NoInstances(
                f"gpuTypes: no {kind} price for {gpu_count} × {gpu_id}{where}: none available now"
            )
        return float(value)

    # -- pods --------------------------------------------------------------------------------------------

    def deploy_on_demand(self, *, env: dict[str, str] | None = None, secrets: Iterable[str] = (), **pod):
        """Create an on-demand pod. `pod`: RunPod's input names (POD_INPUT_FIELDS). `env`: plain settings;
        `secrets`: names whose values are read from this process's environment now.
        SDK mutations/pods.py generate_pod_deployment_mutation; DOCS "Create on-demand Pod"."""
        fields = self._pod_input("podFindAndDeployOnDemand", pod, env, secrets)
        return self._create("podFindAndDeployOnDemand", fields)

    def rent_interruptable(
        self, bid_per_gpu: float, *, env: dict[str, str] | None = None, secrets: Iterable[str] = (), **pod
    ):
        """Create an interruptible (spot) pod at `bid_per_gpu` USD per GPU-hour; RunPod may take it back
        at any time. DOCS "Create spot Pod" (podRentInterruptable, bidPerGpu); SKY pods.py."""
        fields = self._pod_input("podRentInterruptable", pod, env, secrets)
        return self._create("podRentInterruptable", {"bidPerGpu": float(bid_per_gpu), **fields})

    def pod(self, pod_id: str) -> dict | None:
        """The pod now; None when RunPod no longer has it (terminated, or a reclaimed spot pod).
        runtime is None until the container is up and after it stops. SDK queries/pods.py
        generate_pod_query; DOCS "Get Pod by ID" (runtime { uptimeInSeconds ports })."""
        return self._call(
            "pod", f"query Pod {{ pod(input: {literal({'podId': pod_id})}) {{ {POD_FIELDS} }} }}"
        )

    def pods(self) -> list[dict]:
        """Every pod of the account: how to find, by name, a pod whose create answer was lost.
        SDK queries/pods.py QUERY_POD; DOCS "List all Pods" (myself { pods })."""
        me = self._call("myself", f"query Pods {{ myself {{ pods {{ {POD_FIELDS} }} }} }}") or {}
        return me.get("pods") or []

    def network_volumes(self) -> list[dict]:
        """The account's network volumes (id, name, size in GB, dataCenterId): where a volume lives decides
        the pod's datacenter and the S3 endpoint of its files. SDK queries/user.py QUERY_USER
        (myself { networkVolumes { id name size dataCenterId } })."""
        document = "query NetworkVolumes { myself { networkVolumes { id name size dataCenterId } } }"
        me = self._call("myself", document) or {}
        return me.get("networkVolumes") or []

    def stop(self, pod_id: str) -> dict:
        """podStop: the container gets SIGTERM (then SIGKILL); billing for the GPU stops, the pod's volume
        is kept (and still billed). SDK mutations/pods.py generate_pod_stop_mutation; DOCS "Stop Pods"."""
        mutation = f"mutation {{ podStop(input: {literal({'podId': pod_id})}) {{ id desiredStatus }} }}"
        return self._call("podStop", mutation)

    def terminate(self, pod_id: str) -> None:
        """podTerminate: the pod and its volume are gone for good. It returns nothing, so no selection set
        (SDK mutations/pods.py generate_pod_terminate_mutation)."""
        self._call("podTerminate", f"mutation {{ podTerminate(input: {literal({'podId': pod_id})}) }}")

    # -- the wire ----------------------------------------------------------------------------------------

    def _pod_input(self, operation: str, pod: dict, env: dict[str, str] | None, secrets: Iterable[str]):
        unknown = sorted(set(pod) - POD_INPUT_FIELDS)
        if unknown:
            raise ValueError(
                f"{operation}: unknown pod field(s) {', '.join(unknown)}; RunPod's are "
                f"{', '.join(sorted(POD_INPUT_FIELDS))}"
            )
        if "cloudType" in pod and pod["cloudType"] not in CLOUD_TYPES:
            raise ValueError(f"{operation}: cloudType must be one of {', '.join(CLOUD_TYPES)}")
        secrets = list(secrets)
        missing = [name for name in secrets if not os.environ.get(name)]
        if missing:
            raise ValueError(f"{operation}: secret(s) not set in this environment: {', '.join(missing)}")
        # Values are read here, at call time, and go only into the request body (DOCS: env [{key, value}]).
        pairs = {**(env or {}), **{name: os.environ[name] for name in secrets}}
        fields = dict(pod)
        if pairs:
            fields["env"] = [{"key": key, "value": str(value)} for key, value in pairs.items()]
        return fields

    def _create(self, operation: str, fields: dict) -> dict:
        mutation = f"mutation {{ {operation}(input: {literal(fields)}) {{ {POD_FIELDS} }} }}"
        return self._call(operation, mutation, repeatable=False, name=fields.get("name"))

    def _call(self, operation: str, document: str, repeatable: bool = True, name: str | None = None):
        """POST {"query": document} (SDK graphql.py) and return data[operation]. HTTP 401 → AuthError as the
        SDK does (and 403, a key without the permission); {"errors": [{"message"}]} → RunPodError."""
        body = json.dumps({"query": document}).encode()

        def unsure(reason: str) -> RunPodError:
            # RunPod may have created the pod before failing to answer; sending it again could make two.
            return self._error(
                CreateUnsure,
                operation,
                f"{reason}; the pod may exist anyway: look for name {name!r} in Client().pods() "
                "before creating it again",
            )

        def attempt():
            try:
                response = self._http.post(self.url, content=body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # never reached RunPod
                raise _Retry(f"{type(exc).__name__}: {exc}") from None
            except httpx.TransportError as exc:
                if not repeatable:
                    raise unsure(f"{type(exc).__name__}: {exc}") from None
                raise _Retry(f"{type(exc).__name__}: {exc}") from None
            status = response.status_code
            if status in (401, 403):
                raise self._error(
                    AuthError, operation, f"RunPod refused the API key (HTTP {status}); check RUNPOD_API_KEY"
                )
            try:
                payload = response.json()
            except ValueError:
                payload = {}
            errors = payload.get("errors") if isinstance(payload, dict) else None
            detail = "; ".join(str(e.get("message", e)) for e in errors) if errors else response.text[:200]
            if status == 429:
                raise _Retry(f"HTTP 429 {detail}".strip(), limited=True)
            if status >= 500:
                if not repeatable:
                    raise unsure(f"HTTP {status} {detail}".strip())
                raise _Retry(f"HTTP {status} {detail}".strip())
            if errors:
                if NO_INSTANCES in detail.lower():
                    raise self._error(NoInstances, operation, detail)
                if not repeatable and status == 200:
                    # An error inside a 200 to a create: RunPod may have made the pod and failed its own
                    # read-back (transformerlab-app PR 2305, cited in issue 25). Unsure, never "nothing".
                    raise unsure(detail)
                raise self._error(RunPodError, operation, detail)
            if status != 200 or not isinstance(payload, dict) or "data" not in payload:
                raise self._error(RunPodError, operation, f"HTTP {status}: {detail}")
            return (payload["data"] or {}).get(operation)

        retrying = backoff.on_exception(
            backoff.expo, _Retry, max_time=self.max_time, jitter=backoff.full_jitter, factor=0.5, max_value=10
        )(attempt)
        try:
            return retrying()
        except _Retry as exc:
            cls = RateLimited if exc.limited else RunPodError
            raise self._error(
                cls, operation, f"{exc} (still failing after {self.max_time:g} s of retries)"
            ) from None

    def _error(self, cls: type[RunPodError], operation: str, message: str) -> RunPodError:
        return cls(f"{operation}: {message}".replace(self._key, "[RUNPOD_API_KEY]"))


def _lowest_price(gpu_count: int, secure_cloud: bool | None, datacenter: str | None = None) -> str:
    """lowestPrice(input: {gpuCount, secureCloud, dataCenterId}): the cheapest per-GPU prices for that
    count now, in one datacenter when given. dataCenterId is not in RunPod's docs; public clients send it
    (github.com/aidando73/hello-runpod-api watch_runpod_availability.py: GpuLowestPriceInput with
    dataCenterId and secureCloud), and without it the answer is the lowest across all datacenters."""
    args: dict = {"gpuCount": gpu_count}
    if secure_cloud is not None:
        args["secureCloud"] = secure_cloud
    if datacenter:
        args["dataCenterId"] = datacenter
    return f"lowestPrice(input: {literal(args)}) {{ minimumBidPrice uninterruptablePrice }}"
