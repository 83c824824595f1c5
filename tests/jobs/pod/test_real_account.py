"""What a real RunPod account does on a first run, through the real launcher (`python -m jobs launch`) and
the fake RunPod of tests/fake_runpod.py, which models it (each behaviour's source is cited there): a
container started again when its process exits, a host that never starts the image (CUDA older than the
image's), a private image pulled without credentials, per-datacenter prices, Secure-only network volumes.
Issue 16. Pods run cheap commands, except where the real entrypoint is what is tested."""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import pytest
from conftest import ROOT, jobs_cli, no_loss

from brightrun import offline
from jobs import registry
from tests import status_log
from tests.jobs.pod.test_launch import BIN, launch, setup, sleeper, the_run, wait_for  # noqa: F401
from tests.s3_server import DATACENTER, s3_server

ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
# `setup` (imported above) is test_launch's fixture: a fake RunPod and the launcher's environment.


def logged_pod(env: dict, volume) -> list[str]:
    """The real entrypoint, as test_launch.pod_command runs it, its stderr kept on the volume per pod."""
    env.update(offline.ALL, PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", BRIGHTRUN_HARDWARE="cpu")
    env["PYTHONPATH"] = str(ROOT)  # this checkout's code, as test_launch.pod_command says
    log = volume / f"container-{env['RUNPOD_POD_ID']}.log"
    return ["bash", "-c", f'exec bash "{ENTRYPOINT}" 2>>"{log}"']


def billed(attempts: list[dict]) -> float:
    """Σ (termination − creation) × price over the attempts, USD."""
    return sum((a["ended_ts"] - a["created_ts"]) * a["cost_per_hr"] / 3600 for a in attempts)


@pytest.mark.slow(15)
def test_a_pod_on_a_host_without_the_images_cuda_is_replaced_then_given_up(
    tmp_path,
    sample_out,
    setup,  # noqa: F811
    customer_app,
):
    """The image needs CUDA 13.0 (hardware/h100-pcie.yaml's cuda); the launcher asks RunPod for such hosts
    (REST v2's minCudaVersion floor). Here every host has 12.8, so the pod never gets a runtime (problem 2): after
    --start-timeout it is terminated and counted, the retry the same, then the run fails with the reason,
    one registry change and one event. Each pod is billed from its creation to its termination though
    its container never ran (problem 4)."""
    fake, env = setup(command=sleeper, host_cuda="12.8")
    env |= customer_app.env()
    status_log.watch(env["DATABASE_URL"])
    runs, log = tmp_path / "runs", tmp_path / "launch.log"
    job_id = customer_app.new_job()
    args = ("--run-id", job_id, "--start-timeout", "1", "--max-retries", "1", "max_steps=2")
    proc = launch(runs, sample_out, env, *args, log=log)
    assert proc.wait(120) == 1, log.read_text()[-4000:]
    creates = fake.created  # either API, in GraphQL's input names (fake_runpod.py)
    # On-demand over REST v2: the image's CUDA as a floor (minCudaVersion), which no 12.8 host meets.
    assert len(creates) == 2 and all(c["minCudaVersion"] == "13.0" for c in creates)
    job = registry.get_job(job_id, env["DATABASE_URL"])
    assert job.status == "failed" and job.retry_count == 1
    assert "did not start the job within --start-timeout 1 s (no runtime" in job.error_message
    assert "gave up after 1 relaunch(es)" in job.error_message
    lineage = json.loads((runs / job_id / "run.json").read_text())
    attempts = lineage["attempts"]
    assert [a["outcome"] for a in attempts] == ["no start", "no start"]
    assert lineage["launch"]["cuda"] == "13.0"
    for a in attempts:
        pod = fake.gone[a["pod_id"]]  # terminated, not left waiting for a host
        assert pod.never_starts and a["uptime_s"] == 0
        assert a["created_ts"] <= pod.created_at and a["ended_ts"] >= pod.halted_at
        assert a["ended_ts"] - a["created_ts"] >= 1  # the start timeout
    assert job.actual_cost == pytest.approx(billed(attempts), rel=1e-6) and job.actual_cost > 0
    tally = customer_app.tally(job_id)
    no_loss(tally)
    status_log.ended_once(env["DATABASE_URL"], job_id, "failed", tally["ours"])


@pytest.mark.slow(5)
def test_a_private_image_starts_only_with_registry_credentials(tmp_path, sample_out, setup):  # noqa: F811
    """An image RunPod cannot pull leaves the pod without a runtime; --registry-auth (or
    RUNPOD_REGISTRY_AUTH_ID) sends containerRegistryAuthId and it starts."""
    image = "registry.example/brightrun-lora:test"
    fake, env = setup(command=sleeper, private_images=(image,))
    runs = tmp_path / "runs"
    proc = launch(runs, sample_out, env, "--start-timeout", "1", "--max-retries", "0", log=tmp_path / "a.log")
    assert proc.wait(120) == 1, (tmp_path / "a.log").read_text()[-4000:]
    job = the_run(env["DATABASE_URL"])
    assert job.status == "failed" and "did not start the job within --start-timeout 1 s" in job.error_message
    assert job.pod_id in fake.gone and fake.gone[job.pod_id].never_starts

    env |= {"RUNPOD_REGISTRY_AUTH_ID": "cr-auth-1", "DATABASE_URL": f"sqlite:///{tmp_path / 'b.db'}"}
    log = tmp_path / "b.log"
    assert launch(runs, sample_out, env, "--detach", log=log).wait(120) == 0, log.read_text()
    job = the_run(env["DATABASE_URL"])
    create = fake.created[-1]
    assert (create["imageName"], create["containerRegistryAuthId"]) == (image, "cr-auth-1")
    wait_for(lambda: fake.pods[job.pod_id].started is not None, 10)
    usage = jobs_cli("launch", "--help")
    assert "--registry-auth" in usage.stdout and "RUNPOD_REGISTRY_AUTH_ID" in usage.stdout


@pytest.mark.slow(5)
def test_a_network_volume_prices_its_own_datacenter_in_secure_cloud(tmp_path, sample_out, setup):  # noqa: F811
    """A network volume pins the pod to its datacenter, Secure Cloud only (problem 3): the spot bid is
    that datacenter's minimum, not a cheaper one elsewhere (which RunPod would refuse there), and
    --cloud COMMUNITY is refused before anything is created."""
    h100 = "NVIDIA H100 PCIe"
    with s3_server() as s3:
        bucket = "dcvolume"
        s3.volume(bucket)
        fake, env = setup(
            command=sleeper,
            network_volumes=[{"id": bucket, "name": "b", "size": 50, "dataCenterId": DATACENTER}],
            datacenters={
                DATACENTER: {h100: {"secureSpotPrice": 1.6, "securePrice": 2.89}},
                "US-KS-2": {h100: {"secureSpotPrice": 1.1, "securePrice": 2.19}},
            },
        )
        env = {k: v for k, v in env.items() if k != "BRIGHTRUN_VOLUME_DIR"} | s3.env
        runs = tmp_path / "runs"
        base = ("--network-volume", bucket, "max_steps=2")
        community = jobs_cli(
            "--runs-dir", str(runs), "launch", "balanced", "smoke", "--data", str(sample_out),
            "--cloud", "COMMUNITY", *base, env=env,
        )  # fmt: skip
        assert community.returncode == 2, community.stderr
        assert "--cloud COMMUNITY with --network-volume" in community.stderr and "Secure" in community.stderr
        assert not fake.pods and not fake.gone

        log = tmp_path / "launch.log"
        assert launch(runs, sample_out, env, "--spot", "--detach", *base, log=log).wait(120) == 0, (
            log.read_text()
        )
        job = the_run(env["DATABASE_URL"])
        create = next(a["input"] for name, a in fake.calls if name == "podRentInterruptable")
        assert (create["dataCenterId"], create["cloudType"], create["bidPerGpu"]) == (
            DATACENTER,
            "SECURE",
            1.6,
        )
        assert job.price_per_hour == 1.6 and "live price: $1.60/GPU-h" in log.read_text()
        assert "allowedCudaVersions" in create and job.pod_id in fake.pods


def test_a_create_that_fails_after_runpod_made_the_pod_adopts_that_pod(tmp_path, sample_out, setup):  # noqa: F811
    """RunPod answers 502 to a create it acted on (problem 5): the launcher looks the pod up by its name
    (the run id) and follows it, instead of saying "nothing was created" while a pod bills."""
    fake, env = setup(command=sleeper)
    fake.fail_after_create(1)
    log = tmp_path / "launch.log"
    assert launch(tmp_path / "runs", sample_out, env, "--detach", log=log).wait(120) == 0, log.read_text()
    job = the_run(env["DATABASE_URL"])
    assert len(fake.created) == 1  # never sent twice
    assert list(fake.pods) == [job.pod_id] and job.status == "queued"
    assert f"RunPod made pod {job.pod_id} ({job.id}) anyway; adopting it" in log.read_text()


@pytest.mark.slow(12)
def test_runpod_api_errors_are_outlasted_then_the_pod_is_stopped_and_named(tmp_path, sample_out, setup):  # noqa: F811
    """GraphQL errors on the pod query (problem 6): a short run of them is waited out, backing off; a
    long one ends the follower with exit 75, the pod stopped (no GPU billing) and the commands to go on
    named, the run's status left undecided. Never a traceback. On GraphQL (an error inside a 200 is
    GraphQL's own, never retried by the client); REST's failing reads are 5xx, retried by the client:
    test_a_5xx_streak_is_outlasted_then_ends_the_follower_naming_the_pod."""
    fake, env = setup(command=sleeper)
    env["RUNPOD_API"] = "graphql"
    runs, log = tmp_path / "runs", tmp_path / "launch.log"
    proc = launch(runs, sample_out, env, "max_steps=2", log=log)
    job = wait_for(lambda: the_run(env["DATABASE_URL"]), 120, proc, log)
    wait_for(lambda: job.pod_id in fake.pods and fake.pods[job.pod_id].status == "RUNNING", 30, proc, log)
    fake.query_errors(3)
    wait_for(lambda: fake._query_errors == 0, 30, proc, log)
    time.sleep(1)
    assert proc.poll() is None, log.read_text()[-4000:]
    fake.query_errors(10**6)
    assert proc.wait(120) == 75, log.read_text()[-4000:]
    text = log.read_text()
    assert "Traceback" not in text and "failure 1/8" in text
    assert f"pod {job.pod_id} is stopped" in text
    assert f"`jobs follow {job.id}`" in text and f"`jobs cancel {job.id}`" in text
    assert fake.pods[job.pod_id].status == "EXITED"  # stopped: its volume kept, no GPU billed
    assert registry.get_job(job.id, env["DATABASE_URL"]).status == "queued"


def training_then_deaf_to_sigterm(env: dict, volume) -> list[str]:
    """A pod whose run says `training` on the volume and that ignores SIGTERM (a save that takes longer
    than RunPod waits): only the SIGKILL ends it."""
    script = (
        "import signal, sqlite3, time, os, pathlib\n"
        "db = pathlib.Path(os.environ['BRIGHTRUN_VOLUME'], 'runs', 'registry.db')\n"
        "db.parent.mkdir(parents=True, exist_ok=True)\n"
        "con = sqlite3.connect(db)\n"
        "con.execute('CREATE TABLE IF NOT EXISTS training_jobs (id TEXT PRIMARY KEY, status TEXT, step INT,"
        " total_steps INT, metrics TEXT, error_message TEXT)')\n"
        "con.execute(\"INSERT OR REPLACE INTO training_jobs VALUES (?, 'training', 1, 10, '{}', NULL)\","
        " (os.environ['BRIGHTRUN_RUN_ID'],))\n"
        "con.commit(); con.close()\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "time.sleep(600)\n"
    )
    return [sys.executable, "-c", script]


@pytest.mark.slow(13)
def test_a_preempted_pod_is_relaunched_without_waiting_for_a_status_that_cannot_come(
    tmp_path,
    sample_out,
    setup,  # noqa: F811
):
    """RunPod gives a reclaimed spot pod about 5 s from SIGTERM to SIGKILL (problem 7; the fake does the
    same): a run still `training` on the volume then will not say more. The launcher relaunches within
    seconds instead of waiting 120 s for its status, and calls the pod preempted because it was a spot
    pod, not from lastStatusChange's prose."""
    fake, env = setup(command=training_then_deaf_to_sigterm)
    runs, log = tmp_path / "runs", tmp_path / "launch.log"
    proc = launch(runs, sample_out, env, "--spot", "--max-retries", "1", "max_steps=4", log=log)
    job = wait_for(lambda: the_run(env["DATABASE_URL"]), 120, proc, log)
    wait_for(lambda: registry.get_job(job.id, env["DATABASE_URL"]).status == "training", 60, proc, log)
    first = fake.pods[job.pod_id]
    taken = time.monotonic()
    fake.preempt(job.pod_id)
    creates = lambda: [n for n, _ in fake.calls].count("podRentInterruptable")  # noqa: E731
    wait_for(lambda: creates() == 2, 60, proc, log)
    assert time.monotonic() - taken < 30  # not the 120 s settle
    assert first.proc.wait(10) == -9  # SIGKILL, about 5 s after the ignored SIGTERM
    lineage = json.loads((runs / job.id / "run.json").read_text())
    assert lineage["attempts"][0]["outcome"] == "preempted"
    done = jobs_cli("--runs-dir", str(runs), "cancel", job.id, env=env)
    assert done.returncode == 0, done.stderr
    assert proc.wait(60) == 130, log.read_text()[-4000:]


def test_a_5xx_streak_is_outlasted_then_ends_the_follower_naming_the_pod(
    tmp_path,
    sample_out,
    setup,  # noqa: F811
    monkeypatch,
    capsys,
):
    """HTTP 5xx from RunPod (a gateway in front of its API, problem 6), on its own: each poll is retried by
    the client (its max_time, small here so that the test is fast), then counted by the follower.
    A streak that ends is outlasted; one that does not ends the follower with exit 75 and no traceback,
    naming the pod, that stopping it failed too, and the commands to re-attach or terminate it; once RunPod
    answers again, `jobs cancel` terminates the pod."""
    from jobs.pod import rest
    from jobs.pod.follow import API_FAILURES, follow

    fake, env = setup(command=sleeper)
    runs, log = tmp_path / "runs", tmp_path / "launch.log"
    assert launch(runs, sample_out, env, "--detach", "max_steps=2", log=log).wait(120) == 0, log.read_text()
    job = the_run(env["DATABASE_URL"])
    wait_for(lambda: fake.pods[job.pod_id].status == "RUNNING", 10)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    # Fewer 502s than API_FAILURES polls take (each failed poll spends at least one): outlasted.
    fake.server_error(API_FAILURES - 2)
    codes = []
    follower = threading.Thread(
        target=lambda: codes.append(follow(job.id, str(runs), rest.client(max_time=0.05), 0.05))
    )
    follower.start()
    wait_for(lambda: fake._server_errors == 0, 30)
    time.sleep(1)
    assert follower.is_alive() and not codes
    fake.server_error(10**6)  # then RunPod's gateway fails for good
    follower.join(60)
    assert codes == [75]
    err = capsys.readouterr().err
    assert "Traceback" not in err and "HTTP 502 Bad Gateway" in err and "failure 1/8" in err
    assert f"RunPod's API failed {API_FAILURES} time(s) in a row" in err
    assert f"pod {job.pod_id} may still be running and billing" in err and "stopping it failed too" in err
    assert f"`jobs follow {job.id}`" in err and f"`jobs cancel {job.id}`" in err
    assert registry.get_job(job.id, env["DATABASE_URL"]).status == "queued"  # nothing decided about the run
    assert fake.pods[job.pod_id].status == "RUNNING"  # what the follower said: it may still bill

    fake.server_error(0)
    done = jobs_cli("--runs-dir", str(runs), "cancel", job.id, env=env)
    assert done.returncode == 0, done.stderr
    assert job.pod_id in fake.gone
