"""What RunPod really does to a launched run (issue 25), against the fake's faults: a terminate that fails,
a pod terminated by someone else, a price that changes mid-run. The pod runs a stand-in for the trainer
(`stub_run`: its run's row on the volume's registry, as test_real_account's stubs write it), since what is
tested is the launcher's side; the real trainer on a pod is test_launch's."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from conftest import ROOT, jobs_cli, jobs_env

from jobs import registry
from tests.jobs.pod.test_launch import launch, setup, the_run, wait_for  # noqa: F401

# `setup` (imported above) is test_launch's fixture: a fake RunPod and the launcher's environment.

EIGHT_B = "meta-llama/Meta-Llama-3-8B-Instruct"
# The run's row on the volume's registry, as the stand-ins write it (the columns the launcher reads).
ROW = """
import os, pathlib, sqlite3, sys, time
volume = pathlib.Path(os.environ['BRIGHTRUN_VOLUME'])
run_id, pod_id = os.environ['BRIGHTRUN_RUN_ID'], os.environ['RUNPOD_POD_ID']
db = volume / 'runs' / 'registry.db'
db.parent.mkdir(parents=True, exist_ok=True)
con = sqlite3.connect(db)
con.execute('CREATE TABLE IF NOT EXISTS training_jobs (id TEXT PRIMARY KEY, status TEXT, step INT,'
            ' total_steps INT, metrics TEXT, error_message TEXT)')
"""
STUB = (
    ROW
    + """
row = con.execute('SELECT status FROM training_jobs WHERE id = ?', (run_id,)).fetchone()
if row is None or row[0] == 'training':
    con.execute("INSERT OR REPLACE INTO training_jobs VALUES (?, 'training', 1, 10, '{}', NULL)", (run_id,))
    con.commit()
    while not (volume / f'finish-{run_id}').exists():
        time.sleep(0.1)
    con.execute("UPDATE training_jobs SET status = 'failed', error_message = 'stub: asked to stop'"
                " WHERE id = ?", (run_id,))
    con.commit()
(volume / 'pods').mkdir(exist_ok=True)
(volume / 'pods' / f'{pod_id}.exited').write_text('1')
time.sleep(600)
"""
)


def stub_run(env: dict, volume) -> list[str]:
    return [sys.executable, "-c", STUB]


def started(tmp_path, sample_out, setup, *args: str):  # noqa: F811
    fake, env = setup(command=stub_run)
    runs, log = tmp_path / "runs", tmp_path / "launch.log"
    proc = launch(runs, sample_out, env, "max_steps=10", *args, log=log)
    job = wait_for(lambda: the_run(env["DATABASE_URL"]), 120, proc, log)
    wait_for(lambda: registry.get_job(job.id, env["DATABASE_URL"]).status == "training", 60, proc, log)
    return fake, env, runs, log, proc, job


def creates(fake) -> int:
    return len(fake.created)  # either API (fake_runpod.py)


@pytest.mark.slow(20)
def test_a_terminate_that_keeps_failing_leaves_the_run_undecided_until_the_pod_is_gone(
    tmp_path,
    sample_out,
    setup,  # noqa: F811
):
    """The run is over on the pod, but RunPod refuses the terminate: the launcher tries again, backing
    off, and then exits 75 with the run not final (so `jobs follow` is not refused) and says so. Followed
    again, a terminate that fails twice more ends with the pod gone, and only then is the run final."""
    fake, env, runs, log, proc, job = started(tmp_path, sample_out, setup)
    fake.fail_terminates(10**6)
    (fake.workspace / f"finish-{job.id}").touch()
    assert proc.wait(120) == 75, log.read_text()[-4000:]
    text = log.read_text()
    assert f"pod {job.pod_id} is not confirmed gone after 6 terminates" in text
    assert f"`jobs follow {job.id}` tries again" in text and "Traceback" not in text
    assert job.pod_id in fake.pods  # still there: still billing, and the run says so by not being final
    assert registry.get_job(job.id, env["DATABASE_URL"]).status not in registry.TERMINAL

    fake.fail_terminates(2)
    again = jobs_cli("--runs-dir", str(runs), "follow", job.id, "--poll", "0.2", env=env)
    assert again.returncode == 1, again.stderr[-3000:]
    assert again.stderr.count(f"warning: terminating pod {job.pod_id} failed") == 2
    assert job.pod_id not in fake.pods and job.pod_id in fake.gone
    row = registry.get_job(job.id, env["DATABASE_URL"])
    assert row.status == "failed" and "stub: asked to stop" in row.error_message
    assert creates(fake) == 1


@pytest.mark.slow(12)
def test_a_pod_terminated_outside_ends_cancelled_and_is_not_relaunched(
    tmp_path,
    sample_out,
    setup,  # noqa: F811
):
    """Their console or their app terminates the on-demand pod mid-run: their decision. The run ends
    cancelled, saying so, and no second pod is rented (before, it read as a preemption and relaunched)."""
    fake, env, runs, log, proc, job = started(tmp_path, sample_out, setup)
    fake.terminate_outside(job.pod_id)
    assert proc.wait(60) == 130, log.read_text()[-4000:]
    row = registry.get_job(job.id, env["DATABASE_URL"])
    assert row.status == "cancelled" and "terminated outside this launcher" in row.error_message
    assert "not relaunched" in row.error_message
    assert creates(fake) == 1 and not fake.pods
    attempts = json.loads((runs / job.id / "run.json").read_text())["attempts"]
    assert [a["outcome"] for a in attempts] == ["ended outside"]
    # No --max-cost given: the cap is on all the same, the hardware file's, and said (issue 25).
    assert (
        "cost cap $60.00: hardware/h100-pcie.yaml's default_max_cost (--max-cost to change)"
        in log.read_text()
    )
    assert json.loads((runs / job.id / "run.json").read_text())["launch"]["max_cost"] == 60.0


@pytest.mark.slow(15)
def test_a_pod_runpod_puts_in_error_fails_the_run_and_is_not_relaunched(
    tmp_path,
    sample_out,
    setup,  # noqa: F811
):
    """REST v2's ERROR ("unrecoverable"): RunPod's failure, not someone's decision to cancel (what the
    follower took it for before) nor a preemption to relaunch: the run failed, saying so, the pod ended."""
    fake, env, runs, log, proc, job = started(tmp_path, sample_out, setup)
    fake.fail_pod(job.pod_id)
    assert proc.wait(60) == 1, log.read_text()[-4000:]
    row = registry.get_job(job.id, env["DATABASE_URL"])
    assert row.status == "failed" and f"RunPod put pod {job.pod_id} in ERROR" in row.error_message
    assert creates(fake) == 1 and job.pod_id in fake.gone  # terminated, no second pod
    attempt = json.loads((runs / job.id / "run.json").read_text())["attempts"][0]
    assert (attempt["outcome"], attempt["state"]) == ("pod error", "gone")


def test_a_price_that_changes_mid_run_is_billed_at_each_price_it_ran_at(
    tmp_path,
    sample_out,
    setup,  # noqa: F811
):
    """Each stretch at the price it ran at, as the fake's own ledger bills it; not the whole attempt at the
    latest price (what the launcher did before), nor at the first."""
    import time

    fake, env, runs, log, proc, job = started(tmp_path, sample_out, setup)
    first = fake.pods[job.pod_id].cost_per_hr
    time.sleep(2)
    fake.set_price(job.pod_id, 50.0)
    time.sleep(2)
    (fake.workspace / f"finish-{job.id}").touch()
    assert proc.wait(60) == 1, log.read_text()[-4000:]
    attempt = json.loads((runs / job.id / "run.json").read_text())["attempts"][0]
    ledger = fake.billed(job.pod_id)
    assert attempt["cost_per_hr"] == 50.0  # the last price it ran at, never a 0 read from a pod ending
    assert attempt["cost"] == pytest.approx(ledger, rel=0.25), (attempt, ledger)
    latest_for_all = attempt["billed_s"] / 3600 * 50.0
    first_for_all = attempt["billed_s"] / 3600 * first
    assert first_for_all * 1.5 < attempt["cost"] < latest_for_all * 0.8
    assert registry.get_job(job.id, env["DATABASE_URL"]).actual_cost == pytest.approx(attempt["cost"])

    # `jobs billing RUN`: ours beside RunPod's own bill (REST v2's billing endpoint), kept in run.json. Not
    # posted yet (RunPod bills after the fact): pending, said, exit 0; then posted: its figure, and exit 1
    # only when the two differ by more than 1%.
    fake.billing_lag = 3600.0
    late = jobs_cli("--runs-dir", str(runs), "billing", job.id, env=env)
    assert late.returncode == 0 and f"no bill yet for {job.pod_id}" in late.stderr, late.stderr
    fake.billing_lag = 0.0
    posted = jobs_cli("--runs-dir", str(runs), "billing", job.id, env=env)
    kept = json.loads((runs / job.id / "run.json").read_text())["attempts"][0]
    assert kept["runpod_billed"] == pytest.approx(ledger, rel=1e-4)
    apart = abs(kept["cost"] - ledger) > 0.01 * max(ledger, kept["cost"])
    assert posted.returncode == (1 if apart else 0), posted.stdout + posted.stderr
    assert f"{kept['runpod_billed']:.4f}" in posted.stdout
    assert ("differ by more than 1%" in posted.stderr) == apart


@pytest.mark.slow(10)
def test_a_create_answered_with_an_error_inside_a_200_adopts_the_pod_once_it_is_listed(
    tmp_path,
    sample_out,
    setup,  # noqa: F811
):
    """RunPod made the pod, then answered the create with a GraphQL error in an HTTP 200, and its pod list
    lags 2 s: the launcher keeps its run folder, looks the pod up by name until it is listed, and follows
    it; the create is never sent twice (before: "nothing was created", the folder deleted, the pod billing)."""
    fake, env = setup(command=stub_run, listing_lag=2.0)
    fake.error_after_create(1)
    log = tmp_path / "launch.log"
    assert launch(tmp_path / "runs", sample_out, env, "--detach", log=log).wait(120) == 0, log.read_text()
    job = the_run(env["DATABASE_URL"])
    assert creates(fake) == 1 and list(fake.pods) == [job.pod_id]
    text = log.read_text()
    assert f"RunPod made pod {job.pod_id} ({job.id}) anyway; adopting it" in text
    assert fake.did("list") >= 2  # asked again while the list lagged


def ended_itself(fake, pod_id: str) -> bool:
    """The pod's own terminate, with its own pod-scoped key (fake_runpod.py, PODKEY), reached RunPod."""
    key = (fake.pods.get(pod_id) or fake.gone[pod_id]).pod_key
    return any(r["headers"].get("authorization") == f"Bearer {key}" for r in fake.requests)


@pytest.mark.slow(15)
def test_a_pod_whose_owner_is_gone_ends_itself_once_its_run_has_ended(
    tmp_path,
    sample_out,
    setup,  # noqa: F811
):
    """The launcher detaches at once (its owner gone). On the pod, the real entrypoint's run is refused by
    the pod's own preflight (a base model it cannot get: not cached, the Hub off there), recorded failed on
    the volume; then the pod terminates itself with RunPod's pod-scoped key instead of restarting, and
    billing, for ever."""
    fake, env = setup()
    runs = ["--runs-dir", str(tmp_path / "runs"), "launch", "balanced", "smoke", "--data", str(sample_out)]
    detached = jobs_cli(*runs, "--detach", f"base_model={EIGHT_B}", env=env)
    assert detached.returncode == 0, detached.stderr[-4000:]
    job = the_run(env["DATABASE_URL"])
    wait_for(lambda: job.pod_id in fake.gone, 120)
    assert ended_itself(fake, job.pod_id)
    assert (fake.workspace / "pods" / f"{job.pod_id}.exited").read_text().strip() == "2"
    assert creates(fake) == 1


@pytest.mark.slow(60)
def test_at_the_jobs_deadline_the_pod_ends_itself_and_its_owner_records_why(
    tmp_path,
    sample_out,
    setup,  # noqa: F811
):
    """--max-hours 0.01 (36 s from the create): the pod, training, leaves its deadline mark and terminates
    itself, owner or not; the owner following it again ends the run failed, saying so, with no relaunch."""
    fake, env = setup()
    runs, log = tmp_path / "runs", tmp_path / "launch.log"
    proc = launch(runs, sample_out, env, "--detach", "--max-hours", "0.01", "max_steps=500", log=log)
    assert proc.wait(120) == 0, log.read_text()[-4000:]
    job = the_run(env["DATABASE_URL"])
    assert job.total_steps is None or job.total_steps > 0
    wait_for(lambda: job.pod_id in fake.gone, 180)
    assert ended_itself(fake, job.pod_id)
    assert (fake.workspace / "pods" / f"{job.pod_id}.deadline").is_file()
    again = jobs_cli("--runs-dir", str(runs), "follow", job.id, "--poll", "0.2", env=env)
    assert again.returncode == 1, again.stderr[-3000:]
    row = registry.get_job(job.id, env["DATABASE_URL"])
    assert row.status == "failed" and "the job's deadline passed (--max-hours 0.01" in row.error_message
    assert creates(fake) == 1


CRASHER = (
    ROW
    + """
con.execute("INSERT OR REPLACE INTO training_jobs VALUES (?, 'training', 1, 10, '{}', NULL)", (run_id,))
con.commit()
time.sleep(1.5)
sys.exit(-9 % 256)  # killed (the OOM killer) without writing its end
"""
)


def crash_after_step_1(env: dict, volume) -> list[str]:
    return [sys.executable, "-c", CRASHER]


@pytest.mark.slow(15)
def test_a_crash_loop_and_a_hang_end_failed_with_the_reason(
    tmp_path,
    sample_out,
    setup,  # noqa: F811
):
    """The watchdog (issue 25, item 3): a trainer killed at step 1 again and again (RunPod restarting its
    container each time) ends `failed`, "crash loop", after 3 restarts with no new step; a trainer that
    stops logging steps ends `failed`, "hung", after --hang-timeout. Each pod terminated, none relaunched."""
    fake, env = setup(command=crash_after_step_1)
    runs, log = tmp_path / "runs", tmp_path / "launch.log"
    proc = launch(runs, sample_out, env, "max_steps=10", log=log)
    assert proc.wait(120) == 1, log.read_text()[-4000:]
    job = the_run(env["DATABASE_URL"])
    assert job.status == "failed" and "crash loop: its container restarted 3 times" in job.error_message
    assert job.pod_id in fake.gone and creates(fake) == 1

    fake2, env2 = setup(command=stub_run)
    env2["DATABASE_URL"] = f"sqlite:///{tmp_path / 'second.db'}"
    proc = launch(tmp_path / "runs2", sample_out, env2, "--hang-timeout", "3", "max_steps=10", log=log)
    assert proc.wait(120) == 1, log.read_text()[-4000:]
    job = the_run(env2["DATABASE_URL"])
    assert job.status == "failed" and "hung: no new step for 3 s (last step 1" in job.error_message
    assert job.pod_id in fake2.gone and creates(fake2) == 1


@pytest.mark.slow(15)
def test_a_pod_made_by_a_follower_that_died_before_recording_it_is_adopted(
    tmp_path,
    sample_out,
    setup,  # noqa: F811
):
    """A relaunch writes `creating` to run.json before its create; its follower killed after the create and
    before the new attempt was saved leaves a pod named the run id that no attempt names. The next follower
    looks it up, adopts and follows it to the end: no second relaunch, no pod left billing unowned."""
    import signal

    fake, env, runs, log, proc, job = started(tmp_path, sample_out, setup)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    # What the dead follower had done: the old pod terminated, a new one created on the same volume run.
    fake.terminate_outside(job.pod_id)
    made = fake._deploy(dict(fake.created[0]), interruptible=False, rest="minCudaVersion" in fake.created[0])
    lineage_path = runs / job.id / "run.json"
    lineage = json.loads(lineage_path.read_text())
    lineage["creating"] = {"created_ts": fake.pods[made["id"]].created_at - 0.01, "vrun": job.id}
    lineage_path.write_text(json.dumps(lineage))

    follow_log = tmp_path / "follow.log"
    with follow_log.open("w") as out:
        again = subprocess.Popen(
            [sys.executable, "-m", "jobs", "--runs-dir", str(runs), "follow", job.id, "--poll", "0.2"],
            cwd=ROOT, env=jobs_env() | env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    wait_for(lambda: f"adopting pod {made['id']}," in follow_log.read_text(), 60, again, follow_log)
    (fake.workspace / f"finish-{job.id}").touch()
    assert again.wait(120) == 1, follow_log.read_text()[-4000:]
    lineage = json.loads(lineage_path.read_text())
    assert [a["pod_id"] for a in lineage["attempts"]] == [job.pod_id, made["id"]]
    assert "creating" not in lineage and creates(fake) == 2 and not fake.pods
    row = registry.get_job(job.id, env["DATABASE_URL"])
    assert row.status == "failed" and row.pod_id == made["id"] and "stub: asked to stop" in row.error_message


def test_adoption_waits_when_runpod_cannot_say_relaunches_when_none_was_made_and_ends_a_cancelled_runs_pod(
    tmp_path, monkeypatch
):
    """relaunch.adopt_unrecorded's other outcomes, against the fake: RunPod's list failing leaves the run
    undecided (75, `creating` kept); no pod made marks the last attempt ours to replace (the table then
    relaunches it, not "ended outside"); a pod found for a run cancelled meanwhile is terminated, not
    adopted."""
    from types import SimpleNamespace

    from jobs.pod import relaunch, runpod, states
    from tests.fake_runpod import FakeRunPod
    from tests.jobs.pod.test_runpod import POD
    from tests.jobs.service.test_pod_events import fake_enum

    url = f"sqlite:///{tmp_path / 'registry.db'}"
    registry.migrate(url)
    monkeypatch.setenv("DATABASE_URL", url)
    with FakeRunPod(workspace=tmp_path / "ws") as fake:
        api = runpod.Client(api_key=fake.api_key, url=fake.url)
        with registry.session(url) as s:
            s.add(registry.TrainingJob(id="run-a", status="training", preset="p", model="m", hardware="h"))
            s.commit()

        def follower(created_ts, api=api):
            lineage = {"config": {"sha256": "s"}, "attempts": [{"pod_id": "old", "volume_run_id": "run-a"}]}
            lineage["creating"] = {"created_ts": created_ts, "vrun": "run-a"}
            ended = []
            return SimpleNamespace(
                lineage=lineage, attempts=lineage["attempts"], api=api, run_id="run-a", save=lambda: None,
                terminate=lambda pod_id: ended.append(pod_id) or api.terminate(pod_id) or True, ended=ended,
            )  # fmt: skip

        refused = runpod.Client(api_key="not-the-accounts", url=fake.url)  # RunPod answers no list
        cannot = follower(time.time() - 3600, refused)
        assert relaunch.adopt_unrecorded(cannot) == 75 and "creating" in cannot.lineage

        none = follower(time.time() - 3600)  # past the listing lag, nothing listed: none was made
        assert relaunch.adopt_unrecorded(none) is None and "creating" not in none.lineage
        assert none.attempts[-1]["stopped_by"] and len(none.attempts) == 1
        seen = states.Seen(desired="GONE", stopped_by_us=True, run="training", settled=True, deadline=False)
        assert states.decide(seen)[1] is states.Action.RELAUNCH  # what the follower's next poll does

        registry.update_job("run-a", url, status="cancelled")
        made = fake._deploy({**POD, "name": "run-a", "cloudType": fake_enum(fake)}, interruptible=False)
        cancelled = follower(time.time())
        assert relaunch.adopt_unrecorded(cancelled) is None
        assert cancelled.ended == [made["id"]] and len(cancelled.attempts) == 1 and made["id"] in fake.gone
