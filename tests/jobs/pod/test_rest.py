"""jobs/pod/rest.py (RunPod's REST API v2) against the fake RunPod on loopback, which answers both APIs over
the same pods (tests/fake_runpod.py, tests/fake_runpod_rest.py); nothing here reaches RunPod."""

from __future__ import annotations

import time

import httpx
import pytest

from brightrun.errors import ConfigError
from jobs.pod import pods, rest, runpod
from tests.fake_runpod import FakeRunPod
from tests.jobs.pod.test_runpod import POD as GRAPHQL_POD
from tests.jobs.pod.test_runpod import wait_for

# test_runpod's pod, with every field REST v2 has a place for: the create body is checked field by field.
POD = GRAPHQL_POD | {
    "name": "brightrun-rest",
    "volumeMountPath": "/workspace/data",
    "ports": "22/tcp,8888/http",
    "dockerArgs": "bash -c 'sleep 600'",
    "allowedCudaVersions": ["12.8", "13.0"],
    "containerRegistryAuthId": "cr-auth-1",
}


@pytest.fixture
def fake(tmp_path, monkeypatch):
    with FakeRunPod(workspace=tmp_path / "workspace", retry_after=1) as server:
        monkeypatch.setenv("RUNPOD_API_URL", server.url)
        monkeypatch.setenv("RUNPOD_API_KEY", server.api_key)
        monkeypatch.delenv("RUNPOD_API", raising=False)
        yield server


@pytest.fixture
def client(fake):
    with rest.RestClient(max_time=3) as c:
        yield c


def sent(fake, operation: str) -> list[dict]:
    return [args for name, args in fake.calls if name == operation]


def test_create_get_list_stop_terminate_in_graphqls_shape(client, fake, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", 'hf_"quoted"\\value')
    made = client.deploy_on_demand(env={"BRIGHTRUN_RUN_ID": "r1"}, secrets=["HF_TOKEN"], **POD)
    # What went over the wire: CreatePodRequest's names (api-reference-v2/openapi.json), env an object.
    [body] = sent(fake, "createPod")
    assert body == {
        "name": "brightrun-rest",
        "image": "axolotlai/axolotl-cloud:main-latest",
        "gpu": {"id": "NVIDIA H100 PCIe", "count": 2, "minCudaVersion": "12.8"},  # a floor: newer hosts too
        "cloud": "SECURE",
        "disk": 40,
        "mounts": {"persistent": {"size": 50, "path": "/workspace/data"}},
        "args": "bash -c 'sleep 600'",
        "ports": ["22/tcp", "8888/http"],
        "env": {"BRIGHTRUN_RUN_ID": "r1", "HF_TOKEN": "{{ RUNPOD_SECRET_brightrun_hf_token }}"},
        "registry": "cr-auth-1",
    }
    assert fake.requests[-1]["key_in"] == "header" and fake.requests[-1]["path"] == "/v2/pods"
    assert not any(name.startswith("pod") for name, _ in fake.calls)  # no GraphQL for any of it
    # The answer, as the GraphQL Pod the rest of jobs/pod reads.
    assert made["name"] == "brightrun-rest" and made["desiredStatus"] == "RUNNING"  # PROVISIONING
    assert made["costPerHr"] == 2 * 2.39 and made["runtime"] is None
    assert (made["gpuCount"], made["imageName"], made["volumeMountPath"]) == (
        2,
        POD["imageName"],
        POD["volumeMountPath"],
    )
    # The value went to the account's RunPod secret, never into the pod's env: the container gets it at boot.
    assert fake.account_secrets["brightrun_hf_token"]["value"] == 'hf_"quoted"\\value'
    assert fake._boot_env(fake.pods[made["id"]].env)["HF_TOKEN"] == 'hf_"quoted"\\value'
    assert fake.created[-1]["dockerArgs"] == POD["dockerArgs"]

    up = wait_for(lambda: (client.pod(made["id"]) or {}).get("runtime"))
    assert up["uptimeInSeconds"] >= 0
    assert [(p["privatePort"], p["type"]) for p in up["ports"]] == [(22, "tcp"), (8888, "http")]
    running = client.pod(made["id"])
    assert running["desiredStatus"] == "RUNNING" and running["status"] == "RUNNING"
    assert set(running) >= {"id", "name", "desiredStatus", "costPerHr", "runtime", "lastStatusChange"}
    assert [p["id"] for p in client.pods()] == [made["id"]]

    stopped = client.stop(made["id"])
    assert stopped["desiredStatus"] == "EXITED" and stopped["runtime"] is None
    assert stopped["costPerHr"] == 0.0  # "0.0 when EXITED": billing.saw_price ignores it
    assert sent(fake, "podAction") == [{"id": made["id"], "action": "stop"}]
    with pytest.raises(
        runpod.RunPodError, match=r"^podAction: HTTP 409 Conflict: cannot stop a pod that is EXITED"
    ):
        client.stop(made["id"])
    assert client.terminate(made["id"]) is None
    assert made["id"] in fake.gone and client.pod(made["id"]) is None and client.pods() == []
    # A second terminate: 404, gone already: done, whatever the body says (a bare 404 too).
    assert client.terminate(made["id"]) is None


def test_a_terminated_pod_answered_as_terminated_is_gone_too(client, fake):
    fake.rest_gone = "terminated"  # the reference does not say which: both read as gone
    pod_id = client.deploy_on_demand(**POD)["id"]
    client.terminate(pod_id)
    raw = httpx.get(f"{client.base}/v2/pods/{pod_id}", headers={"Authorization": f"Bearer {fake.api_key}"})
    assert raw.status_code == 200 and raw.json()["status"] == "TERMINATED"
    assert client.pod(pod_id) is None


def test_a_network_volume_is_a_network_mount_in_its_datacenter(client, fake):
    pod = {k: v for k, v in POD.items() if k != "volumeInGb"}
    made = client.deploy_on_demand(networkVolumeId="x7k2volume", dataCenterId="EU-RO-1", **pod)
    [body] = sent(fake, "createPod")
    assert body["mounts"] == {"network": [{"volumeId": "x7k2volume", "path": "/workspace/data"}]}
    assert body["dataCenterIds"] == ["EU-RO-1"]
    assert (made["networkVolumeId"], made["dataCenterId"]) == ("x7k2volume", "EU-RO-1")


def test_the_fakes_contract_errors_are_problems(fake):
    """RFC 9457 problem+json, 422 listing what broke CreatePodRequest (unevaluatedProperties false)."""
    headers = {"Authorization": f"Bearer {fake.api_key}"}
    base = fake.url.removesuffix("/graphql")
    bad = httpx.post(
        f"{base}/v2/pods", json={"name": "x", "image": "a/b", "gpu": {"id": "g"}, "bogus": 1}, headers=headers
    )
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    assert bad.json() == {
        "title": "Unprocessable Entity",
        "status": 422,
        "detail": "Request validation failed.",
        "errors": ["$: additional properties 'bogus' not allowed"],
    }
    assert httpx.get(f"{base}/v2/pods").status_code == 401
    assert not fake.pods and not fake.created


def test_no_capacity_is_a_400_answered_once(client, fake):
    fake.fail_next(fake.NO_INSTANCES)
    with pytest.raises(runpod.NoInstances, match=r"^createPod: HTTP 400 Bad Request: There are no longer"):
        client.deploy_on_demand(**POD)
    assert len(fake.requests) == 1  # an answer: never re-sent
    with pytest.raises(runpod.NoInstances):  # out of stock (the fake's RTX A6000)
        client.deploy_on_demand(**{**POD, "gpuTypeId": "NVIDIA RTX A6000"})
    fake.fail_next("something else")  # another refusal: nothing made, said so
    with pytest.raises(runpod.RunPodError, match=r"something else \(nothing was created\)$") as caught:
        client.deploy_on_demand(**POD)
    assert not isinstance(caught.value, runpod.CreateUnsure) and not fake.pods


def test_429_is_waited_out_for_retry_after_then_rate_limited(client, fake):
    fake.rate_limit(1)
    start = time.monotonic()
    pod_id = client.deploy_on_demand(**POD)["id"]  # RunPod did nothing on a 429: sent again
    assert time.monotonic() - start >= 1.0  # Retry-After: 1
    assert list(fake.pods) == [pod_id] and len(fake.requests) == 2 and len(fake.created) == 1
    fake.retry_after = 0  # "retry now": at once, no backoff of ours on top
    fake.rate_limit(2)
    start = time.monotonic()
    assert client.pod(pod_id)["id"] == pod_id and time.monotonic() - start < 0.5
    fake.rate_limit(10**6)
    fake.retry_after = 5  # longer than the 3 s the client may spend: no point waiting
    start = time.monotonic()
    with pytest.raises(runpod.RateLimited, match=r"^getPod: HTTP 429 Too Many Requests: rate limit exceeded"):
        client.pod(pod_id)
    assert time.monotonic() - start < 1


def test_server_errors_are_retried_for_reads_but_a_create_is_never_sent_twice(client, fake):
    fake.server_error(2)
    assert client.pods() == []
    fake.server_error(1)
    with pytest.raises(
        runpod.CreateUnsure, match=r"^createPod: HTTP 502 Bad Gateway: upstream error; the pod may exist"
    ):
        client.deploy_on_demand(**POD)
    assert len(fake.requests) == 4 and not fake.pods  # 3 lists, 1 create
    fake.server_error(10**6)
    with pytest.raises(
        runpod.RunPodError, match=r"^listPods: HTTP 502 .*still failing after 0.5 s of retries"
    ):
        rest.RestClient(max_time=0.5).pods()


def test_an_ambiguous_create_is_adopted_by_name_once_listed(fake, monkeypatch):
    """RunPod made the pod and answered 5xx; its list lags: create_or_find looks it up by name until it is
    listed and adopts it, the create sent once."""
    fake.listing_lag = 0.5
    fake.error_after_create(1, "upstream timeout")
    api = pods.client()
    assert isinstance(api, rest.RestClient)
    spec = {k: v for k, v in POD.items() if k != "dockerArgs"}
    pod, why = pods.create_or_find(api, False, None, spec, {"A": "1"}, [])
    assert why == "" and pod["id"] in fake.pods and pod["name"] == "brightrun-rest"
    assert fake.did("create") == 1 and fake.did("list") >= 2


def test_spot_prices_and_volumes_go_through_graphql(client, fake):
    assert client.price("NVIDIA H100 PCIe", 1, spot=True) == 0.99
    fake.network_volumes.append({"id": "v1", "name": "n", "size": 50, "dataCenterId": "EU-RO-1"})
    assert [v["id"] for v in client.network_volumes()] == ["v1"]
    spot = client.rent_interruptable(1.3, **POD)
    assert [name for name, _ in fake.calls] == ["gpuTypes", "myself", "podRentInterruptable"]
    assert client.pod(spot["id"])["name"] == "brightrun-rest"  # and then REST, on the same pod
    everywhere = client.deploy_on_demand(**{**POD, "cloudType": "ALL"})  # v2 places one cloud only
    assert fake.calls[-1][0] == "podFindAndDeployOnDemand" and everywhere["id"] in fake.pods


def test_bad_input_fails_before_any_request(client, fake):
    with pytest.raises(ValueError, match=r"^createPod: unknown pod field\(s\) gpuType;"):
        client.deploy_on_demand(**{**POD, "gpuType": "x"})
    # A secret missing here may be on the account: asked there first (test_secrets.py).
    with pytest.raises(ValueError, match=r"needs 10 GB or more"):
        client.deploy_on_demand(**{**POD, "volumeInGb": 5})
    assert not fake.requests


def test_keys_refused_and_never_in_errors(fake):
    key = "rp_WRONG_secret_value_123"
    client = rest.RestClient(api_key=key, max_time=3)
    with pytest.raises(
        runpod.AuthError, match=r"^getPod: RunPod refused the API key \(HTTP 401 Unauthorized"
    ):
        client.pod("abc")
    assert len(fake.requests) == 1 and key not in repr(client) and key not in repr(client._http.headers)
    client = rest.RestClient(max_time=3)
    fake.fail_next(f"echoing {fake.api_key} back")
    with pytest.raises(runpod.RunPodError) as caught:
        client.deploy_on_demand(**POD)
    assert fake.api_key not in str(caught.value) and "[RUNPOD_API_KEY]" in str(caught.value)


def test_a_pod_scoped_key_reaches_its_own_pod_only(client, fake):
    mine, other = client.deploy_on_demand(**POD)["id"], client.deploy_on_demand(**POD)["id"]
    own = rest.RestClient(api_key=fake.pods[mine].pod_key, max_time=3)
    with pytest.raises(runpod.AuthError, match=r"HTTP 403 Forbidden"):
        own.terminate(other)
    with pytest.raises(runpod.AuthError):
        own.pods()
    own.terminate(mine)
    assert mine in fake.gone and other in fake.pods


def test_a_pod_whose_key_rest_refuses_ends_itself_through_graphql(client, fake, monkeypatch, capsys):
    """Whether REST v2 takes a pod-scoped key is not documented: refused there (401), the pod's own
    terminate goes through GraphQL rather than leave it billing."""
    from jobs.pod import selfend

    pod_id = client.deploy_on_demand(**POD)["id"]
    fake.rest_pod_keys = False
    monkeypatch.setenv("RUNPOD_POD_ID", pod_id)
    monkeypatch.setenv("RUNPOD_API_KEY", fake.pods[pod_id].pod_key)
    monkeypatch.delenv("BRIGHTRUN_VOLUME", raising=False)
    assert selfend.main(["ended"]) == 0
    assert pod_id in fake.gone
    said = capsys.readouterr().err
    assert "REST v2 refused the pod's key" in said and "trying GraphQL" in said
    assert f"pod {pod_id} terminated itself (ended)" in said


def test_runpod_api_picks_the_client(fake, monkeypatch):
    assert isinstance(pods.client(), rest.RestClient)
    monkeypatch.setenv("RUNPOD_API", "graphql")
    assert type(pods.client()) is runpod.Client
    monkeypatch.setenv("RUNPOD_API", "soap")
    with pytest.raises(ConfigError, match=r"RUNPOD_API='soap': rest \(the default\) or graphql"):
        pods.client()
    monkeypatch.setenv("RUNPOD_API", "rest")
    monkeypatch.delenv("RUNPOD_API_KEY")
    with pytest.raises(ConfigError, match=r"^RUNPOD_API_KEY is not set"):
        pods.client()


def test_unreachable_api_is_retried_then_an_error(monkeypatch):
    monkeypatch.setenv("RUNPOD_API_KEY", "k")
    client = rest.RestClient(url="http://127.0.0.1:9/graphql", max_time=0.5)  # port 9: nothing listens
    assert client.base == "http://127.0.0.1:9"
    with pytest.raises(runpod.RunPodError, match=r"^getPod: ConnectError"):
        client.pod("abc")
