"""jobs/pod/runpod.py against the fake RunPod GraphQL API on loopback (tests/fake_runpod.py); nothing here
reaches RunPod."""

from __future__ import annotations

import sys
import time

import pytest

from jobs.pod import runpod
from tests.fake_runpod import FakeRunPod

POD = {
    "name": "brightrun-smoke",
    "imageName": "axolotlai/axolotl-cloud:main-latest",
    "gpuTypeId": "NVIDIA H100 PCIe",
    "gpuCount": 2,
    "cloudType": "SECURE",
    "volumeInGb": 50,
    "containerDiskInGb": 40,
    "volumeMountPath": "/workspace",
}
BID = 1.3  # USD per GPU-hour, above the fake's secure-cloud minimum bid for an H100 PCIe (1.25)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    with FakeRunPod(workspace=tmp_path / "workspace") as server:
        monkeypatch.setenv("RUNPOD_API_URL", server.url)
        monkeypatch.setenv("RUNPOD_API_KEY", server.api_key)
        yield server


@pytest.fixture
def client(fake):
    with runpod.Client(max_time=3) as c:
        yield c


def wait_for(check, seconds=5.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not true after {seconds} s")


# -- prices ------------------------------------------------------------------------------------------------


def test_gpu_types_carry_list_and_lowest_prices(client, fake):
    types = {g["id"]: g for g in client.gpu_types(gpu_count=1)}
    assert set(types) == set(fake.gpus)
    h100 = types["NVIDIA H100 PCIe"]
    assert h100["displayName"] == "H100 PCIe" and h100["memoryInGb"] == 80
    assert (h100["securePrice"], h100["communityPrice"]) == (2.39, 1.99)
    assert (h100["secureSpotPrice"], h100["communitySpotPrice"]) == (1.25, 0.99)
    assert h100["lowestPrice"] == {"minimumBidPrice": 0.99, "uninterruptablePrice": 1.99}
    assert types["NVIDIA RTX A6000"]["lowestPrice"] == {"minimumBidPrice": None, "uninterruptablePrice": None}


def test_price_on_demand_and_spot_per_gpu_hour(client, fake):
    assert client.price("NVIDIA H100 PCIe", 2) == 1.99
    assert client.price("NVIDIA H100 PCIe", 2, spot=True) == 0.99
    assert client.price("NVIDIA H100 PCIe", 2, spot=True, secure_cloud=True) == 1.25
    assert fake.calls[-1] == (
        "gpuTypes",
        {"input": {"id": "NVIDIA H100 PCIe"}},
    )  # lowestPrice's own input is read inside the selection set
    fake.gpus["NVIDIA H100 PCIe"]["communityPrice"] = 2.09  # live, never cached
    assert client.price("NVIDIA H100 PCIe", 1, secure_cloud=False) == 2.09


def test_price_of_an_unknown_or_sold_out_gpu_is_an_error(client):
    with pytest.raises(runpod.RunPodError, match=r"gpuTypes: RunPod has no GPU type 'NVIDIA H100'"):
        client.price("NVIDIA H100", 1)
    with pytest.raises(runpod.NoInstances, match=r"no spot price for 1 × NVIDIA RTX A6000"):
        client.price("NVIDIA RTX A6000", 1, spot=True)
    with pytest.raises(runpod.NoInstances, match=r"no on-demand price for 9 × NVIDIA H100 PCIe"):
        client.price("NVIDIA H100 PCIe", 9)


# -- creating pods -------------------------------------------------------------------------------------------


def test_deploy_on_demand_sends_runpod_inputs_and_secrets_from_the_environment(client, fake, monkeypatch):
    # A value GraphQL must escape: quotes, a backslash, a newline, non-ASCII.
    token = 'hf_"quoted"\\back\nslash-é-🙂'
    monkeypatch.setenv("HF_TOKEN", token)
    pod = client.deploy_on_demand(**POD, env={"BRIGHTRUN_RUN_ID": "run-1"}, secrets=["HF_TOKEN"])

    field, args = fake.calls[-1]
    assert field == "podFindAndDeployOnDemand"
    sent = args["input"]
    assert sent["cloudType"] == "SECURE" and type(sent["cloudType"]).__name__ == "Enum"  # bare, not "SECURE"
    assert (sent["gpuTypeId"], sent["gpuCount"], sent["volumeMountPath"]) == (
        "NVIDIA H100 PCIe",
        2,
        "/workspace",
    )
    assert sent["env"] == [{"key": "BRIGHTRUN_RUN_ID", "value": "run-1"}, {"key": "HF_TOKEN", "value": token}]
    assert "bidPerGpu" not in sent

    assert pod["id"] in fake.pods and pod["desiredStatus"] == "CREATED"
    assert (pod["imageName"], pod["costPerHr"], pod["machine"]["podHostId"]) == (
        POD["imageName"],
        4.78,
        f"{pod['id']}-64410065",
    )
    assert pod["runtime"] is None and "env" not in pod  # env answers with the secret values: never asked
    # The key travels as the SDK sends it: a Bearer header, never in the URL.
    assert fake.requests[-1]["key_in"] == "header" and fake.api_key not in fake.requests[-1]["path"]


def test_rent_interruptable_sends_the_bid(client, fake):
    pod = client.rent_interruptable(1.1, **{**POD, "cloudType": "ALL", "gpuCount": 1})
    field, args = fake.calls[-1]
    assert field == "podRentInterruptable"
    assert args["input"]["bidPerGpu"] == 1.1 and args["input"]["cloudType"] == "ALL"
    assert pod["costPerHr"] == 1.1 and fake.pods[pod["id"]].interruptible


def test_bad_pod_input_fails_before_any_request(client, fake, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with pytest.raises(ValueError, match=r"unknown pod field\(s\) gpuType; RunPod's are .*gpuTypeId"):
        client.deploy_on_demand(**{**POD, "gpuType": "x"})
    with pytest.raises(ValueError, match=r"cloudType must be one of ALL, SECURE, COMMUNITY"):
        client.deploy_on_demand(**{**POD, "cloudType": "secure"})
    with pytest.raises(
        ValueError, match=r"podRentInterruptable: secret\(s\) not set in this environment: WANDB_API_KEY"
    ):
        client.rent_interruptable(1.0, **POD, secrets=["WANDB_API_KEY"])
    assert fake.requests == []


# -- following pods ------------------------------------------------------------------------------------------


def test_pod_goes_created_running_exited(tmp_path, monkeypatch):
    with FakeRunPod(start_after=0.3, run_for=1.5) as fake:
        monkeypatch.setenv("RUNPOD_API_URL", fake.url)
        monkeypatch.setenv("RUNPOD_API_KEY", fake.api_key)
        client = runpod.Client(max_time=3)
        pod_id = client.deploy_on_demand(**POD)["id"]
        first = client.pod(pod_id)
        assert first["desiredStatus"] == "CREATED" and first["runtime"] is None
        running = wait_for(lambda: (p := client.pod(pod_id)) and p["runtime"] and p)
        assert running["desiredStatus"] == "RUNNING" and running["runtime"]["uptimeInSeconds"] <= 1
        wait_for(lambda: client.pod(pod_id)["runtime"]["uptimeInSeconds"] >= 1)
        exited = wait_for(lambda: (p := client.pod(pod_id))["desiredStatus"] == "EXITED" and p)
        assert exited["runtime"] is None and exited["lastStatusChange"].startswith("Exited: ")
        assert [p["id"] for p in client.pods()] == [pod_id]


def test_stop_keeps_the_pod_and_terminate_removes_it(client, fake):
    pod_id = client.deploy_on_demand(**POD)["id"]
    wait_for(lambda: client.pod(pod_id)["runtime"])
    assert client.stop(pod_id) == {"id": pod_id, "desiredStatus": "EXITED"}
    stopped = client.pod(pod_id)
    assert stopped["desiredStatus"] == "EXITED" and stopped["runtime"] is None
    assert client.terminate(pod_id) is None
    assert fake.calls[-1] == ("podTerminate", {"input": {"podId": pod_id}})
    assert client.pod(pod_id) is None and client.pods() == []


def test_a_preempted_spot_pod_is_kept_exited_with_its_disk_until_terminated(client, fake):
    """RunPod stops a reclaimed spot pod rather than terminating it (fake_runpod.py, RECLAIM): it stays
    EXITED, reporting a price of 0 (issue 25), until someone terminates it."""
    pod_id = client.rent_interruptable(BID, **POD)["id"]
    wait_for(lambda: client.pod(pod_id)["runtime"])
    fake.preempt(pod_id)
    time.sleep(0.5)
    pod = client.pod(pod_id)
    assert (pod["desiredStatus"], pod["runtime"], pod["costPerHr"]) == ("EXITED", None, 0.0)
    client.terminate(pod_id)
    assert client.pod(pod_id) is None


def test_a_pod_runs_a_real_command_with_its_env_and_volume(tmp_path, monkeypatch):
    script = (
        "import os, pathlib, signal, sys, time\n"
        "vol = pathlib.Path(sys.argv[1])\n"
        "signal.signal(signal.SIGTERM, lambda *a: (vol.joinpath('sigterm').write_text('1'), sys.exit(0)))\n"
        "vol.joinpath('seen').write_text(os.environ['HF_TOKEN'] + ' ' + os.environ['RUNPOD_POD_ID'])\n"
        "time.sleep(0 if os.environ['MODE'] == 'quick' else 30)\n"
    )
    seen = []

    def command(env, volume):
        seen.append(dict(env))
        return [sys.executable, "-c", script, str(volume)]

    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    # A container that runs once (RunPod's "runs until it exits"); restarts: the test after this one.
    with FakeRunPod(
        workspace=tmp_path / "ws", command=command, start_after=0.1, restart_on_exit=False
    ) as fake:
        monkeypatch.setenv("RUNPOD_API_URL", fake.url)
        monkeypatch.setenv("RUNPOD_API_KEY", fake.api_key)
        client = runpod.Client(max_time=3)
        quick = client.deploy_on_demand(**POD, env={"MODE": "quick"}, secrets=["HF_TOKEN"])["id"]
        wait_for(lambda: client.pod(quick)["desiredStatus"] == "EXITED")
        assert fake.pods[quick].exit_code == 0
        assert (tmp_path / "ws" / "seen").read_text() == f"hf_secret {quick}"
        # The pod gets its env and RunPod's own variables, not the launcher's key: its RUNPOD_API_KEY is
        # its own pod-scoped one (fake_runpod.py, PODKEY).
        assert seen[0]["RUNPOD_API_KEY"] == fake.pods[quick].pod_key != fake.api_key

        slow = client.rent_interruptable(BID, **POD, env={"MODE": "slow"}, secrets=["HF_TOKEN"])["id"]
        wait_for(lambda: (tmp_path / "ws" / "seen").read_text().endswith(slow))
        client.stop(slow)  # SIGTERM to the container's process
        wait_for(lambda: fake.pods[slow].exit_code is not None)
        assert (tmp_path / "ws" / "sigterm").exists() and fake.pods[slow].exit_code == 0


def test_a_container_whose_process_exits_is_started_again_and_the_pod_stays_running(tmp_path, monkeypatch):
    """dstack issue 1142: RunPod restarts a pod's container whose command exits; the pod stays RUNNING,
    its runtime's uptime starting again, until it is stopped or terminated."""
    with FakeRunPod(workspace=tmp_path / "ws", command=lambda env, vol: ["true"], start_after=0.05) as fake:
        monkeypatch.setenv("RUNPOD_API_URL", fake.url)
        monkeypatch.setenv("RUNPOD_API_KEY", fake.api_key)
        client = runpod.Client(max_time=3)
        pod_id = client.deploy_on_demand(**POD)["id"]
        wait_for(lambda: fake.pods[pod_id].restarts >= 3)
        assert client.pod(pod_id)["desiredStatus"] == "RUNNING"
        client.terminate(pod_id)
        restarts = fake.gone[pod_id].restarts
        time.sleep(0.5)
        assert fake.gone[pod_id].restarts == restarts  # no restart after a terminate


def test_a_pod_no_host_can_run_keeps_a_null_runtime(client, fake):
    """allowedCudaVersions is matched exactly against the hosts' CUDA (RunPod's API reference); a private
    image without containerRegistryAuthId cannot be pulled: either way the pod never gets a runtime."""
    fake.host_cuda, fake.private_images = "12.8", {"me/private:1"}
    for extra in ({"allowedCudaVersions": ["13.0"]}, {"imageName": "me/private:1"}):
        pod_id = client.deploy_on_demand(**(POD | extra))["id"]
        wait_for(lambda: client.pod(pod_id)["desiredStatus"] == "RUNNING")  # noqa: B023
        time.sleep(0.3)
        assert client.pod(pod_id)["runtime"] is None and fake.pods[pod_id].never_starts
    fine = client.deploy_on_demand(**POD, allowedCudaVersions=["12.8"])["id"]
    wait_for(lambda: client.pod(fine)["runtime"])
    auth = client.deploy_on_demand(**(POD | {"imageName": "me/private:1", "containerRegistryAuthId": "a1"}))
    wait_for(lambda: client.pod(auth["id"])["runtime"])


def test_price_in_one_datacenter(client, fake):
    """lowestPrice with dataCenterId: that datacenter's prices and stock, not the lowest anywhere."""
    fake.datacenters = {
        "EU-RO-1": {"NVIDIA H100 PCIe": {"secureSpotPrice": 1.6, "maxGpuCount": 8}},
        "US-KS-2": {"NVIDIA H100 PCIe": {"secureSpotPrice": 1.1, "maxGpuCount": 0}},
    }
    assert client.price("NVIDIA H100 PCIe", 1, spot=True, secure_cloud=True, datacenter="EU-RO-1") == 1.6
    assert client.price("NVIDIA H100 PCIe", 1, spot=True, secure_cloud=True) == 1.25  # US-KS-2 has none
    with pytest.raises(runpod.NoInstances, match="in US-KS-2"):
        client.price("NVIDIA H100 PCIe", 1, spot=True, secure_cloud=True, datacenter="US-KS-2")


def test_cuda_versions_for_an_image():
    assert runpod.cuda_at_least("12.8") == ["12.8", "12.9", "13.0"]
    assert runpod.cuda_at_least("13.0") == ["13.0"]
    with pytest.raises(ValueError, match="no host CUDA that new"):
        runpod.cuda_at_least("13.1")


# -- failures ----------------------------------------------------------------------------------------------


def test_rate_limited_requests_are_retried(client, fake):
    fake.rate_limit(2)
    assert client.price("NVIDIA H100 PCIe", 1) == 1.99
    assert len(fake.requests) == 3


def test_rate_limit_that_does_not_end_is_rate_limited(fake, monkeypatch):
    fake.rate_limit(10_000)
    client = runpod.Client(max_time=1)
    with pytest.raises(
        runpod.RateLimited, match=r"^gpuTypes: HTTP 429 Too Many Requests \(still failing after 1 s"
    ):
        client.gpu_types()
    assert 1 < len(fake.requests) < 20


def test_server_errors_are_retried_for_reads_but_not_for_a_create(client, fake):
    fake.server_error(1)
    assert client.price("NVIDIA H100 PCIe", 1) == 1.99
    assert len(fake.requests) == 2
    fake.server_error(1)
    with pytest.raises(runpod.RunPodError) as caught:
        client.deploy_on_demand(**POD)
    assert str(caught.value) == (
        "podFindAndDeployOnDemand: HTTP 502 Bad Gateway; the pod may exist anyway: look for name "
        "'brightrun-smoke' in Client().pods() before creating it again"
    )
    assert len(fake.requests) == 3 and fake.pods == {}


def test_a_create_answered_502_after_the_pod_was_made_says_it_may_exist(client, fake):
    fake.fail_after_create(1)
    with pytest.raises(runpod.CreateUnsure, match="HTTP 502 Bad Gateway; the pod may exist anyway"):
        client.deploy_on_demand(**POD)
    assert [p["name"] for p in client.pods()] == ["brightrun-smoke"]  # it does


def test_a_create_is_retried_after_429(client, fake):
    fake.rate_limit(1)
    pod_id = client.rent_interruptable(BID, **POD)["id"]
    assert list(fake.pods) == [pod_id]


def test_api_error_names_the_operation_and_the_server_message(client, fake):
    fake.fail_next(fake.NO_INSTANCES)
    with pytest.raises(runpod.NoInstances) as caught:
        client.rent_interruptable(BID, **POD)
    assert str(caught.value) == f"podRentInterruptable: {fake.NO_INSTANCES}"
    assert len(fake.requests) == 1  # an answer is an answer: not retried
    # Any other error inside a 200 to a create: RunPod may have made the pod and failed its read-back
    # (transformerlab-app PR 2305): unsure, never "nothing was created".
    fake.fail_next("Something else went wrong")
    with pytest.raises(
        runpod.CreateUnsure, match=r"^podFindAndDeployOnDemand: Something else went wrong; the pod may exist"
    ):
        client.deploy_on_demand(**POD)
    fake.error_after_create(1)
    with pytest.raises(runpod.CreateUnsure, match="Something went wrong"):
        client.deploy_on_demand(**POD)
    assert len(fake.pods) == 1  # it did


def test_graphql_errors_of_the_document_are_errors(client, fake):
    # The fake checks the client's documents against RunPod's types: a low bid is refused by "RunPod".
    with pytest.raises(runpod.CreateUnsure, match=r"^podRentInterruptable: bidPerGpu must be at least 0.99;"):
        client.rent_interruptable(0.5, **{**POD, "cloudType": "COMMUNITY"})
    with pytest.raises(runpod.RunPodError, match=r'^pod: Cannot query field "nope" on type "Pod"'):
        client._call("pod", 'query { pod(input: {podId: "x"}) { nope } }')


def test_bad_key_is_an_auth_error_at_once_without_the_key(fake):
    key = "rp_WRONG_secret_value_123"
    client = runpod.Client(api_key=key, max_time=3)
    with pytest.raises(runpod.AuthError) as caught:
        client.price("NVIDIA H100 PCIe", 1)
    assert str(caught.value) == "gpuTypes: RunPod refused the API key (HTTP 401); check RUNPOD_API_KEY"
    assert len(fake.requests) == 1
    assert key not in repr(client) and key not in repr(client._http.headers)


def test_missing_key_is_an_auth_error(monkeypatch):
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    with pytest.raises(runpod.AuthError, match=r"^RUNPOD_API_KEY is not set"):
        runpod.Client()


def test_errors_never_carry_the_key(fake):
    client = runpod.Client(api_key=fake.api_key, max_time=3)
    fake.fail_next(f"echoing {fake.api_key} back")
    with pytest.raises(runpod.RunPodError) as caught:
        client.deploy_on_demand(**POD)
    assert fake.api_key not in str(caught.value) and "[RUNPOD_API_KEY]" in str(caught.value)


def test_unreachable_api_is_retried_then_an_error(monkeypatch):
    monkeypatch.setenv("RUNPOD_API_KEY", "k")
    client = runpod.Client(url="http://127.0.0.1:9/graphql", max_time=0.5)  # port 9: nothing listens
    with pytest.raises(runpod.RunPodError, match=r"^gpuTypes: ConnectError"):
        client.gpu_types()
