"""A fake RunPod GraphQL API on 127.0.0.1: the operations jobs/pod/runpod.py uses, with RunPod's request and
response shapes, pods whose state moves on by itself, and switches to make it fail.

Usage:
    with FakeRunPod(workspace=tmp_path / "workspace") as fake:
        monkeypatch.setenv("RUNPOD_API_URL", fake.url)
        monkeypatch.setenv("RUNPOD_API_KEY", fake.api_key)
        ...
        fake.rate_limit(2)                 # the next 2 requests answer HTTP 429
        fake.fail_next(fake.NO_INSTANCES)  # the next pod create answers this GraphQL error
        fake.preempt(pod_id)               # RunPod takes a spot pod back: EXITED, then gone
        fake.calls[-1]                     # (field, args) exactly as the client sent them
        fake.created[-1]                   # the last pod create, either API, in GraphQL's input names
        fake.did("terminate")              # how many terminates, either API
        fake.templates                     # POST /v2/templates (REST API v2, TEMPLATES): id -> Template

The same server answers RunPod's REST API v2 pod routes (POST/GET /v2/pods, GET/DELETE /v2/pods/{id},
POST /v2/pods/{id}/action) over the same pods, with REST's shapes and status codes: tests/fake_runpod_rest.py,
which cites its sources. The switches below act on both APIs where they mean something there.

Shapes, copied (the same sources as jobs/pod/runpod.py):
  SDK  = github.com/runpod/runpod-python @ 07fc6e2: runpod/api/graphql.py (POST {"query"}, 401 = bad key,
         {"errors": [{"message"}]}), api/mutations/pods.py, api/queries/gpus.py, api/queries/pods.py
  DOCS = docs.runpod.io/sdks/graphql/manage-pods (github.com/runpod/docs sdks/graphql/manage-pods.mdx):
         the JSON each operation answers, env as ["KEY=value"], lowestPrice, runtime.uptimeInSeconds
  SKY  = github.com/skypilot-org/skypilot sky/provision/runpod/api/pods.py (podRentInterruptable's inputs)
  DSTACK = github.com/dstackai/dstack issue 1142: a pod whose container command exits (there: `exit 1`) is
         restarted by RunPod, endlessly, the pod staying up (RunPod's UI shows the restarts)
  APIREF = docs.runpod.io API reference (github.com/runpod/docs api-reference/openapi.json): PodCreateInput's
         allowedCudaVersions (an exact list, enum 11.8 ... 13.0; v2: "Matching is exact") and
         containerRegistryAuthId ("Registry credentials ID"); DOCS pods/manage-pods.mdx: a host whose CUDA
         is older than the image's fails with "OCI runtime create failed"
  NETVOL = docs.runpod.io/storage/network-volumes: "Network volumes are only available for Pods in the
         Secure Cloud"
  DOCKERARGS = dockerArgs, the pod's "container arguments" (docs.runpod.io runpodctl create pod, `--args`;
         SDK mutations/pods.py sends it as dockerArgs), given to the image's ENTRYPOINT in place of its CMD
         as `docker run IMAGE ARGS` does; Axolotl's cloud image's ENTRYPOINT, scripts/cloud-entrypoint.sh
         (github.com/axolotl-ai-cloud/axolotl @ 067b021c), ends in `exec "$@"`. Our default pod runs
         Axolotl's image with a start command that installs our wheels from the volume (jobs/pod/bundle.py)
  ERR200 = github.com/transformerlab/transformerlab-app PR 2305 (cited in issue 25): RunPod answered a create
         with a GraphQL error in an HTTP 200 while it had made the pod (its own read-back failed)
  LAG    = the account's pod list lags a create (issue 25: "no allowance for listing lag"); how long is not
         published: `listing_lag` seconds here
  PODKEY = github.com/runpod/docs pods/templates/environment-variables.mdx, "Runpod-provided variables":
         RUNPOD_POD_ID "Unique Pod identifier", RUNPOD_API_KEY "Pod-scoped API key", RUNPOD_VOLUME_ID
         "Attached network volume ID"
  RECLAIM = docs.runpod.io pods/pricing (spot): an interrupted spot pod is stopped, not terminated, its disk
         kept (issue 25: "RunPod keeps it EXITED with its disk"); a vanished pod is one someone terminated
Made up here (RunPod does not publish them): the prices, the wording of errors other than
NO_INSTANCES, the status of a pod whose container is still starting (CREATED; RunPod itself may already
say RUNNING with runtime null), and how long a reclaimed spot pod stays listed before it is gone.

A pod can run a real local command: `command(env, volume) -> argv`, called when the pod starts, with the
env the pod's process gets (add to it what the image itself would set) and the directory standing in
for its volumeMountPath (`workspace`, shared by every pod like a network volume): the image's CMD. A pod
created with dockerArgs runs those instead, in the environment `command` set up (DOCKERARGS). podStop, podTerminate
and preempt() send that process SIGTERM, then SIGKILL after `stop_grace` seconds, as `docker stop` does.
Once that process has ended, by itself or killed, every other process of its container is killed
(`end_container`), as a container's processes die with its PID 1: the entrypoint's background deadline timer,
the trainer in the session of its own that jobs/run.py starts it in, do not outlive their pod here either.

When that process exits by itself, the container is started again (restart_on_exit, on by default: DSTACK;
RunPod's API reference says a pod "runs until it exits", third-party notes say a clean exit restarts too,
so both exits restart here), the pod staying RUNNING with its runtime's uptime starting again from 0.
A pod never gets a runtime (it stays RUNNING with runtime null, costing money) when no host fits it:
`host_cuda` is the CUDA version of the fake's hosts, or a tuple of several; a pod goes to the newest host
its allowedCudaVersions (exact, APIREF) or REST's minCudaVersion (a floor) allows, and never starts when
none does, nor does an image named in `private_images` created without containerRegistryAuthId.
Account secrets (REST v2 /v2/account/secrets, fake_runpod_rest.py): a pod's env value
`{{ RUNPOD_SECRET_name }}` is the secret's value in its container, read at each boot (_boot_env), while
every API answer shows the reference (docs.runpod.io pods/templates/secrets).
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

# RunPod's own message when the capacity is gone (seen in RunPod's answers quoted across public code).
NO_INSTANCES = "There are no longer any instances available with the requested specifications. Please refresh and try again."

# Made-up prices, USD per GPU-hour. maxGpuCount: how many fit one pod now (0 = out of stock).
GPU_TYPES = [
    {"id": "NVIDIA H100 PCIe", "displayName": "H100 PCIe", "memoryInGb": 80, "securePrice": 2.39,
     "communityPrice": 1.99, "secureSpotPrice": 1.25, "communitySpotPrice": 0.99, "maxGpuCount": 8},
    {"id": "NVIDIA H100 80GB HBM3", "displayName": "H100 SXM", "memoryInGb": 80, "securePrice": 2.99,
     "communityPrice": 2.69, "secureSpotPrice": 1.75, "communitySpotPrice": 1.29, "maxGpuCount": 8},
    {"id": "NVIDIA RTX A6000", "displayName": "RTX A6000", "memoryInGb": 48, "securePrice": 0.49,
     "communityPrice": 0.33, "secureSpotPrice": 0.25, "communitySpotPrice": 0.17, "maxGpuCount": 0},
]  # fmt: skip

# The input fields RunPod takes (SDK mutations/pods.py; DOCS "Create spot Pod" adds bidPerGpu).
DEPLOY_INPUT = set(
    "name imageName gpuTypeId cloudType gpuCount volumeInGb containerDiskInGb minVcpuCount minMemoryInGb "
    "dockerArgs ports volumeMountPath env networkVolumeId templateId dataCenterId countryCode "
    "supportPublicIp startSsh allowedCudaVersions minDownload minUpload containerRegistryAuthId".split()
)
SPOT_INPUT = DEPLOY_INPUT | {"bidPerGpu"}
PREEMPT_GRACE = 5.0  # seconds from SIGTERM to SIGKILL when RunPod takes a spot pod back
SECRET_REF = re.compile(r"\{\{\s*RUNPOD_SECRET_([a-zA-Z0-9_.\-/]+)\s*\}\}")  # RunPod secrets in an env value
# Environment a pod's command inherits from this process: enough to find programs, nothing secret.
BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")


# What each GraphQL field or REST v2 operation (tests/fake_runpod_rest.py) asks, for FakeRunPod.did().
OPS = {
    **{"podFindAndDeployOnDemand": "create", "podRentInterruptable": "create", "createPod": "create"},
    **{"podStop": "stop", "podTerminate": "terminate", "deletePod": "terminate"},
    **{"pod": "get", "getPod": "get", "myself": "list", "listPods": "list"},
}


# -- just enough GraphQL to read what the client sends -----------------------------------------------------


class GraphQLError(Exception):
    """Answered as {"errors": [{"message"}]}; `status` 200 for a resolver's refusal, 400 for a document
    the server cannot run (graphql-js's own wording is used for those)."""

    def __init__(self, message: str, status: int = 200):
        super().__init__(message)
        self.status = status


class Enum(str):
    """A bare GraphQL enum value (cloudType: SECURE), kept apart from the string "SECURE"."""


@dataclass
class Field:
    name: str
    args: dict
    selection: list[Field] | None


TOKEN = re.compile(
    r"""(?P<skip>[\s,\ufeff]+|\#[^\n]*)
      | (?P<string>"(?:[^"\\\n]|\\.)*")
      | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
      | (?P<name>[_A-Za-z][_0-9A-Za-z]*)
      | (?P<punct>[{}()\[\]:!$=@])""",
    re.VERBOSE,
)


def tokenize(text: str) -> list[tuple[str, str]]:
    tokens, at = [], 0
    while at < len(text):
        match = TOKEN.match(text, at)
        if not match:
            raise GraphQLError(f"Syntax Error: Unexpected character: {text[at]!r}.", 400)
        if match.lastgroup != "skip":
            tokens.append((match.lastgroup, match.group()))
        at = match.end()
    return tokens


class Reader:
    """An operation: [query|mutation [Name]] { field(arg: value) { subfields } ... }. No variables,
    fragments, aliases or directives: the client sends none, so the fake refuses them."""

    def __init__(self, text: str):
        self.tokens, self.at = tokenize(text), 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.at] if self.at < len(self.tokens) else ("end", "<EOF>")

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        got_kind, got = self.peek()
        if (value and got != value) or (kind and got_kind != kind):
            raise GraphQLError(f"Syntax Error: Expected {value or kind}, found {got}.", 400)
        self.at += 1
        return got

    def operation(self) -> tuple[str, list[Field]]:
        kind = "query"
        if self.peek()[0] == "name":
            kind = self.take(kind="name")
            if kind not in ("query", "mutation"):
                raise GraphQLError(f'Syntax Error: Unexpected Name "{kind}".', 400)
            if self.peek()[0] == "name":
                self.take(kind="name")  # the operation's name, e.g. GpuTypes
        if self.peek()[1] != "{":
            raise GraphQLError(
                f"Syntax Error: Expected {{, found {self.peek()[1]} (the fake reads no variables).", 400
            )
        selection = self.selection_set()
        self.take(kind="end")
        return kind, selection

    def selection_set(self) -> list[Field]:
        self.take("{")
        fields = []
        while self.peek()[1] != "}":
            name = self.take(kind="name")
            args = {}
            if self.peek()[1] == "(":
                self.take("(")
                while self.peek()[1] != ")":
                    key = self.take(kind="name")
                    self.take(":")
                    args[key] = self.value()
                self.take(")")
            fields.append(Field(name, args, self.selection_set() if self.peek()[1] == "{" else None))
        self.take("}")
        if not fields:
            raise GraphQLError("Syntax Error: Expected Name, found }.", 400)
        return fields

    def value(self):
        kind, token = self.peek()
        if token == "[":
            self.take("[")
            items = []
            while self.peek()[1] != "]":
                items.append(self.value())
            self.take("]")
            return items
        if token == "{":
            self.take("{")
            obj = {}
            while self.peek()[1] != "}":
                key = self.take(kind="name")
                self.take(":")
                obj[key] = self.value()
            self.take("}")
            return obj
        self.take()
        if kind == "string":
            return json.loads(token)  # GraphQL's string escapes are JSON's
        if kind == "number":
            return float(token) if any(c in token for c in ".eE") else int(token)
        if kind == "name":
            return {"true": True, "false": False, "null": None}.get(token, Enum(token))
        raise GraphQLError(f"Syntax Error: Unexpected {token}.", 400)


def project(value, selection: list[Field] | None, where: str):
    """Answer only the fields asked for, as GraphQL does; a field the schema lacks is refused, so the
    client's selection sets are checked against RunPod's types. A callable value is a field that takes
    arguments (lowestPrice(input: {...}))."""
    if value is None:
        return None
    if isinstance(value, list):
        return [project(item, selection, where) for item in value]
    if not isinstance(value, dict):
        if selection is not None:
            raise GraphQLError(
                f'Field "{where}" must not have a selection since its type has no subfields.', 400
            )
        return value
    if selection is None:
        raise GraphQLError(
            f'Field "{where}" of type "{value["__typename"]}" must have a selection of subfields.', 400
        )
    out = {}
    for item in selection:
        if item.name not in value:
            raise GraphQLError(f'Cannot query field "{item.name}" on type "{value["__typename"]}".', 400)
        found = value[item.name]
        if callable(found):
            found = found(**item.args)
        elif item.args:
            raise GraphQLError(f'Unknown argument "{next(iter(item.args))}" on field "{item.name}".', 400)
        out[item.name] = project(found, item.selection, item.name)
    return out


# -- pods ---------------------------------------------------------------------------------------------------


def _id(length: int) -> str:
    return "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(length))


def _stamp(what: str) -> str:
    # RunPod's lastStatusChange is prose like this ("Rented by User: <date>"): to show, not to parse.
    return f"{what}: {datetime.now(UTC):%a %b %d %Y %H:%M:%S} GMT+0000 (Coordinated Universal Time)"


class VolumeSync:
    """A RunPod network volume seen both ways: pods mount it (here: the fake's `workspace`) and RunPod's
    S3-compatible API serves its files (here: `bucket` on an S3 server on loopback, tests use moto's).
    A pod pulls the bucket into the workspace when it starts and pushes what changed back every `every`
    seconds while it runs and once more when it ends, so the launcher sees the pod's files only through
    S3, a little late, as over the real API. `client` is a boto3 S3 client."""

    def __init__(self, client, bucket: str, every: float = 0.5):
        self.client, self.bucket, self.every = client, bucket, every
        self.sent: dict[str, tuple[int, int]] = {}  # key -> (size, mtime_ns) last pushed
        self.lock = threading.Lock()

    def pull(self, workspace: Path) -> None:
        with self.lock:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
                for obj in page.get("Contents") or []:
                    dest = workspace / obj["Key"]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    self.client.download_file(self.bucket, obj["Key"], str(dest))
                    st = dest.stat()
                    self.sent[obj["Key"]] = (st.st_size, st.st_mtime_ns)

    def push(self, workspace: Path) -> None:
        with self.lock:
            # Oldest change first: a reader never sees a file (the run's registry saying "completed") before
            # one written earlier (its adapter), as on the volume itself.
            for path in sorted((p for p in workspace.rglob("*") if p.is_file()), key=_mtime):
                key = path.relative_to(workspace).as_posix()
                try:
                    st = path.stat()
                    if self.sent.get(key) == (st.st_size, st.st_mtime_ns):
                        continue
                    self.client.upload_file(str(path), self.bucket, key)
                except FileNotFoundError:  # a temporary file the trainer renamed meanwhile
                    continue
                self.sent[key] = (st.st_size, st.st_mtime_ns)
            # A file deleted on the volume is deleted there too. SQLite's rollback journal lives only during
            # a transaction: one pushed mid-transaction and left in the bucket after its commit deleted it
            # was pulled by the next pod as a hot journal and rolled back onto the newer database, which
            # then read as malformed (the relaunched pod's resume failed at each start: a crash loop).
            for key in [k for k in self.sent if not (workspace / k).exists()]:
                self.client.delete_object(Bucket=self.bucket, Key=key)
                del self.sent[key]

    def while_running(self, workspace: Path, proc: subprocess.Popen) -> None:
        while proc.poll() is None:
            self.push(workspace)
            time.sleep(self.every)


def end_container(leader: int) -> None:
    """SIGKILL to every process of the container whose first process is `leader`, started in a session of
    its own: that session's processes and all their descendants, which may have started sessions of their
    own (jobs/run.py starts Axolotl so), so neither its group nor its session alone reaches them all. A real
    container's processes all die with its PID 1 (docker stop, a terminated pod); here they would live on.
    Scanned again until none is left: a process may fork between a scan and its kill."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        procs = {}  # pid -> (ppid, session) of every live process on this machine
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:  # ended meanwhile
                continue
            state, ppid, _, session = stat.rsplit(")", 1)[1].split()[:4]  # after the (command name)
            if state not in "ZX":  # a zombie is dead already, waiting for its parent
                procs[int(entry.name)] = (int(ppid), int(session))
        doomed = {pid for pid, (_, session) in procs.items() if session == leader}
        while grown := {pid for pid, (ppid, _) in procs.items() if ppid in doomed} - doomed:
            doomed |= grown
        if not doomed:
            return
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


@dataclass
class FakePod:
    id: str
    input: dict
    gpu: dict
    cost_per_hr: float
    interruptible: bool
    status: str = "CREATED"
    last_status_change: str = ""
    started: float | None = None
    exit_code: int | None = None
    proc: subprocess.Popen | None = None
    restarts: int = 0  # times the container was started again after its process exited
    never_starts: str | None = None  # why no host can run it: runtime stays null
    host_cuda: str | None = None  # the CUDA of the host it went to
    errored: bool = False  # fail_pod(): REST v2 says ERROR
    created_at: float = field(default_factory=time.time)  # wall clock: RunPod bills from here...
    halted_at: float | None = None  # ...to the stop, terminate or reclaim
    halt: threading.Event = field(default_factory=threading.Event)
    # Set once its container's process has ended and its last changes are pushed to the volume's bucket.
    synced: threading.Event = field(default_factory=threading.Event)
    machine_id: str = field(default_factory=lambda: _id(12))
    pod_key: str = field(default_factory=lambda: "rp_pod_" + secrets.token_hex(12))  # its RUNPOD_API_KEY
    prices: list = field(default_factory=list)  # (from, USD/h): its price history, for billed()

    def __post_init__(self):
        self.prices = self.prices or [(self.created_at, self.cost_per_hr)]

    @property
    def env(self) -> dict[str, str]:
        return {pair["key"]: pair["value"] for pair in self.input.get("env") or []}


class FakeRunPod:
    """The server and its state. Times are real seconds; `speed` makes uptime run faster (a cost cap
    test can see an hour's uptime in seconds)."""

    NO_INSTANCES = NO_INSTANCES

    def __init__(
        self,
        api_key: str = "rp_fake_key_0123456789",
        workspace: Path | None = None,
        command: Callable[[dict, Path], list[str]] | None = None,
        start_after: float = 0.2,
        run_for: float | None = None,
        speed: float = 1.0,
        stop_grace: float = 5.0,  # issue 25 item 7 ("a 5 s stop grace"), as PREEMPT_GRACE
        vanish_after: float | None = None,
        network_volumes: list[dict] | None = None,
        volume_sync: VolumeSync | None = None,
        datacenters: dict[str, dict[str, dict]] | None = None,
        restart_on_exit: bool = True,
        restart_after: float = 0.2,
        host_cuda: str | tuple[str, ...] = "13.0",
        private_images: tuple[str, ...] = (),
        listing_lag: float = 0.0,
        retry_after: int = 1,
        rest_gone: str = "404",
    ):
        self.api_key = api_key
        self.workspace = Path(workspace or tempfile.mkdtemp(prefix="fake-runpod-"))
        self.command, self.start_after, self.run_for, self.speed = command, start_after, run_for, speed
        self.stop_grace, self.vanish_after = stop_grace, vanish_after
        # SDK queries/user.py: myself { networkVolumes { id name size dataCenterId } }
        self.network_volumes = list(network_volumes or [])
        self.volume_sync = volume_sync
        self.restart_on_exit, self.restart_after = restart_on_exit, restart_after
        # The CUDA version of the fake's hosts, or a tuple of several (a pod goes to a host its create
        # allows, the newest: RunPod does not say which it picks).
        self.host_cuda, self.private_images = host_cuda, set(private_images)
        self.listing_lag = listing_lag
        # GET /v2/billing/pods lists a pod's billing only this long after the pod ended (made up: RunPod
        # publishes no figure; its records are time buckets, so a pod still running is billed in part).
        self.billing_lag = 0.0
        # REST v2 (tests/fake_runpod_rest.py): a 429's Retry-After, and what GET answers for a terminated
        # pod, "404" or "terminated" (status TERMINATED): the reference does not say (REST there).
        self.retry_after, self.rest_gone = retry_after, rest_gone
        # Whether REST v2 takes a pod's pod-scoped key (undocumented: PODKEY documents the key, not which
        # API takes it); False: 401 there, as a key REST does not know.
        self.rest_pod_keys = True
        # Every pod create that reached RunPod's handler (refused ones too), either API, as GraphQL's input.
        self.created: list[dict] = []
        self.gpus = {gpu["id"]: dict(gpu) for gpu in GPU_TYPES}  # a test may change a price or the stock
        # Per datacenter, per GPU id: what differs there from self.gpus (prices, maxGpuCount). RunPod
        # prices and stocks each datacenter apart; lowestPrice without dataCenterId is the lowest of all.
        self.datacenters = {
            dc: {g: dict(v) for g, v in gpus.items()} for dc, gpus in (datacenters or {}).items()
        }
        self.pods: dict[str, FakePod] = {}
        self.gone: dict[str, FakePod] = {}  # terminated or reclaimed: RunPod answers pod = null for these
        self.requests: list[dict] = []  # every HTTP request: path, headers, how the key came
        self.calls: list[tuple[str, dict]] = []  # every root field run, with its arguments as parsed
        self.lock = threading.RLock()
        self._limited = 0
        self._server_errors = 0
        self._failures: list[str] = []
        self._create_then_fail = 0
        self._create_then_error = 0
        self._create_error_message = ""
        self._terminate_failures = 0
        self._terminate_message = ""
        self._query_errors = 0
        self._query_error_message = ""
        self._server: ThreadingHTTPServer | None = None
        # The account's RunPod secrets (REST v2 /v2/account/secrets, fake_runpod_rest.py): name -> the
        # secret as answered, plus its write-only "value" (never answered), substituted at each boot.
        self.account_secrets: dict[str, dict] = {}
        self.templates: dict[str, dict] = {}  # POST /v2/templates: id -> the Template answered (TEMPLATES)

    # -- switches for tests --------------------------------------------------------------------------------

    def rate_limit(self, n: int) -> None:
        """The next n requests answer HTTP 429."""
        with self.lock:
            self._limited = n

    def server_error(self, n: int) -> None:
        """The next n requests answer HTTP 502 (a gateway in front of the API)."""
        with self.lock:
            self._server_errors = n

    def fail_after_create(self, n: int = 1) -> None:
        """The next n pod creates make the pod, then answer HTTP 502: a gateway or a timeout between the
        client and RunPod after RunPod acted (its API has answered 5xx before; what it did meanwhile is not
        documented, so the worst case is modelled: the pod exists and bills)."""
        with self.lock:
            self._create_then_fail = n

    def error_after_create(
        self, n: int = 1, message: str = "Something went wrong. Please try again later."
    ) -> None:
        """The next n pod creates make the pod, then answer a GraphQL error inside an HTTP 200 (ERR200)."""
        with self.lock:
            self._create_then_error = n
            self._create_error_message = message

    def query_errors(self, n: int, message: str = "Something went wrong. Please try again later.") -> None:
        """The next n `pod` queries answer a GraphQL error (HTTP 200, data.pod null), as a resolver's
        failure does (SDK graphql.py raises on any "errors"); the wording is made up."""
        with self.lock:
            self._query_errors = n
            self._query_error_message = message

    def fail_terminates(self, n: int, message: str = "Something went wrong. Please try again later.") -> None:
        """The next n podTerminate calls answer a GraphQL error (HTTP 200) and leave the pod as it was
        (issue 25: a terminate that fails; RunPod answers errors inside a 200, SDK graphql.py)."""
        with self.lock:
            self._terminate_failures = n
            self._terminate_message = message

    def terminate_outside(self, pod_id: str) -> None:
        """Someone else ends the pod (the RunPod console, the customer's app): terminated, pod = null."""
        with self.lock:
            self._halt(self.pods[pod_id], "Terminated by User")
        self._forget(pod_id)

    def fail_pod(self, pod_id: str) -> None:
        """RunPod puts the pod in ERROR (REST v2 PodStatus: "unrecoverable", its actions start and
        terminate): its container stopped; GraphQL's desiredStatus says EXITED (made up: GraphQL documents
        no ERROR), REST's status ERROR."""
        with self.lock:
            pod = self.pods[pod_id]
            self._halt(pod, "Error")
            pod.errored = True

    def set_price(self, pod_id: str, cost_per_hr: float) -> None:
        """The pod's price changes mid-run (spot prices move; issue 25); billed from now at the new price."""
        with self.lock:
            pod = self.pods[pod_id]
            pod.prices.append((time.time(), cost_per_hr))
            pod.cost_per_hr = cost_per_hr

    def did(self, what: str) -> int:
        """How many requests asked `what` (create, stop, terminate, get, list) of either API: GraphQL's
        fields or REST v2's operations (myself counts as a list: it also answers the network volumes)."""
        return sum(
            OPS.get(name) == what or (name == "podAction" and args.get("action") == what)
            for name, args in self.calls
        )

    def billed(self, pod_id: str) -> float:
        """What this fake bills the pod: each stretch from its create to its end (terminate, stop or
        reclaim) at the price then, its own ledger to compare the launcher's sum with."""
        with self.lock:
            pod = self.pods.get(pod_id) or self.gone[pod_id]
            end = pod.halted_at or time.time()
            marks = [*pod.prices, (end, None)]
        return sum(
            max(0.0, min(t1, end) - t0) / 3600 * price for (t0, price), (t1, _) in itertools.pairwise(marks)
        )

    def fail_next(self, message: str = NO_INSTANCES) -> None:
        """The next pod create answers this GraphQL error (HTTP 200, data null), as RunPod does."""
        with self.lock:
            self._failures.append(message)

    def preempt(self, pod_id: str) -> None:
        """RunPod takes an interruptible pod back: SIGTERM, then EXITED, kept with its disk until someone
        terminates it (RECLAIM); `vanish_after` seconds: gone instead, as older fakes had it."""
        with self.lock:
            pod = self.pods[pod_id]
            if not pod.interruptible:
                raise ValueError(f"{pod_id} is on-demand: RunPod does not reclaim those")
            # About 5 s from SIGTERM to SIGKILL on a spot pod (RunPod's pricing page, cited in issue 16;
            # the text is no longer in github.com/runpod/docs): a checkpoint cannot be saved in that time.
            self._halt(pod, "Interrupted", grace=PREEMPT_GRACE)
        if self.vanish_after is not None:
            timer = threading.Timer(self.vanish_after, self._forget, (pod_id,))
            timer.daemon = True
            timer.start()

    # -- server --------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/graphql"

    def start(self) -> FakeRunPod:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self
        # A short poll, so shutdown() in each test's teardown takes milliseconds, not half a second.
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def close(self) -> None:
        with self.lock:
            pods = list(self.pods.values()) + list(self.gone.values())
        for pod in pods:
            pod.halt.set()
            # No orphans left behind by a test. Only a container still running: once its first process has
            # ended and been reaped, _life has ended the rest, and its pid may be another process's by now.
            if pod.proc and pod.proc.poll() is None:
                end_container(pod.proc.pid)
                pod.proc.wait()
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeRunPod:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def answer(self, path: str, headers: dict, body: bytes, method: str = "POST") -> tuple[int, dict | None]:
        """One HTTP request to (status, JSON body; None: no body)."""
        query_key = parse_qs(urlparse(path).query).get("api_key", [None])[0]  # DOCS' curl examples
        auth = headers.get("authorization", "")
        header_key = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None  # SDK graphql.py
        with self.lock:
            self.requests.append(
                {
                    "path": path,
                    "headers": headers,
                    "key_in": "header" if header_key else "query" if query_key else None,
                }
            )
            rest = urlparse(path).path.startswith("/v2/")
            if self._limited:
                self._limited -= 1
                if rest:  # REST v2's TooManyRequestsError example (tests/fake_runpod_rest.py)
                    return _problem(429, "Too Many Requests", "rate limit exceeded for the minute window")
                return 429, {"errors": [{"message": "Too Many Requests"}]}
            if self._server_errors:
                self._server_errors -= 1
                if rest:
                    return _problem(502, "Bad Gateway", "upstream error")
                return 502, {"errors": [{"message": "Bad Gateway"}]}
        route = urlparse(path).path
        if route == "/v2/templates" and method == "POST":  # REST API v2 (TEMPLATES), not GraphQL
            return self._create_template(header_key, body)
        if route == "/v2/pods" or route.startswith("/v2/pods/"):  # REST API v2 pods
            from tests import fake_runpod_rest

            return fake_runpod_rest.answer(self, method, route, header_key, body)
        if route == "/v2/billing/pods" and method == "GET":
            from tests import fake_runpod_rest

            return fake_runpod_rest.pod_billing(self, path, header_key)
        if route == "/v2/account/secrets" or route.startswith("/v2/account/secrets/"):
            from tests import fake_runpod_rest

            return fake_runpod_rest.answer_secrets(self, method, route, header_key, body)
        if method != "POST" or route != "/graphql":
            return 404, {"errors": [{"message": f"no route {method} {route}"}]}
        key = header_key or query_key
        with self.lock:
            own_pod = next((p.id for p in self.pods.values() if p.pod_key == key), None) if key else None
        if key != self.api_key and own_pod is None:
            return 401, {"errors": [{"message": "Unauthorized"}]}  # SDK graphql.py: 401 = bad key
        try:
            document = json.loads(body)["query"]
            kind, selection = Reader(document).operation()
        except (ValueError, KeyError, TypeError) as exc:
            return 400, {"errors": [{"message": f"Bad request: {exc}"}]}
        except GraphQLError as exc:
            return exc.status, {"errors": [{"message": str(exc)}]}
        if own_pod is not None:
            # PODKEY: a pod's own key acts on that pod alone (its query, stop, terminate); the wording and
            # the 403 are made up, RunPod documents only "Pod-scoped API key".
            for item in selection:
                if (
                    item.name not in ("pod", "podStop", "podTerminate")
                    or (item.args.get("input") or {}).get("podId") != own_pod
                ):
                    return 403, {"errors": [{"message": f"a pod-scoped key cannot {item.name} that"}]}
        roots = self._mutations if kind == "mutation" else self._queries
        data, errors = {}, []
        for item in selection:
            if item.name not in roots:
                root = "Mutation" if kind == "mutation" else "Query"
                return 400, {"errors": [{"message": f'Cannot query field "{item.name}" on type "{root}".'}]}
            with self.lock:
                self.calls.append((item.name, item.args))
            with self.lock:
                if item.name == "pod" and self._query_errors:
                    self._query_errors -= 1
                    data[item.name] = None
                    errors.append({"message": self._query_error_message, "path": [item.name]})
                    continue
            try:
                try:
                    inspect.signature(roots[item.name]).bind(**item.args)
                except TypeError:  # an argument the field does not take, or a missing one
                    raise GraphQLError(
                        f'Wrong arguments {sorted(item.args)} on field "{item.name}".', 400
                    ) from None
                # Checked against a full sample first, as a GraphQL server validates before it runs: a
                # selection is refused even when the answer would be null (a gone pod).
                project(self._sample(item.name), item.selection, item.name)
                data[item.name] = project(roots[item.name](**item.args), item.selection, item.name)
            except GraphQLError as exc:
                if exc.status != 200:
                    return exc.status, {"errors": [{"message": str(exc)}]}
                data[item.name] = None
                errors.append({"message": str(exc), "path": [item.name]})
        creates = {"podFindAndDeployOnDemand", "podRentInterruptable"}
        with self.lock:
            if self._create_then_fail and any(item.name in creates for item in selection) and not errors:
                self._create_then_fail -= 1
                return 502, {"errors": [{"message": "Bad Gateway"}]}  # the pod was made all the same
            if self._create_then_error and any(item.name in creates for item in selection) and not errors:
                self._create_then_error -= 1
                # ERR200: the pod was made, its read-back failed: an error inside an HTTP 200.
                return 200, {"errors": [{"message": self._create_error_message}], "data": None}
        return 200, ({"errors": errors, "data": data} if errors else {"data": data})

    @property
    def _queries(self) -> dict[str, Callable]:
        return {"gpuTypes": self._gpu_types, "pod": self._pod, "myself": self._myself}

    @property
    def _mutations(self) -> dict[str, Callable]:
        return {
            "podFindAndDeployOnDemand": lambda input: self._deploy(input, interruptible=False),
            "podRentInterruptable": lambda input: self._deploy(input, interruptible=True),
            "podStop": self._stop,
            "podTerminate": self._terminate,
        }

    def _sample(self, root: str):
        """A full answer of the root field's type, every list non-empty, to check selections against."""
        gpu = next(iter(GPU_TYPES))
        pod = FakePod(
            "sample", {"name": "s", "imageName": "i", "ports": "22/tcp"}, gpu, 0.0, False, "RUNNING"
        )
        pod.started = time.monotonic()
        pod_view = self._pod_view(pod)
        return {
            "gpuTypes": [self._gpu_view(gpu)],
            "pod": pod_view,
            "myself": {
                "__typename": "User",
                "id": "user_fake",
                "pods": [pod_view],
                "networkVolumes": [{"id": "v", "name": "n", "size": 1, "dataCenterId": "EU-RO-1"}],
            },
            "podFindAndDeployOnDemand": pod_view,
            "podRentInterruptable": pod_view,
            "podStop": pod_view,
            "podTerminate": "void",  # a scalar (it answers null): no selection set allowed
        }[root]

    # -- resolvers -------------------------------------------------------------------------------------------

    def _gpu_types(self, input: dict | None = None) -> list[dict]:
        """SDK queries/gpus.py: gpuTypes, or gpuTypes(input: {id}) answering [] for an unknown id."""
        with self.lock:
            gpus = [g for g in self.gpus.values() if not input or g["id"] == input.get("id")]
            return [self._gpu_view(g) for g in gpus]

    def _gpu_view(self, gpu: dict) -> dict:
        def lowest_price(input: dict) -> dict:
            # DOCS "Check GPU type availability": per-GPU prices for gpuCount; secureCloud picks the cloud;
            # dataCenterId (public clients send it: jobs/pod/runpod.py _lowest_price) one datacenter.
            count, secure = input.get("gpuCount", 1), input.get("secureCloud")
            where = input.get("dataCenterId")
            known = set(self.datacenters) | {v["dataCenterId"] for v in self.network_volumes}
            if where is not None and where not in known:
                raise GraphQLError(f"Unknown dataCenterId {where}")  # wording made up
            offers = [self._offer(gpu, dc) for dc in ([where] if where else [None, *self.datacenters])]
            offers = [o for o in offers if count <= o["maxGpuCount"]]
            clouds = {
                True: ("secureSpotPrice", "securePrice"),
                False: ("communitySpotPrice", "communityPrice"),
            }
            picked = [clouds[secure]] if secure is not None else list(clouds.values())
            return {
                "__typename": "LowestPrice",
                "minimumBidPrice": min((o[spot] for o in offers for spot, _ in picked), default=None),
                "uninterruptablePrice": min(
                    (o[demand] for o in offers for _, demand in picked), default=None
                ),
            }

        view = {k: v for k, v in gpu.items() if k != "maxGpuCount"}
        return {
            "__typename": "GpuType",
            **view,
            "maxGpuCount": gpu["maxGpuCount"],
            "lowestPrice": lowest_price,
        }

    def _offer(self, gpu: dict, datacenter: str | None) -> dict:
        """The GPU's prices and stock in one datacenter (None: the list prices, no datacenter of note)."""
        return {**gpu, **self.datacenters.get(datacenter, {}).get(gpu["id"], {})}

    def _pod(self, input: dict) -> dict | None:
        with self.lock:
            pod = self.pods.get(input["podId"])
            return self._pod_view(pod) if pod else None

    def _myself(self) -> dict:
        with self.lock:
            return {
                "__typename": "User",
                "id": "user_fake",
                # LAG: a pod is listed here only `listing_lag` seconds after its create.
                "pods": [
                    self._pod_view(p)
                    for p in self.pods.values()
                    if time.time() - p.created_at >= self.listing_lag
                ],
                "networkVolumes": [dict(v) for v in self.network_volumes],
            }

    def _deploy(self, input: dict, interruptible: bool, rest: bool = False) -> dict:
        """DOCS "Create on-demand Pod" / "Create spot Pod"; checks what graphql-js and RunPod would. `rest`:
        a REST v2 create, already checked (fake_runpod_rest.py), whose CUDA floor GraphQL has no field for."""
        with self.lock:
            self.created.append(input)
        allowed = SPOT_INPUT if interruptible else DEPLOY_INPUT | ({"minCudaVersion"} if rest else set())
        type_name = "PodRentInterruptableInput" if interruptible else "PodFindAndDeployOnDemandInput"
        for key in input:
            if key not in allowed:
                raise GraphQLError(f'Field "{key}" is not defined by type "{type_name}".', 400)
        cloud = input.get("cloudType", Enum("ALL"))
        if not isinstance(cloud, Enum) or cloud not in ("ALL", "SECURE", "COMMUNITY"):
            raise GraphQLError(
                f'Enum "CloudTypeEnum" cannot represent non-enum value: {json.dumps(cloud)}.', 400
            )
        for pair in input.get("env") or []:
            if set(pair) != {"key", "value"} or not all(isinstance(v, str) for v in pair.values()):
                raise GraphQLError(f"env items are {{key: String, value: String}}, got {pair}", 400)
        with self.lock:
            if self._failures:
                raise GraphQLError(self._failures.pop(0))
            for key in ("name", "imageName", "gpuTypeId"):
                if not input.get(key):
                    raise GraphQLError(f"{key} is required")  # wording made up
            gpu = self.gpus.get(input["gpuTypeId"])
            if gpu is None:
                raise GraphQLError(f"Invalid gpuTypeId {input['gpuTypeId']}")  # wording made up
            count = input.get("gpuCount", 1)
            if input.get("networkVolumeId"):
                if cloud == "COMMUNITY":  # NETVOL; wording made up
                    raise GraphQLError("Network volumes are only available in Secure Cloud")
                cloud = Enum("SECURE")
            where = input.get("dataCenterId")
            prices = self._gpu_view(gpu)["lowestPrice"](
                {
                    "gpuCount": count,
                    **({"secureCloud": cloud == "SECURE"} if cloud != "ALL" else {}),
                    **({"dataCenterId": where} if where in self.datacenters else {}),
                }
            )
            if prices["uninterruptablePrice"] is None:
                raise GraphQLError(NO_INSTANCES)
            if interruptible:
                bid = input.get("bidPerGpu")
                if not isinstance(bid, int | float) or bid < prices["minimumBidPrice"]:
                    raise GraphQLError(f"bidPerGpu must be at least {prices['minimumBidPrice']}")  # made up
                per_gpu = float(bid)
            else:
                per_gpu = prices["uninterruptablePrice"]
            pod = FakePod(_id(14), input, gpu, round(per_gpu * count, 4), interruptible)
            fits = self._hosts_for(input)
            pod.host_cuda = fits[-1] if fits else None  # the newest host that fits
            if not fits:
                pod.never_starts = f"no host fits {self._cuda_asked(input)} (hosts have {self.hosts_cuda})"
            elif input["imageName"] in self.private_images and not input.get("containerRegistryAuthId"):
                pod.never_starts = f"{input['imageName']}: pull access denied (private, no registry auth)"
            pod.last_status_change = _stamp("Rented by User")
            self.pods[pod.id] = pod
        threading.Thread(target=self._live, args=(pod,), daemon=True).start()
        return self._pod_view(pod)

    @property
    def hosts_cuda(self) -> tuple[str, ...]:
        return (self.host_cuda,) if isinstance(self.host_cuda, str) else tuple(self.host_cuda)

    def _hosts_for(self, input: dict) -> list[str]:
        """The host CUDA versions a create allows, oldest first: all of them, those in its
        allowedCudaVersions (APIREF: matching is exact), or those at least its minCudaVersion (REST v2's
        floor, compared numerically; fake_runpod_rest.py)."""
        allowed, floor = input.get("allowedCudaVersions"), input.get("minCudaVersion")

        def key(v: str) -> tuple[int, ...]:
            return tuple(int(x) for x in v.split("."))

        fits = [
            v
            for v in self.hosts_cuda
            if (not allowed or v in allowed) and (not floor or key(v) >= key(floor))
        ]
        return sorted(fits, key=key)

    @staticmethod
    def _cuda_asked(input: dict) -> str:
        if input.get("minCudaVersion"):
            return f"CUDA >= {input['minCudaVersion']}"
        return f"CUDA in {input.get('allowedCudaVersions')}"

    def _live_pod(self, pod_id: str) -> FakePod:
        """The pod podStop / podTerminate act on (call with the lock held)."""
        pod = self.pods.get(pod_id)
        if pod is None:
            raise GraphQLError(f"Pod {pod_id} not found")  # wording made up
        return pod

    def _stop(self, input: dict) -> dict:
        """SDK mutations/pods.py podStop: the container stops, the pod and its volume stay (EXITED)."""
        with self.lock:
            pod = self._live_pod(input["podId"])
            self._halt(pod, "Stopped by User")
            return self._pod_view(pod)

    def _terminate(self, input: dict) -> None:
        """SDK mutations/pods.py podTerminate: returns nothing; afterwards pod(...) is null."""
        with self.lock:
            pod = self._live_pod(input["podId"])
            if self._terminate_failures:
                self._terminate_failures -= 1
                raise GraphQLError(self._terminate_message)
            self._halt(pod, "Terminated by User")
        self._forget(pod.id)

    def _pod_view(self, pod: FakePod) -> dict:
        """The Pod type: SDK queries/pods.py's fields; runtime as DOCS "Get Pod by ID" answers it."""
        spec = pod.input
        runtime = None
        if pod.status == "RUNNING" and pod.started is not None:
            runtime = {
                "__typename": "PodRuntime",
                "uptimeInSeconds": int((time.monotonic() - pod.started) * self.speed),
                "ports": [
                    {"__typename": "PodRuntimePorts", "ip": "100.65.0.101", "isIpPublic": False,
                     "privatePort": int(port), "publicPort": 60000 + int(port) % 5000, "type": kind}
                    for port, _, kind in (p.partition("/") for p in spec.get("ports", "").split(",") if p)
                ],
                "gpus": [{"__typename": "PodRuntimeGpus", "id": f"GPU-{pod.machine_id}-{i}", "gpuUtilPercent": 0,
                          "memoryUtilPercent": 0} for i in range(spec.get("gpuCount", 1))],
                "container": {"__typename": "PodRuntimeContainer", "cpuPercent": 0, "memoryPercent": 0},
            }  # fmt: skip
        return {
            "__typename": "Pod",
            "id": pod.id,
            "name": spec["name"],
            "desiredStatus": pod.status,
            "lastStatusChange": pod.last_status_change,
            # RunPod reports 0 for an exited or terminated pod in places (issue 25): the launcher must keep
            # the price the pod ran at.
            "costPerHr": 0.0 if pod.status == "EXITED" else pod.cost_per_hr,
            "gpuCount": spec.get("gpuCount", 1),
            "imageName": spec["imageName"],
            "dockerArgs": spec.get("dockerArgs", ""),
            "env": [f"{k}={v}" for k, v in pod.env.items()],  # DOCS' create answer; values included
            "machineId": pod.machine_id,
            "machine": {
                "__typename": "Machine",
                "podHostId": f"{pod.id}-64410065",
                "gpuDisplayName": pod.gpu["displayName"],
            },
            "volumeInGb": spec.get("volumeInGb", 0),
            "containerDiskInGb": spec.get("containerDiskInGb", 0),
            "volumeMountPath": spec.get("volumeMountPath", "/workspace"),
            "ports": spec.get("ports", ""),
            "runtime": runtime,
        }

    # -- a pod's life ---------------------------------------------------------------------------------------

    def _live(self, pod: FakePod) -> None:
        try:
            self._life(pod)
        except Exception:
            if not pod.halt.is_set():
                raise
            # A pod already stopped or terminated, still syncing its volume while a test tears down its
            # S3 server: nothing anyone waits for.

    def _life(self, pod: FakePod) -> None:
        """CREATED for start_after s (the image is pulled), then RUNNING: the command (started again each
        time it exits, with restart_on_exit), or run_for s, or until stopped; then EXITED. A pod no host
        can run stays RUNNING with runtime null until it is stopped or terminated."""
        if pod.halt.wait(self.start_after):
            return
        if pod.never_starts:
            with self.lock:
                pod.status = "RUNNING"  # RunPod's desiredStatus: what was asked for, not what runs
            return
        while True:
            env, argv = self._container(pod)
            with self.lock:
                if pod.halt.is_set():
                    return
                pod.status, pod.started = "RUNNING", time.monotonic()
                if argv:
                    pod.synced.clear()
                    # Its own session, so close() can kill what it started; signals still go to it alone.
                    pod.proc = subprocess.Popen(argv, env=env, cwd=self.workspace, start_new_session=True)
            if not pod.proc:
                if self.run_for is not None and not pod.halt.wait(self.run_for):
                    with self.lock:
                        pod.status, pod.last_status_change = "EXITED", _stamp("Exited")
                return
            if self.volume_sync:
                self.volume_sync.while_running(self.workspace, pod.proc)
            code = pod.proc.wait()
            # The rest of the container dies with its first process (at once: its pid is free again now).
            end_container(pod.proc.pid)
            if self.volume_sync:
                self.volume_sync.push(self.workspace)
            pod.synced.set()
            with self.lock:
                pod.exit_code = code
                if pod.status != "RUNNING" or pod.halt.is_set():
                    return
                if not self.restart_on_exit:
                    pod.status, pod.last_status_change = "EXITED", _stamp("Exited")
                    return
                # DSTACK: the container starts again; the pod stays RUNNING, uptime from 0 again.
                pod.restarts += 1
                pod.started = None
            if pod.halt.wait(self.restart_after):
                return

    def _boot_env(self, env: dict[str, str]) -> dict[str, str]:
        """The env as the container sees it: each {{ RUNPOD_SECRET_name }} replaced by the account secret's
        value at this boot (docs.runpod.io pods/templates/secrets; a rotated value reaches the next boot). A
        reference to no secret is left as written (made up: RunPod does not say what it does then)."""
        with self.lock:
            values = {name: s["value"] for name, s in self.account_secrets.items()}
        return {k: SECRET_REF.sub(lambda m: values.get(m.group(1), m.group(0)), v) for k, v in env.items()}

    def _container(self, pod: FakePod) -> tuple[dict, list[str] | None]:
        """The env and argv of one start of the pod's container (None: no command, a timer stands in)."""
        if not self.command:
            return {}, None
        # RunPod sets RUNPOD_POD_ID and a pod-scoped RUNPOD_API_KEY in every pod (PODKEY); RUNPOD_API_URL is
        # this fake's address, where a real pod's client uses its default (api.runpod.io).
        env = {k: os.environ[k] for k in BASE_ENV if k in os.environ} | self._boot_env(pod.env)
        env |= {"RUNPOD_POD_ID": pod.id, "RUNPOD_API_KEY": pod.pod_key, "RUNPOD_API_URL": self.url}
        # RunPod also sets RUNPOD_CPU_COUNT, the pod's vCPUs (Axolotl sizes its data workers by it:
        # axolotl/utils/datasets.py get_default_process_count). This host's "pod" shares 2 cores with the
        # suite's other worker: one each. With 2, Axolotl's packing sampler forks a pool whose children
        # compile its numba kernels afresh on every call, ~9.8 s a call against ~1.2 s in one process
        # (measured here on 7 rows), four calls a start: ~35 s of every pod start's ~75.
        env["RUNPOD_CPU_COUNT"] = "1"
        self.workspace.mkdir(parents=True, exist_ok=True)
        mount = pod.input.get("volumeMountPath")
        if self.volume_sync and mount:
            # Another pod's container on the same volume is dead before this one starts: RunPod kills a
            # reclaimed or stopped container within seconds (SIGKILL about 5 s after SIGTERM), and a new
            # pod takes longer than that to pull its image. Here all pods share one workspace, so a new
            # pod's pull waits for the old container's end and its last push, or it would overwrite files
            # the old process is still writing.
            with self.lock:
                ended = [*self.pods.values(), *self.gone.values()]
                others = [p for p in ended if p is not pod and p.proc and p.halt.is_set()]
            for other in others:  # halted: SIGKILL follows SIGTERM within its grace
                other.proc.wait()
                other.synced.wait(60)
            # The pod sees its network volume at volumeMountPath; on this machine that is the workspace.
            env = {
                k: str(self.workspace) + v[len(mount) :] if v.startswith(mount) else v for k, v in env.items()
            }
            self.volume_sync.pull(self.workspace)
        argv = self.command(env, self.workspace)
        if pod.input.get("dockerArgs"):
            # DOCKERARGS: the pod's start command replaces the image's CMD (what `command` returned; it has
            # set the image's environment in env meanwhile) and runs through the image's ENTRYPOINT, which
            # for Axolotl's image ends in `exec "$@"`. How RunPod splits the string is not documented:
            # shell words here (start commands are written as `bash -c '...'`).
            argv = shlex.split(pod.input["dockerArgs"])
        return env, argv

    def _halt(self, pod: FakePod, why: str, grace: float | None = None) -> None:
        """SIGTERM to the pod's process, SIGKILL after `grace` (default stop_grace) s; EXITED at once."""
        pod.halt.set()
        pod.halted_at = pod.halted_at or time.time()
        if pod.status != "EXITED":
            pod.status, pod.last_status_change = "EXITED", _stamp(why)
        proc = pod.proc
        if proc and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

            def kill():
                try:
                    proc.wait(self.stop_grace if grace is None else grace)
                except subprocess.TimeoutExpired:
                    proc.kill()

            threading.Thread(target=kill, daemon=True).start()

    # -- REST API v2: templates (TEMPLATES) ---------------------------------------------------------------

    def _create_template(self, key: str | None, body: bytes) -> tuple[int, dict]:
        """POST /v2/templates: 201 and the Template, or an RFC 9457 problem {title, status, detail, errors}."""
        if key != self.api_key:  # the reference's UnauthorizedError example; a wrong key's wording made up
            return _problem(401, "Unauthorized", "missing bearer token" if not key else "invalid api key")
        try:
            given = json.loads(body)
        except ValueError:
            return _problem(400, "Bad Request", "request could not be processed")
        errors = _template_errors(given)
        if errors:
            return _problem(422, "Unprocessable Entity", "Request validation failed.", errors)
        with self.lock:
            self.calls.append(("POST /v2/templates", given))
            if any(t["name"] == given["name"] for t in self.templates.values()):  # made-up wording
                return _problem(400, "Bad Request", f"template name {given['name']!r} is already taken")
            template = {**TEMPLATE_DEFAULTS, **given, "id": _id(8)}
            self.templates[template["id"]] = template
        return 201, template

    def _forget(self, pod_id: str) -> None:
        with self.lock:
            pod = self.pods.pop(pod_id, None)
            if pod:
                self.gone[pod_id] = pod


# POST /v2/templates, RunPod's REST API v2 createTemplate (TEMPLATES = docs.runpod.io/api-reference-v2/
# templates/create-a-template; github.com/runpod/docs api-reference-v2/openapi.json @ a900806e, 2026-08-20):
# CreateTemplateRequest is ContainerConfig (args, disk >= 1, env {str: str}, image, ports ["port/proto"],
# registry) plus name, allowedCudaVersions ("major.minor"), category (CPU, NVIDIA, AMD), mounts
# ({persistent: {size >= 10, path}} only), public, serverless, startJupyter, startSsh; name and image
# required; unevaluatedProperties false. 201 answers the Template: every field, defaults filled in, and
# its id. Errors: {title, status, detail, errors?} (RFC 9457; the validation example's wording
# "$: additional properties 'bogus' not allowed"). Names are unique (DOCS sdks/graphql/
# manage-pod-templates.mdx); v2's status and wording for a taken name are not documented: made up here.
TEMPLATE_TYPES = {
    "name": str, "image": str, "args": str, "disk": int, "env": dict, "ports": list, "registry": (str, type(None)),
    "allowedCudaVersions": list, "category": str, "mounts": dict, "public": bool, "serverless": bool,
    "startJupyter": bool, "startSsh": bool,
}  # fmt: skip
TEMPLATE_DEFAULTS = {
    "args": "", "disk": 50, "env": {}, "ports": [], "registry": None, "category": "NVIDIA", "mounts": {},
    "public": False, "serverless": False, "startJupyter": True, "startSsh": True, "allowedCudaVersions": [],
}  # fmt: skip


def _template_errors(given) -> list[str]:
    if not isinstance(given, dict):
        return ["$: expected object"]
    errors = [f"$: additional properties '{k}' not allowed" for k in given if k not in TEMPLATE_TYPES]
    errors += [f"$: missing property '{k}'" for k in ("name", "image") if not given.get(k)]
    for key, kind in TEMPLATE_TYPES.items():
        if key in given and (
            not isinstance(given[key], kind) or isinstance(given[key], bool) != (kind is bool)
        ):
            errors.append(f"$.{key}: wrong type")
    if errors:
        return errors
    ports, env, mounts = given.get("ports", []), given.get("env", {}), given.get("mounts", {})
    errors += [
        f"$.ports: {p!r} is not port/protocol" for p in ports if not re.fullmatch(r"\d+/(http|tcp)", str(p))
    ]
    errors += [f"$.env.{k}: expected string" for k, v in env.items() if not isinstance(v, str)]
    errors += [
        f"$.allowedCudaVersions: {v!r}"
        for v in given.get("allowedCudaVersions", [])
        if not re.fullmatch(r"\d+\.\d+", str(v))
    ]
    if given.get("category", "NVIDIA") not in ("CPU", "NVIDIA", "AMD"):
        errors.append("$.category: value must be one of 'CPU', 'NVIDIA', 'AMD'")
    if given.get("disk", 1) < 1:
        errors.append("$.disk: minimum: got < 1, want 1")
    if set(mounts) - {"persistent"}:
        errors.append("$.mounts: additional properties not allowed (templates take one persistent mount)")
    persistent = mounts.get("persistent")
    if persistent is not None and not (
        isinstance(persistent, dict)
        and set(persistent) == {"size", "path"}
        and isinstance(persistent["path"], str)
        and isinstance(persistent["size"], int)
        and persistent["size"] >= 10
    ):
        errors.append("$.mounts.persistent: size (integer >= 10) and path required, nothing else")
    return errors


def _problem(status: int, title: str, detail: str, errors: list[str] | None = None) -> tuple[int, dict]:
    return status, {
        "title": title,
        "status": status,
        "detail": detail,
        **({"errors": errors} if errors else {}),
    }


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 -- http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, payload = self.server.fake.answer(self.path, headers, body, self.command)
        self.send_response(status)
        rest = urlparse(self.path).path.startswith("/v2/")
        if status == 429 and rest:  # REST v2's TooManyRequestsError: Retry-After, integer seconds
            self.send_header("Retry-After", str(self.server.fake.retry_after))
        if payload is None:  # 204: no body (REST v2 deletePod, podAction terminate)
            self.end_headers()
            return
        data = json.dumps(payload).encode()
        problem = rest and status >= 400  # RFC 9457 (REST v2, fake_runpod_rest.py); GraphQL: plain JSON
        self.send_header("Content-Type", "application/problem+json" if problem else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_DELETE = do_PATCH = do_POST  # noqa: N815 -- REST v2's methods; answer() routes by method and path

    def log_message(self, *args):
        pass
