"""Secrets go to a pod as RunPod secrets, never as values in its env (issue 25, item 5; jobs/pod/secrets.py),
and the pod's host CUDA is a floor on REST v2, not an exact list (item 5), against the fake's account
secrets and its hosts on several CUDA versions (tests/fake_runpod.py, fake_runpod_rest.py)."""

from __future__ import annotations

import json

import pytest

from jobs.pod import runpod, secrets
from tests.jobs.pod.test_rest import POD, client, fake, sent  # noqa: F401 -- fixtures
from tests.jobs.pod.test_runpod import wait_for

REF = "{{ RUNPOD_SECRET_brightrun_hf_token }}"


def everything_runpod_answered(server, api, pod_id: str) -> str:
    """Every answer about the pod, either API, as text: what anyone with the account's key can read."""
    graphql = runpod.Client(api_key=server.api_key, url=server.url)
    auth = {"authorization": f"Bearer {server.api_key}"}
    got = [api.pod(pod_id), api.pods(), graphql.pod(pod_id)]
    got.append(server.answer(f"/v2/pods/{pod_id}", auth, b"", "GET"))
    got.append(server.answer("/v2/account/secrets", auth, b"", "GET"))
    return json.dumps(got)


def test_a_secret_reaches_the_container_and_no_answer_of_runpods_api(client, fake, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HF_TOKEN", "hf_value_one")
    made = client.deploy_on_demand(env={"MODE": "x"}, secrets=["HF_TOKEN"], **POD)
    # Created on the account from this environment, then referenced by name in the pod's env.
    assert [name for name, _ in fake.calls[:3]] == ["listSecrets", "createSecret", "createPod"]
    assert sent(fake, "createPod")[0]["env"] == {"MODE": "x", "HF_TOKEN": REF}
    assert "value" not in sent(fake, "createSecret")[0]  # the fake's record of the call leaves it out too
    assert fake._boot_env(fake.pods[made["id"]].env)["HF_TOKEN"] == "hf_value_one"  # the container's view
    assert "hf_value_one" not in everything_runpod_answered(fake, client, made["id"])

    # The value here changed (a rotated token): the account's secret is rotated, no second secret made;
    # the next pod boots with the new value.
    monkeypatch.setenv("HF_TOKEN", "hf_value_two")
    second = client.deploy_on_demand(secrets=["HF_TOKEN"], **(POD | {"name": "brightrun-rest-2"}))
    assert len(fake.account_secrets) == 1 and len(sent(fake, "createSecret")) == 1
    assert sent(fake, "updateSecret") == [{"id": fake.account_secrets["brightrun_hf_token"]["id"]}]
    assert fake._boot_env(fake.pods[second["id"]].env)["HF_TOKEN"] == "hf_value_two"


def test_a_secret_made_in_the_console_is_used_without_a_value_here(client, fake, monkeypatch):  # noqa: F811
    monkeypatch.delenv("HF_TOKEN", raising=False)
    fake.account_secrets["brightrun_hf_token"] = {"id": "s1", "name": "brightrun_hf_token", "value": "hf_c"}
    made = client.deploy_on_demand(secrets=["HF_TOKEN"], **POD)
    assert sent(fake, "createPod")[0]["env"] == {"HF_TOKEN": REF}
    assert not sent(fake, "createSecret") and not sent(fake, "updateSecret")  # used as it is
    assert fake._boot_env(fake.pods[made["id"]].env)["HF_TOKEN"] == "hf_c"


def test_a_secret_neither_here_nor_on_the_account_stops_before_anything_is_made(client, fake, monkeypatch):  # noqa: F811
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    with pytest.raises(secrets.SecretsMissing) as caught:
        client.deploy_on_demand(secrets=["HF_TOKEN", "WANDB_API_KEY"], **POD)
    said = str(caught.value)
    assert "WANDB_API_KEY (RunPod secret 'brightrun_wandb_api_key')" in said and "HF_TOKEN" not in said
    assert "RunPod console" in said
    # Nothing made: no pod, and not even the secret that was available (all or nothing).
    assert not fake.created and not fake.account_secrets


def test_a_spot_pod_through_graphql_gets_references_too(client, fake, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HF_TOKEN", "hf_spot")
    made = client.rent_interruptable(2.0, secrets=["HF_TOKEN"], **POD)
    [create] = [args["input"] for name, args in fake.calls if name == "podRentInterruptable"]
    assert {"key": "HF_TOKEN", "value": REF} in create["env"]
    assert "hf_spot" not in json.dumps(create)
    assert fake._boot_env(fake.pods[made["id"]].env)["HF_TOKEN"] == "hf_spot"


def test_cuda_is_a_floor_on_rest_and_an_exact_list_on_graphql(client, fake):  # noqa: F811
    """Hosts on 12.8 and on a CUDA newer than any version we know: REST's minCudaVersion (what we send for
    an image built on 13.0) reaches the newer host; GraphQL's exact list ends at the newest version we
    know, so no host fits it and the pod never starts (issue 25: "hosts on newer drivers are excluded")."""
    fake.host_cuda = ("12.8", "99.0")
    floor = runpod.cuda_at_least("13.0")
    rest_pod = client.deploy_on_demand(**(POD | {"allowedCudaVersions": floor}))
    assert sent(fake, "createPod")[0]["gpu"]["minCudaVersion"] == "13.0"
    up = wait_for(lambda: (client.pod(rest_pod["id"]) or {}).get("runtime"))
    assert up is not None and fake.pods[rest_pod["id"]].host_cuda == "99.0"
    graphql = runpod.Client(api_key=fake.api_key, url=fake.url)
    exact = graphql.deploy_on_demand(**(POD | {"name": "exact", "allowedCudaVersions": floor}))
    assert fake.pods[exact["id"]].never_starts and fake.pods[exact["id"]].host_cuda is None
    # A host the exact list does hold is found among several.
    fake.host_cuda = ("12.8", "13.0", "99.0")
    fits = graphql.deploy_on_demand(**(POD | {"name": "fits", "allowedCudaVersions": floor}))
    assert fake.pods[fits["id"]].host_cuda == "13.0"


def test_a_launch_takes_the_accounts_secrets_and_says_which_it_lacks(client, fake, monkeypatch):  # noqa: F811
    """jobs/pod/pods.py with_account_secrets, as `jobs launch` calls it with the hardware file's names: one
    set here, one made in the console (not set here), one in neither place (the pod runs without it)."""
    from jobs.pod.pods import with_account_secrets

    fake.account_secrets["brightrun_hf_token"] = {"id": "s1", "name": "brightrun_hf_token", "value": "hf_c"}
    sent_, without = with_account_secrets(client, ["HF_TOKEN", "WANDB_API_KEY", "EXTRA"], ["EXTRA"])
    assert (sent_, without) == (["EXTRA", "HF_TOKEN"], ["WANDB_API_KEY"])


def test_graphql_mode_sends_references_too(fake, monkeypatch):  # noqa: F811
    """RUNPOD_API=graphql: the pod's secrets still go as RunPod secrets (through REST v2's account secrets),
    never as values GraphQL's pod query would show (pods.create_pod)."""
    from jobs.pod.pods import create_pod

    monkeypatch.setenv("HF_TOKEN", "hf_graphql")
    graphql = runpod.Client(api_key=fake.api_key, url=fake.url)
    pod = {k: v for k, v in POD.items() if k != "volumeMountPath"} | {"volumeMountPath": "/workspace"}
    made = create_pod(graphql, False, None, pod, {"MODE": "g"}, ["HF_TOKEN"])
    [create] = [args["input"] for name, args in fake.calls if name == "podFindAndDeployOnDemand"]
    assert {"key": "HF_TOKEN", "value": REF} in create["env"] and "hf_graphql" not in json.dumps(create)
    assert fake._boot_env(fake.pods[made["id"]].env)["HF_TOKEN"] == "hf_graphql"


@pytest.mark.parametrize("graphql", [False, True], ids=["rest", "graphql"])
def test_a_runs_webhook_key_is_its_own_secret_until_the_run_is_over(client, fake, monkeypatch, graphql):  # noqa: F811
    """A service job's pod signs its events with the job's key (BRIGHTRUN_POD_WEBHOOK_KEY): that key goes as
    the RunPod secret brightrun_webhook_RUN, never as a value RunPod's API shows (it went plain before), and
    the secret is deleted once the run is over (pods.forget_job_key, which the follower's end calls)."""
    from jobs.pod.pods import create_pod, forget_job_key

    monkeypatch.setenv("BRIGHTRUN_POD_WEBHOOK_KEY", "job-key-123")
    api = runpod.Client(api_key=fake.api_key, url=fake.url) if graphql else client
    pod = {k: v for k, v in POD.items() if k != "volumeMountPath"} | {"volumeMountPath": "/workspace"}
    made = create_pod(api, False, None, pod, {"MODE": "w"}, ["TRAINING_WEBHOOK_SECRET"])
    name = f"brightrun_webhook_{POD['name']}"
    assert fake._boot_env(fake.pods[made["id"]].env)["TRAINING_WEBHOOK_SECRET"] == "job-key-123"
    assert fake.pods[made["id"]].env["TRAINING_WEBHOOK_SECRET"] == "{{ RUNPOD_SECRET_" + name + " }}"
    assert "job-key-123" not in everything_runpod_answered(fake, client, made["id"])
    assert list(fake.account_secrets) == [name]

    forget_job_key(api, POD["name"])
    assert not fake.account_secrets and [c[0] for c in fake.calls].count("deleteSecret") == 1
    forget_job_key(api, POD["name"])  # none left: nothing to do, nothing said
    assert [c[0] for c in fake.calls].count("deleteSecret") == 1
