"""`python -m jobs launch` against the fake RunPod API on loopback (tests/fake_runpod.py); nothing here
reaches RunPod. A fake pod runs the real docker/entrypoint.sh on this machine's CPU, with the fake's
workspace as the pod's volume (BRIGHTRUN_VOLUME_DIR), so training, checkpoints and resume are real.

The launcher renders the config once, for h100-pcie (what it priced), with the pod's paths; the pod runs
that file byte for byte (jobs/pod/config.py). The pod command below adds BRIGHTRUN_HARDWARE=cpu, as the
fake's pod is this CPU: Axolotl is then launched without accelerate, and the run's lineage says cpu; the
config is unchanged (the smoke model asks for no bf16 on either profile)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, SPACED_OVERRIDE, SPACED_VALUE, TINY_MODEL_DIR, jobs_cli, jobs_env, no_loss
from sqlalchemy import select

from brightrun import offline
from jobs import registry
from jobs.pod import bundle
from tests import status_log
from tests.fake_runpod import FakeRunPod, VolumeSync
from tests.jobs.pod.test_official_image import HARDWARE_IMAGE, image_pod, official_image
from tests.s3_server import DATACENTER, s3_server

BIN = Path(sys.executable).parent


def pod_command(env: dict, volume: Path) -> list[str]:
    """What the image would run, on this machine: the real entrypoint with the venv's Python."""
    env.update(offline.ALL, PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", BRIGHTRUN_HARDWARE="cpu")
    # This checkout's code in every process of the pod, Axolotl's too (its console script does not start in
    # the repo root): in a git worktree the venv's editable install may point at another checkout.
    env["PYTHONPATH"] = str(ROOT)
    return ["bash", str(ROOT / "docker" / "entrypoint.sh")]


def sleeper(env: dict, volume: Path) -> list[str]:
    return ["sleep", "600"]


def run_folder_then_sleep(env: dict, volume: Path) -> list[str]:
    """A pod that gets as far as its run folder (run.json, no checkpoint yet), then waits."""
    made = '"$BRIGHTRUN_VOLUME/runs/$BRIGHTRUN_RUN_ID"'
    return ["bash", "-c", f"mkdir -p {made} && echo {{}} > {made}/run.json && exec sleep 600"]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def commands(log: Path) -> list[str]:
    """The commands jobs/run.py logged (`$ ...`): what Axolotl was started with."""
    return [line for line in log.read_text().splitlines() if line.startswith("$ ")]


@pytest.fixture
def setup(tmp_path):
    fakes = []

    def make(command=pod_command, **kw):
        fake = FakeRunPod(workspace=tmp_path / "volume", command=command, stop_grace=120, **kw).start()
        fakes.append(fake)
        env = {
            "RUNPOD_API_URL": fake.url,
            "RUNPOD_API_KEY": fake.api_key,
            "BRIGHTRUN_VOLUME_DIR": str(fake.workspace),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'registry.db'}",
            "BRIGHTRUN_IMAGE": "registry.example/brightrun-lora:test",
            # A launch on Axolotl's image (no BRIGHTRUN_IMAGE) sends no wheel of jobs/pod/bundle.py's EXTRA:
            # the fake's pods are this machine, which has them; and nothing here reaches PyPI.
            "BRIGHTRUN_POD_WHEELS": str(tmp_path / "no-extra-wheels"),
        }
        (tmp_path / "no-extra-wheels").mkdir(exist_ok=True)
        for name in ("HF_TOKEN", "WANDB_API_KEY", "TRAINING_WEBHOOK_SECRET", "WEBHOOK_URL"):
            env[name] = ""
        return fake, env

    yield make
    for fake in fakes:
        fake.close()


def launch(runs: Path, data: Path, env: dict, *args: str, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "jobs", "--runs-dir", str(runs), "launch", "balanced", "smoke"]
    cmd += ["--data", str(data), "--poll", "0.2", f"base_model={TINY_MODEL_DIR}", *args]
    out = log.open("w")
    return subprocess.Popen(cmd, cwd=ROOT, env=jobs_env() | env, stdout=out, stderr=subprocess.STDOUT)


def wait_for(check, seconds: float, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the launcher exited {proc.returncode}:\n" + log.read_text()[-4000:])
        time.sleep(0.2)
    pytest.fail("not true in time" + (":\n" + log.read_text()[-4000:] if log else ""))


def exit_code(proc: subprocess.Popen, seconds: float, log: Path) -> int:
    """The launcher's exit code; on a timeout, a failure showing its log's end (a bare TimeoutExpired says
    nothing of where it stood: seen once on a loaded machine, the log gone with the run's tmp folder)."""
    try:
        return proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the launcher still ran after {seconds} s:\n" + log.read_text()[-6000:])


def the_run(url: str):
    """The launcher's row, once it exists. Read with sqlite3 first: the registry's own engine would run
    the migrations here at the same moment as the launcher does (two CREATE TABLEs)."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{url.removeprefix('sqlite:///')}?mode=ro", uri=True) as con:
            row = con.execute("SELECT id FROM training_jobs").fetchone()
    except sqlite3.Error:
        return None
    return registry.get_job(row[0], url) if row else None


@pytest.mark.slow(200)
def test_one_command_on_a_network_volume_survives_a_preemption_and_fetches_the_adapter(
    tmp_path, sample_out, setup, customer_app
):
    """The real-account path end to end, in one command, as a default launch: no image of ours, so each pod
    runs Axolotl's image (test_official_image.py's stand-in), whose start command installs our code from the
    bundle the launcher put on the volume (jobs/pod/bundle.py), then runs our entrypoint: one pod run proves
    the default launch and the preemption (each is minutes of Axolotl on CPU). Our own image, BRIGHTRUN_IMAGE,
    trains in test_ctrl_c_then_follow_again_then_the_cost_cap_stops_the_pod. A RunPod network volume, seen
    by the launcher only through the S3 API: the data goes up before the pod is created; the launcher reads
    the run's progress from the volume's registry over S3; the spot pod is taken back after checkpoint-1, a
    second pod on the same volume resumes and completes; the adapter comes home and the cost is the sum of
    both pods' uptime × bid. The customer's app started it (their job id) and hears all of it, losing nothing.
    Both pods ran the config the launcher rendered and recorded, byte for byte. The fake's pods are this
    machine and see the volume at the fake's workspace, so the launcher is told to mount it there
    (--volume-path); test_on_a_network_volume_the_pod_is_told_where_the_launchers_config_is checks the
    default, /workspace/data."""
    image = official_image(tmp_path / "image")
    with s3_server() as s3:
        bucket = "x7k2volume"
        client = s3.volume(bucket)
        fake, env = setup(
            command=image_pod(image),
            network_volumes=[{"id": bucket, "name": "brightrun", "size": 50, "dataCenterId": DATACENTER}],
            volume_sync=VolumeSync(s3.client(), bucket, every=0.3),
        )
        # No image of ours: neither --image nor BRIGHTRUN_IMAGE. The stand-in image already has what EXTRA
        # adds to Axolotl's stack, so no wheel of it is sent (setup's BRIGHTRUN_POD_WHEELS: an empty folder).
        drop = ("BRIGHTRUN_IMAGE", "BRIGHTRUN_VOLUME_DIR")
        env = {k: v for k, v in env.items() if k not in drop} | s3.env | customer_app.env()
        runs, log = tmp_path / "runs", tmp_path / "launch.log"
        job_id = customer_app.new_job()
        mount = str(fake.workspace)
        args = ("--spot", "--network-volume", bucket, "--run-id", job_id, "--volume-path", mount)
        proc = launch(runs, sample_out, env, *args, "max_steps=3", "save_steps=1", log=log)
        job = wait_for(lambda: the_run(env["DATABASE_URL"]), 120, proc, log)
        run_id, first = job.id, job.pod_id
        assert job.status == "queued" and first in fake.pods and job.hardware == "h100-pcie"
        create = next(args["input"] for name, args in fake.calls if name == "podRentInterruptable")
        assert (create["networkVolumeId"], create["dataCenterId"], create["volumeMountPath"]) == (
            bucket,
            DATACENTER,
            mount,
        )
        assert "volumeInGb" not in create
        pod_env = {p["key"]: p["value"] for p in create["env"]}
        assert pod_env["BRIGHTRUN_RUN_ID"] == run_id and pod_env["BRIGHTRUN_VOLUME"] == mount
        assert pod_env["BRIGHTRUN_CONFIG"] == f"{mount}/configs/{run_id}/config.yaml"
        # Our code is on the volume as the bundle the pod's env names: this repo's wheel (no extra wheels,
        # see above) and the entrypoint, byte for byte, with its `done` mark.
        key = pod_env["BRIGHTRUN_BUNDLE"].removeprefix(f"{mount}/")
        assert key.startswith("brightrun/")
        sent = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=key)["Contents"]}
        wheel = f"{key}/wheels/brightrun_lora-0.1.0-py3-none-any.whl"
        assert sent == {f"{key}/done", f"{key}/entrypoint.sh", wheel}
        entry = client.get_object(Bucket=bucket, Key=f"{key}/entrypoint.sh")["Body"].read()
        assert entry == (ROOT / "docker" / "entrypoint.sh").read_bytes()
        assert "bundle: our code and 0 wheel(s)" in log.read_text()
        # The config went up before the pod was asked for: the launcher's own file, rendered for h100-pcie.
        sent = client.get_object(Bucket=bucket, Key=f"configs/{run_id}/config.yaml")["Body"].read()
        assert sent == (runs / run_id / "config.yaml").read_bytes()
        job_json = json.loads(
            client.get_object(Bucket=bucket, Key=f"configs/{run_id}/job.json")["Body"].read()
        )
        assert job_json["hardware"] == "h100-pcie" and job_json["config_sha256"] == sha256(sent)
        data_dir = yaml.safe_load(sent)["datasets"][0]["path"].removesuffix("/train.jsonl")
        assert data_dir == job_json["data"]["dir"] and data_dir.startswith(f"{mount}/datasets/")
        # The data was on the volume before the pod was asked for, every file byte for byte.
        data_key = data_dir.removeprefix(f"{mount}/")
        for path in sample_out.rglob("*"):
            if path.is_file():
                key = f"{data_key}/{path.relative_to(sample_out).as_posix()}"
                assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == path.read_bytes()
        names = [name for name, _ in fake.calls]
        assert names.index("myself") < names.index("podRentInterruptable")

        # RunPod takes the pod back once it has written a checkpoint (seen here on the pod's side).
        ckpt = fake.workspace / "runs" / run_id / "output" / "checkpoint-1" / "trainer_state.json"
        wait_for(ckpt.is_file, 600, proc, log)
        fake.preempt(first)
        # Two pods, each installing our code on the image, training and pushing: minutes here, and three
        # times that on a machine busy with other tests.
        assert exit_code(proc, 900, log) == 0, log.read_text()[-4000:]

        job = registry.get_job(run_id, env["DATABASE_URL"])
        assert (job.status, job.step, job.total_steps, job.retry_count) == ("completed", 3, 3, 1)
        assert (job.gpu_type, job.gpu_count, job.price_per_hour) == ("NVIDIA H100 PCIe", 1, 1.25)
        assert job.pod_id != first and job.pod_id not in fake.pods  # terminated when done
        lineage = json.loads((runs / run_id / "run.json").read_text())
        attempts = lineage["attempts"]
        assert [a["outcome"] for a in attempts] == ["preempted", "completed"]
        assert attempts[0]["checkpoint_step"] >= 1 and attempts[0]["lost_steps"] >= 0
        assert {a["volume_run_id"] for a in attempts} == {run_id}  # the same run, resumed on the volume
        # Cost = billed time × costPerHr, summed by the launcher, each pod from just before its create to its
        # termination (issue 16: not the container's uptime); costPerHr is the bid (secure spot minimum).
        assert all(a["cost_per_hr"] == fake.gone[a["pod_id"]].cost_per_hr == 1.25 for a in attempts)
        expected = sum((a["ended_ts"] - a["created_ts"]) * a["cost_per_hr"] / 3600 for a in attempts)
        assert expected > 0 and job.actual_cost == pytest.approx(expected)
        assert all(a["billed_s"] >= a["uptime_s"] for a in attempts)
        assert job.gpu_hours == pytest.approx(sum(a["billed_s"] for a in attempts) / 3600)  # as billed
        assert "lost_steps" in job.metrics and job.estimated_cost == pytest.approx(
            lineage["estimate"]["cost_live"]
        )
        creates = [args["input"] for name, args in fake.calls if name == "podRentInterruptable"]
        assert len(creates) == 2 and all(c["name"] == run_id and c["bidPerGpu"] >= 1.25 for c in creates)
        assert all(c["networkVolumeId"] == bucket for c in creates)
        # Both pods: Axolotl's image, no registry credentials, a host with its CUDA, our start command.
        for c in creates:
            assert c["imageName"] == HARDWARE_IMAGE and c["dockerArgs"] == bundle.START_COMMAND
            assert c["allowedCudaVersions"] == ["13.0"] and "containerRegistryAuthId" not in c

        # The adapter came home; checkpoints stay on the volume. The pod's run resumed from its checkpoint
        # and logged each step once.
        home = runs / run_id
        assert job.artifact_path == str((home / "output").resolve())
        assert (home / "output" / "adapter_model.safetensors").stat().st_size > 0
        assert (home / "output" / "adapter_config.json").is_file() and (home / "pod-run.json").is_file()
        assert not list((home / "output").glob("checkpoint-*"))
        with registry.session(env["DATABASE_URL"]) as db:
            [artifact] = db.scalars(select(registry.ModelArtifact).filter_by(job_id=run_id)).all()
        weights = home / "output" / "adapter_model.safetensors"
        assert (artifact.artifact_type, artifact.size_bytes) == ("adapter", weights.stat().st_size)
        assert artifact.sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
        for path in home.rglob("*"):  # neither key is written anywhere in the run folder
            if path.is_file():
                body = path.read_bytes()
                assert (
                    s3.env["RUNPOD_S3_SECRET_KEY"].encode() not in body and fake.api_key.encode() not in body
                )
        page = (home / "report.html").read_text()
        assert f"${job.actual_cost:.2f}" in page and "lost to preemptions" in page and first in page
        logged = (home / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(x)["step"] for x in logged if "loss" in json.loads(x)] == [1, 2, 3]
        # What ran is what run.json names: the pod's run folder's config (fetched as pod-config.yaml), the
        # file both pods gave Axolotl (its preprocess and its train, then the resume's train: a resume does
        # not preprocess again).
        ran = (home / "pod-config.yaml").read_bytes()
        assert sha256(ran) == lineage["config"]["sha256"] == sha256((home / "config.yaml").read_bytes())
        assert [a["config_sha256"] for a in attempts] == [lineage["config"]["sha256"]] * 2
        pod_lineage = json.loads((home / "pod-run.json").read_text())
        assert pod_lineage["config"]["sha256"] == lineage["config"]["sha256"]
        assert (pod_lineage["hardware"], pod_lineage["rendered_for_hardware"]) == ("cpu", "h100-pcie")
        given = f"{mount}/runs/{run_id}/config.yaml"
        for name, times in (("preprocess.log", 1), ("train.log", 2)):
            started = commands(home / "logs" / name)
            assert len(started) == times and all(f" {given}" in line for line in started), started
        # The pods' Python is the image's, and our code in it is the wheel from the volume; a relaunch starts
        # the same way (run.json keeps the start command).
        site = Path(sysconfig.get_paths(vars={"base": str(image), "platbase": str(image)})["purelib"])
        assert (site / "jobs" / "__init__.py").is_file() and list(site.glob("brightrun_lora-0.1.0.dist-info"))
        trainer = f"$ {image / 'bin' / 'axolotl'} train "
        assert all(line.startswith(trainer) for line in commands(home / "logs" / "train.log"))
        assert lineage["launch"]["pod"]["dockerArgs"] == bundle.START_COMMAND

        status = jobs_cli("--runs-dir", str(runs), "status", run_id, env=env)
        assert status.returncode == 0 and "completed" in status.stdout and "3/3" in status.stdout
        logs = jobs_cli("--runs-dir", str(runs), "logs", run_id, env=env)
        assert (
            logs.returncode == 0 and f"network volume {bucket}" in logs.stdout and "train.log" in logs.stdout
        )
        again = jobs_cli("--runs-dir", str(runs), "follow", run_id, env=env)
        assert again.returncode == 0 and "already completed" in again.stderr

        # The customer's receiver: the pods' events and the launcher's, under their one job id.
        assert run_id == job_id
        wait_for(lambda: customer_app.tally(job_id)["row"]["lora_artifact_path"] == job.artifact_path, 30)
        print(customer_app.summary("preempted and relaunched (fake RunPod)", job_id))
        tally = customer_app.tally(job_id)
        no_loss(tally)
        row = tally["row"]
        assert (row["status"], row["current_step"], row["total_steps"]) == ("completed", 3, 3)
        assert row["error_message"] is None and row["completed_at"] is not None
        assert "failed" not in tally["statuses"]  # a preemption with a relaunch is not a failure for them
        # Two senders, one job: the launcher numbers its events after the pod's (jobs service orders by
        # sequence), and fetching the pod's run does not replace the launcher's own spool.
        pod_last = int(client.get_object(Bucket=bucket, Key=f"runs/{run_id}/events.seq")["Body"].read())
        ours = [json.loads(line) for line in (home / "events.jsonl").read_text().splitlines()]
        assert ours[0]["status"] == "queued" and ours[0]["sequence"] == 1  # the launcher's own, kept
        assert ours[-1]["brightrun_status"] == "completed" and ours[-1]["sequence"] > pod_last
        assert (home / "pod-events.jsonl").is_file()
        assert [h["step"] for h in tally["history"]][-1] == 3 and tally["metrics_events"] >= 3


def follow(runs: Path, run_id: str, env: dict, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "jobs", "--runs-dir", str(runs), "follow", run_id, "--poll", "0.2"]
    out = log.open("w")
    return subprocess.Popen(cmd, cwd=ROOT, env=jobs_env() | env, stdout=out, stderr=subprocess.STDOUT)


def patient_pod(env: dict, volume: Path) -> list[str]:
    """pod_command on a pod whose stop waits for the trainer's save (the fake's stop_grace here is 120 s,
    as `docker stop -t 120`): the trainer's own bound (jobs/stopgrace.py, 3 s by default on a pod, RunPod's
    SIGKILL being about 5 s away) raised to match, so that the stop's checkpoint is what is tested."""
    env["BRIGHTRUN_STOP_GRACE_S"] = "60"
    return pod_command(env, volume)


@pytest.mark.slow(80)
def test_ctrl_c_then_follow_again_then_the_cost_cap_stops_the_pod(tmp_path, sample_out, setup, customer_app):
    """Also: an override with spaces, quotes and a `#` reaches the config the pod ran unchanged, and that
    config is, byte for byte, the one the launcher recorded."""
    fake, env = setup(command=patient_pod)
    env |= customer_app.env()
    status_log.watch(env["DATABASE_URL"])
    runs, log = tmp_path / "runs", tmp_path / "launch.log"
    job_id = customer_app.new_job()
    args = ("--run-id", job_id, "--max-cost", "1", "max_steps=40", "save_steps=40", SPACED_OVERRIDE)
    proc = launch(runs, sample_out, env, *args, log=log)
    job = wait_for(lambda: the_run(env["DATABASE_URL"]), 120, proc, log)
    run_id = job.id
    # Training has begun (the pod's registry says so; the launcher mirrors it): a stop now makes the
    # trainer finish its step and save a checkpoint.
    wait_for(lambda: registry.get_job(run_id, env["DATABASE_URL"]).status == "training", 600, proc, log)
    # Ctrl-C stops following, not the pod; `jobs follow` takes over from another process.
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130, log.read_text()[-4000:]
    assert f"`jobs follow {run_id}` picks it up again" in log.read_text()
    assert fake.pods[job.pod_id].status == "RUNNING"
    log = tmp_path / "follow.log"
    proc = follow(runs, run_id, env, log)
    wait_for(lambda: "step" in log.read_text(), 60, proc, log)
    fake.speed = 2000.0  # an hour of uptime every 1.8 s: $2.39/h reaches $1 at once
    assert proc.wait(300) == 1, log.read_text()[-4000:]
    job = registry.get_job(run_id, env["DATABASE_URL"])
    assert job.status == "interrupted" and "cost cap $1.00 reached" in job.error_message
    assert job.actual_cost >= 1.0
    assert fake.did("stop")
    assert list((fake.workspace / "runs" / run_id / "output").glob("checkpoint-*/trainer_state.json"))
    assert "cost cap $1.00 reached" in log.read_text()
    assert log.read_text().count("budget alert: $") == 1  # once, before the cap
    assert json.loads((runs / run_id / "run.json").read_text())["budget_alert"]
    # ...and an event on the job (issue 25), the status it had, with the figures: their app hears it.
    alerts = [e["payload"] for e in customer_app.log if e["payload"] and e["payload"].get("budget_alert")]
    assert len(alerts) == 1 and alerts[0]["budget_alert"]["max_cost_usd"] == 1.0
    assert alerts[0]["message"].startswith("budget alert: $") and alerts[0]["status"] == "training"
    # The customer hears the cap from the launcher: failed, with why (nothing will resume it by itself).
    wait_for(lambda: customer_app.tally(job_id)["row"]["status"] == "failed", 30)
    print(customer_app.summary("cost cap (fake RunPod)", job_id))
    tally = customer_app.tally(job_id)
    no_loss(tally)
    assert "cost cap $1.00 reached" in tally["row"]["error_message"]
    # One registry change to interrupted (ours), one event saying so: `failed` (the pod's own stop went out
    # as `training`, the launcher's to resolve).
    status_log.ended_once(env["DATABASE_URL"], run_id, "interrupted", tally["statuses"], sent="failed")

    # The pod's run folder holds the launcher's config, byte for byte, and Axolotl was given that file.
    lineage = json.loads((runs / run_id / "run.json").read_text())
    volume = fake.workspace.resolve()
    create = fake.created[0]  # whichever API made it, in GraphQL's input names (fake_runpod.py)
    assert create["imageName"] == "registry.example/brightrun-lora:test"  # BRIGHTRUN_IMAGE: our own image
    pod_env = {p["key"]: p["value"] for p in create["env"]}
    assert pod_env["BRIGHTRUN_CONFIG"] == f"{volume}/configs/{run_id}/config.yaml"
    pod_run = volume / "runs" / run_id
    ran = (pod_run / "config.yaml").read_bytes()
    assert (
        ran == (runs / run_id / "config.yaml").read_bytes() == Path(pod_env["BRIGHTRUN_CONFIG"]).read_bytes()
    )
    pod_lineage = json.loads((pod_run / "run.json").read_text())
    assert sha256(ran) == lineage["config"]["sha256"] == pod_lineage["config"]["sha256"]
    assert lineage["attempts"][0]["config_sha256"] == lineage["config"]["sha256"]
    started = commands(pod_run / "logs" / "train.log")
    assert len(started) == 1 and f" {pod_run}/config.yaml" in started[0], started
    # The spaced override: as given on the command line in both lineages, as its value in what ran.
    assert SPACED_OVERRIDE in lineage["overrides"] and pod_lineage["overrides"] == lineage["overrides"]
    assert yaml.safe_load(ran)["wandb_name"] == SPACED_VALUE


def exits_at_once(env: dict, volume: Path) -> list[str]:
    """A container that ends before the run starts (an image that cannot run here), every time."""
    return ["true"]


def test_max_retries_gives_up_once_and_the_customer_hears_it(tmp_path, sample_out, setup, customer_app):
    """A pod that ends before the run starts, relaunched up to --max-retries, then the launcher gives up:
    one registry change to failed and one signed event saying so (issue 14, defect 2)."""
    fake, env = setup(command=exits_at_once)
    env |= customer_app.env()
    status_log.watch(env["DATABASE_URL"])
    runs, log = tmp_path / "runs", tmp_path / "launch.log"
    job_id = customer_app.new_job()
    # RunPod starts the container again and again (tests/fake_runpod.py, restart_on_exit): the pod says
    # RUNNING while its container never reaches the entrypoint, so the start deadline is what ends it.
    args = ("--run-id", job_id, "--max-retries", "1", "--start-timeout", "2", "max_steps=2")
    proc = launch(runs, sample_out, env, *args, log=log)
    assert proc.wait(120) == 1, log.read_text()[-4000:]
    job = registry.get_job(job_id, env["DATABASE_URL"])
    assert job.status == "failed" and job.retry_count == 1
    assert "gave up after 1 relaunch(es) (--max-retries 1)" in job.error_message
    assert "with the run not started" in job.error_message
    assert len(fake.created) == 2  # the first pod and one relaunch
    tally = customer_app.tally(job_id)
    no_loss(tally)
    assert tally["statuses"] == ["queued", "training", "failed"]  # created, relaunched, given up
    assert tally["row"]["status"] == "failed" and "gave up" in tally["row"]["error_message"]
    status_log.ended_once(env["DATABASE_URL"], job_id, "failed", tally["ours"])


@pytest.mark.parametrize("api", ["rest", "graphql"])
def test_detach_follow_and_cancel_terminates_the_pod(tmp_path, sample_out, setup, api):
    """On both of RunPod's APIs (RUNPOD_API, jobs/pod/rest.py; issue 25: "REST v2 and GraphQL paths both
    pass the launch test"): every call of the launcher, `jobs status`, `jobs cancel` and the follower."""
    fake, env = setup(command=sleeper)
    env["RUNPOD_API"] = api
    runs, log = tmp_path / "runs", tmp_path / "launch.log"
    assert launch(runs, sample_out, env, "--detach", "max_steps=4", log=log).wait(120) == 0, log.read_text()
    job = the_run(env["DATABASE_URL"])
    assert job.status == "queued" and job.pod_id in fake.pods  # created, then the launcher returned
    log = tmp_path / "follow.log"
    proc = follow(runs, job.id, env, log)
    wait_for(lambda: fake.pods[job.pod_id].status == "RUNNING", 10, proc, log)
    status = jobs_cli("--runs-dir", str(runs), "status", job.id, env=env)
    assert status.returncode == 0 and job.pod_id in status.stdout and "RUNNING" in status.stdout
    done = jobs_cli("--runs-dir", str(runs), "cancel", job.id, env=env)
    assert done.returncode == 0 and "cancelled" in done.stderr, done.stderr
    assert proc.wait(60) == 130, log.read_text()[-4000:]
    assert job.pod_id in fake.gone and fake.did("terminate")
    job = registry.get_job(job.id, env["DATABASE_URL"])
    assert job.status == "cancelled" and "terminated" in job.error_message
    # Each pod call went over the API asked for; prices and volumes are GraphQL's on both (rest.py).
    rest = {"createPod", "getPod", "listPods", "podAction", "deletePod"}
    graphql = {"podFindAndDeployOnDemand", "pod", "podStop", "podTerminate"}
    used = {name for name, _ in fake.calls}
    assert used & (rest if api == "rest" else graphql) and not used & (graphql if api == "rest" else rest)


def test_wrong_key_or_estimate_over_the_cap_creates_nothing(tmp_path, sample_out, setup):
    fake, env = setup(command=sleeper)
    runs = tmp_path / "runs"
    base = ["--runs-dir", str(runs), "launch", "balanced", "smoke", "--data", str(sample_out)]
    wrong = jobs_cli(*base, env=env | {"RUNPOD_API_KEY": "rp_wrong"})
    assert wrong.returncode == 2 and "refused the API key" in wrong.stderr, wrong.stderr
    assert "rp_wrong" not in wrong.stderr
    over = jobs_cli(*base, "--max-cost", "0.000001", env=env)
    assert over.returncode == 2 and "exceeds --max-cost" in over.stderr, over.stderr
    assert "live price: $2.39/GPU-h" in over.stderr
    assert not fake.pods and not fake.gone
    assert not list(runs.glob("*/run.json")) if runs.exists() else True
    db = tmp_path / "registry.db"
    assert not db.exists() or registry.list_jobs(env["DATABASE_URL"]) == []


def test_network_volume_errors_create_nothing(tmp_path, sample_out, setup):
    with s3_server() as s3:
        s3.volume("realvol")
        s3.volume("smallvol")
        fake, env = setup(
            command=sleeper,
            network_volumes=[
                {"id": "realvol", "name": "b", "size": 50, "dataCenterId": DATACENTER},
                {"id": "smallvol", "name": "s", "size": 100, "dataCenterId": DATACENTER},
            ],
        )
        env = {k: v for k, v in env.items() if k != "BRIGHTRUN_VOLUME_DIR"} | s3.env
        base = [
            "--runs-dir",
            str(tmp_path / "runs"),
            "launch",
            "balanced",
            "smoke",
            "--data",
            str(sample_out),
        ]
        unknown = jobs_cli(*base, "--network-volume", "nope", env=env)
        assert unknown.returncode == 2, unknown.stderr
        assert (
            "--network-volume nope: not on this RunPod account (yours: realvol (b, EU-RO-1), smallvol (s, EU-RO-1))"
            in unknown.stderr
        )
        no_keys = jobs_cli(*base, "--network-volume", "realvol", env=env | {"RUNPOD_S3_SECRET_KEY": ""})
        assert no_keys.returncode == 2 and "set RUNPOD_S3_SECRET_KEY" in no_keys.stderr, no_keys.stderr
        bare = jobs_cli(*base, "--network-volume", "realvol", "--image", "brightrun-lora:0.1.0", env=env)
        assert bare.returncode == 2 and "RunPod must pull it from a registry" in bare.stderr, bare.stderr
        # Preflight (jobs/preflight.py): a 100 GB volume cannot hold the 70B's ~141 GB of weights (its Hub
        # cache is on the volume), refused before anything goes up; `jobs preflight --launch` says the same
        # as a table, every launch check in it.
        base_70b = [*base[:4], "70b-qlora", *base[5:]]
        small = jobs_cli(*base_70b, "--network-volume", "smallvol", env=env)
        assert small.returncode == 2, small.stderr
        assert "preflight: volume: network volume smallvol is 100 GB; the run needs 14" in small.stderr
        assert "(base model 141.1 + data" in small.stderr and not s3.client().list_objects_v2(
            Bucket="smallvol"
        ).get("Contents")
        table = jobs_cli(
            *base_70b[:2],
            "preflight",
            *base_70b[3:],
            "--launch",
            "--network-volume",
            "smallvol",
            env=env | {"COLUMNS": "400"},
        )
        assert table.returncode == 2, table.stderr
        for check, status in (
            ("base model", "skip"),  # the Hub is off in tests: the pod's access is not checked
            ("image CUDA", "pass"),
            ("registry credential", "skip"),  # the tests' image is a pushed one, taken to be public
            ("volume", "fail"),
            ("max cost", "pass"),  # the hardware file's default cap, $60
            ("deadline", "pass"),  # --max-hours' default, 24
        ):
            assert re.search(rf"│ {check}\s+│ {status}\s+│", table.stdout), (check, table.stdout)
        assert not fake.pods and not fake.gone
        for out in (unknown, no_keys, bare, small, table):
            assert s3.env["RUNPOD_S3_SECRET_KEY"] not in out.stderr + out.stdout


def test_on_a_network_volume_the_pod_is_told_where_the_launchers_config_is(tmp_path, sample_out, setup):
    """As on a real account: the volume at /workspace/data. Before the pod is asked for, configs/RUN/ on
    the volume holds the launcher's config.yaml byte for byte (every path in it the pod's) and its
    job.json; the pod's environment names that file and nothing else of the job (no preset, model, data
    or overrides as variables, so a value may hold spaces)."""
    with s3_server() as s3:
        bucket = "c0nfigvolume"
        client = s3.volume(bucket)
        fake, env = setup(
            command=sleeper,
            network_volumes=[{"id": bucket, "name": "b", "size": 50, "dataCenterId": DATACENTER}],
        )
        env = {k: v for k, v in env.items() if k != "BRIGHTRUN_VOLUME_DIR"} | s3.env
        runs, log = tmp_path / "runs", tmp_path / "launch.log"
        args = ("--detach", "--network-volume", bucket, "max_steps=4", SPACED_OVERRIDE)
        assert launch(runs, sample_out, env, *args, log=log).wait(120) == 0, log.read_text()
        run_id = the_run(env["DATABASE_URL"]).id
        create = fake.created[0]
        assert create["volumeMountPath"] == "/workspace/data"
        pod_env = {p["key"]: p["value"] for p in create["env"]}
        deadline = int(pod_env.pop("BRIGHTRUN_DEADLINE_TS"))  # --max-hours' default, 24 h from now
        assert abs(deadline - (time.time() + 24 * 3600)) < 300
        assert pod_env == {
            "BRIGHTRUN_CONFIG": f"/workspace/data/configs/{run_id}/config.yaml",
            "BRIGHTRUN_RUN_ID": run_id,
            "BRIGHTRUN_VOLUME": "/workspace/data",
            "BRIGHTRUN_JOB_ID": run_id,
            "BRIGHTRUN_FOLLOWED": "1",
            "BRIGHTRUN_SELF_END": "1",  # the volume outlives the pod: it may end itself once done
        }
        lineage = json.loads((runs / run_id / "run.json").read_text())
        sent = client.get_object(Bucket=bucket, Key=f"configs/{run_id}/config.yaml")["Body"].read()
        assert sent == (runs / run_id / "config.yaml").read_bytes()
        assert sha256(sent) == lineage["config"]["sha256"] == lineage["attempts"][0]["config_sha256"]
        job_json = json.loads(
            client.get_object(Bucket=bucket, Key=f"configs/{run_id}/job.json")["Body"].read()
        )
        pod_data = lineage["data"]["pod_dir"]
        assert pod_data.startswith("/workspace/data/datasets/")
        assert job_json == {
            "job_id": run_id,
            "preset": "balanced",
            "model": "smoke",
            "hardware": "h100-pcie",
            "overrides": lineage["overrides"],
            "data": {"dir": pod_data, "manifest_sha256": lineage["data"]["manifest_sha256"]},
            "config_sha256": lineage["config"]["sha256"],
            "lines_dropped_for_length": 0,
            "estimate": lineage["estimate"],
        }
        assert SPACED_OVERRIDE in lineage["overrides"]
        config = yaml.safe_load(sent)
        pod_run = f"/workspace/data/runs/{run_id}"
        assert config["datasets"][0]["path"] == f"{pod_data}/train.jsonl"
        assert config["test_datasets"][0]["path"] == f"{pod_data}/val.jsonl"
        assert (config["output_dir"], config["brightrun_run_dir"]) == (f"{pod_run}/output", pod_run)
        assert config["brightrun_run_id"] == run_id and config["wandb_name"] == SPACED_VALUE
        assert client.head_object(
            Bucket=bucket, Key=f"{pod_data.removeprefix('/workspace/data/')}/manifest.json"
        )


def test_a_relaunch_that_cannot_resume_gets_a_config_of_its_own(tmp_path, sample_out, setup):
    """Taken back before its first checkpoint, a run cannot resume: the retry trains under a fresh id on
    the volume, and as the config names its run folder, it gets one of its own, rendered for that id.
    run.json's config is then that one (the adapter would come from it); each attempt records its own."""
    fake, env = setup(command=run_folder_then_sleep)
    runs, log = tmp_path / "runs", tmp_path / "launch.log"
    proc = launch(runs, sample_out, env, "--spot", "--max-retries", "1", "max_steps=4", log=log)
    job = wait_for(lambda: the_run(env["DATABASE_URL"]), 120, proc, log)
    run_id, retry, volume = job.id, f"{job.id}.r1", fake.workspace.resolve()
    wait_for((volume / "runs" / run_id / "run.json").is_file, 60, proc, log)
    fake.preempt(job.pod_id)
    wait_for((volume / "runs" / retry / "run.json").is_file, 60, proc, log)
    done = jobs_cli("--runs-dir", str(runs), "cancel", run_id, env=env)
    assert done.returncode == 0, done.stderr
    assert proc.wait(60) == 130, log.read_text()[-4000:]

    lineage = json.loads((runs / run_id / "run.json").read_text())
    first, second = lineage["attempts"]
    assert (first["volume_run_id"], second["volume_run_id"]) == (run_id, retry)
    old = (volume / "configs" / run_id / "config.yaml").read_text()
    new = (volume / "configs" / retry / "config.yaml").read_text()
    assert new == old.replace(run_id, retry)  # the same config but for the run folder it names
    assert first["config_sha256"] == sha256(old.encode()) != second["config_sha256"]
    assert second["config_sha256"] == sha256(new.encode()) == lineage["config"]["sha256"]
    assert (runs / run_id / "config.yaml").read_text() == new
    assert json.loads((volume / "configs" / retry / "job.json").read_text())["config_sha256"] == sha256(
        new.encode()
    )
    creates = [args["input"] for name, args in fake.calls if name == "podRentInterruptable"]
    pod_env = {p["key"]: p["value"] for p in creates[-1]["env"]}
    assert (pod_env["BRIGHTRUN_RUN_ID"], pod_env["BRIGHTRUN_CONFIG"]) == (
        retry,
        f"{volume}/configs/{retry}/config.yaml",
    )
    assert pod_env["BRIGHTRUN_JOB_ID"] == run_id


def test_the_apis_delete_of_a_pod_run_terminates_its_pod(tmp_path, sample_out, setup, monkeypatch):
    """DELETE /api/training/jobs/ID on a pod run ends its pod (billing stops), as `jobs cancel` does; it
    called the local cancel before, which left the pod running (issue 14, defect 1)."""
    from fastapi.testclient import TestClient

    from jobs.service.app import create_app

    fake, env = setup(command=sleeper)
    runs, log = tmp_path / "runs", tmp_path / "launch.log"
    assert launch(runs, sample_out, env, "--detach", "max_steps=4", log=log).wait(120) == 0, log.read_text()
    job = the_run(env["DATABASE_URL"])
    wait_for(lambda: fake.pods[job.pod_id].status == "RUNNING", 10)
    for key in ("RUNPOD_API_URL", "RUNPOD_API_KEY"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("JOBS_API_TOKEN", "tok-pod-cancel")
    monkeypatch.setenv("TRAINING_WEBHOOK_SECRET", "whsec-pod-cancel")
    monkeypatch.delenv("WEBHOOK_URL", raising=False)
    api = TestClient(create_app(runs, env["DATABASE_URL"], tmp_path / "data"), raise_server_exceptions=False)
    r = api.delete(f"/api/training/jobs/{job.id}", headers={"Authorization": "Bearer tok-pod-cancel"})
    assert r.status_code == 202 and r.json()["status"] == "cancelled", r.text
    assert job.pod_id in fake.gone and fake.did("terminate")
    job = registry.get_job(job.id, env["DATABASE_URL"])
    assert job.status == "cancelled" and "terminated" in job.error_message
