"""A service pod job's pod reports progress only (jobs/service/store.py, from_pod): its own `completed` or
`failed` never ends the job, and its retry count, cost and pod id never overwrite the follower's. `just
chaos` (issue 25) found both: a pod's completed made the row final while the pod still ran (a follower
started then found the job over and left the pod), and a relaunched pod's retry_count 0 went over the
follower's 1, so the follower's own completed event was later refused as an older attempt's."""

from __future__ import annotations

from jobs import registry
from jobs.service import store
from jobs.service.db import make_engine
from jobs.service.receiver import Event
from tests.jobs.service.test_service import event, new_id


def test_a_pod_jobs_own_events_move_its_progress_never_its_end(tmp_path):
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    registry.migrate(url)
    engine = make_engine(url)
    job_id = new_id()
    assert store.apply(engine, Event(**event(job_id, 1, "queued")))
    # The follower's own record of its pods: a relaunch, what it cost so far.
    registry.update_job(job_id, url, status="training", retry_count=1, pod_id="pod-2", actual_cost=0.4)

    pod_says = {"retry_count": 0, "runpod_pod_id": "pod-2", "actual_cost_usd": 0.01, "gpu_hours": 0.001}
    step = event(job_id, 2, "training", step=5, total_steps=8, metrics={"loss": 1.5}, **pod_says)
    assert store.apply(engine, Event(**step), from_pod=True)
    done = event(job_id, 3, "completed", step=8, total_steps=8, lora_artifact_path="/workspace/x", **pod_says)
    assert store.apply(engine, Event(**done), from_pod=True)

    job = registry.get_job(job_id, url)
    assert (job.status, job.step, job.completed_at, job.artifact_path) == ("training", 8, None, None)
    assert (job.retry_count, job.pod_id, job.actual_cost) == (1, "pod-2", 0.4)
    assert job.metrics["loss"] == 1.5

    # The same event from a sender that is not a pod job's pod (a local run, another launcher) still ends it.
    other = new_id()
    store.apply(engine, Event(**event(other, 1, "queued")))
    assert store.apply(engine, Event(**event(other, 2, "completed", step=8, total_steps=8, retry_count=2)))
    ended = registry.get_job(other, url)
    assert ended.status == "completed" and ended.completed_at is not None and ended.retry_count == 2


def test_a_pod_whose_launcher_died_before_recording_it_is_ended(tmp_path, monkeypatch):
    """jobs/service/pods.py orphan_pods: the dispatcher's check before it fails a job whose launcher died
    during the launch (`just chaos`: a reboot between the create and the registry row left a pod billing)."""
    import json
    import os
    import time

    from jobs.service import pods
    from tests.fake_runpod import FakeRunPod
    from tests.jobs.pod.test_runpod import POD

    runs = tmp_path / "runs"
    with FakeRunPod(workspace=tmp_path / "ws") as fake:
        monkeypatch.setenv("RUNPOD_API_URL", fake.url)
        monkeypatch.setenv("RUNPOD_API_KEY", fake.api_key)
        job_id = new_id()
        assert pods.orphan_pods(runs, job_id) == ("", 0.0)  # no run.json: no create went out
        (runs / job_id).mkdir(parents=True)
        lineage = runs / job_id / "run.json"
        lineage.write_text(json.dumps({"launch": {}, "attempts": []}))
        assert pods.orphan_pods(runs, job_id) is None  # nothing listed yet: inside the listing lag
        create_ts = time.time()  # as the launcher writes it, just before its create
        lineage.write_text(json.dumps({"launch": {"create_ts": create_ts}, "attempts": []}))
        pod = fake._deploy({**POD, "name": job_id, "cloudType": fake_enum(fake)}, interruptible=False)
        time.sleep(0.2)
        said, cost = pods.orphan_pods(runs, job_id)
        assert said == f"; its launcher stopped before recording pod {pod['id']}, which was terminated"
        assert pod["id"] in fake.gone and fake.did("terminate") == 1
        # Priced from the launcher's create time to the terminate, at the pod's price: RunPod's own bill.
        (attempt,) = json.loads(lineage.read_text())["attempts"]
        assert attempt["pod_id"] == pod["id"] and attempt["outcome"] == "terminated: launcher gone"
        assert attempt["cost"] == cost > 0 and attempt["created_ts"] == create_ts
        # Never under RunPod's bill, over it by our calls' round trips only (well under 0.1 s here).
        assert fake.billed(pod["id"]) <= cost <= fake.billed(pod["id"]) + 0.1 / 3600 * attempt["cost_per_hr"]
        # An EXITED pod's listing says cost 0 (REST v2 Pod.cost): priced at the launch's own price instead.
        launch = {"create_ts": time.time(), "spot": True, "bid_per_gpu": 1.25, "gpus": 2}
        lineage.write_text(json.dumps({"launch": launch, "attempts": []}))
        assert pods.record_orphan(lineage, {"id": "x", "costPerHr": 0.0})[0]["cost_per_hr"] == 2.5
        lineage.write_text(json.dumps({"launch": {}, "attempts": []}))  # a launcher that made no pod
        old = time.time() - 3600
        os.utime(lineage, (old, old))
        assert pods.orphan_pods(runs, job_id) == ("", 0.0)  # past the lag, none listed: none was made


def fake_enum(fake):
    import sys

    return sys.modules[type(fake).__module__].Enum("SECURE")


def test_a_launcher_that_exits_unsure_of_its_create_leaves_no_pod_billing(tmp_path, monkeypatch):
    """The dispatcher (jobs/service/dispatcher.py) once failed a job at once when its launcher exited
    non-zero before registering a pod, and nothing looked again: a launcher whose create's answer was lost
    and whose lookup failed too (it exits 1: "a pod ... may exist and bill") left that pod billing. Now the
    job is failed only after the pod is found, terminated and priced."""
    import json
    import subprocess
    import sys
    import time

    from sqlalchemy.orm import Session

    from jobs.service import pods, queue
    from jobs.service.dispatcher import Dispatcher
    from tests.fake_runpod import FakeRunPod
    from tests.jobs.pod.test_runpod import POD

    url = f"sqlite:///{tmp_path / 'registry.db'}"
    registry.migrate(url)
    engine = make_engine(url)
    runs = tmp_path / "runs"
    job_id = new_id()
    with Session(engine) as s:
        s.add(queue.ServiceJob(job_id=job_id, webhook_url="http://127.0.0.1:9/", webhook_secret="x", mode="pod",
                               request={}, dispatched_at=registry.now()))  # fmt: skip
        s.commit()
    (runs / job_id).mkdir(parents=True)
    lineage = runs / job_id / "run.json"
    said = f"error: RunPod: HTTP 200 with errors; looking it up failed too: a pod named '{job_id}' may exist"
    pods.launcher_log(runs, job_id).parent.mkdir(parents=True, exist_ok=True)
    pods.launcher_log(runs, job_id).write_text(f"creating the pod\n{said}\n")
    with FakeRunPod(workspace=tmp_path / "ws") as fake:
        monkeypatch.setenv("RUNPOD_API_URL", fake.url)
        monkeypatch.setenv("RUNPOD_API_KEY", fake.api_key)
        lineage.write_text(json.dumps({"launch": {"create_ts": time.time()}, "attempts": []}))
        pod = fake._deploy({**POD, "name": job_id, "cloudType": fake_enum(fake)}, interruptible=False)
        launcher = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
        launcher.wait()
        d = Dispatcher(engine, runs, url, "secret", 0, 1, False, 1.0, lambda job_id: None)
        d.launchers[job_id] = launcher
        deadline = time.monotonic() + 30
        while (row := registry.get_job(job_id, url)) is None and time.monotonic() < deadline:
            d.tick()
        assert row is not None and row.status == "failed", row
        assert pod["id"] in fake.gone  # ended before the job was called over
        assert row.error_message == (
            f"the pod could not be launched: {said.removeprefix('error: ')}"
            f"; its launcher stopped before recording pod {pod['id']}, which was terminated"
        )
        # Priced from the launcher's create time to our terminate: never under RunPod's bill, over it by our
        # calls' round trips only.
        price = json.loads(lineage.read_text())["attempts"][0]["cost_per_hr"]
        assert fake.billed(pod["id"]) <= row.actual_cost <= fake.billed(pod["id"]) + 0.5 / 3600 * price
        assert d.exit_codes == {}  # its exit code was used, then forgotten


def test_a_launcher_gone_is_failed_a_listing_lag_after_its_exit_or_when_runpod_never_answers(
    tmp_path, monkeypatch
):
    """The sweep after a launcher this service saw exit waits the listing lag from the exit only (no create
    can go out after it), and one that RunPod never lets finish fails the job all the same, naming the pod
    to look for (jobs/service/dispatcher.py SWEEP_GIVE_UP_S)."""
    import json
    import subprocess
    import sys
    import time

    from sqlalchemy.orm import Session

    from jobs.pod import pods as pod_pods
    from jobs.service import dispatcher, pods, queue
    from jobs.service.dispatcher import Dispatcher
    from tests.fake_runpod import FakeRunPod

    url = f"sqlite:///{tmp_path / 'registry.db'}"
    registry.migrate(url)
    engine = make_engine(url)
    runs = tmp_path / "runs"

    def launched(job_id: str) -> subprocess.Popen:
        with Session(engine) as s:
            s.add(queue.ServiceJob(job_id=job_id, webhook_url="http://127.0.0.1:9/", webhook_secret="x",
                                   mode="pod", request={}, dispatched_at=registry.now()))  # fmt: skip
            s.commit()
        (runs / job_id).mkdir(parents=True)
        (runs / job_id / "run.json").write_text(
            json.dumps({"launch": {"create_ts": time.time()}, "attempts": []})
        )
        pods.launcher_log(runs, job_id).parent.mkdir(parents=True, exist_ok=True)
        pods.launcher_log(runs, job_id).write_text("error: a pod may exist and bill\n")
        proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
        proc.wait()
        return proc

    monkeypatch.setattr(pod_pods, "LISTING_LAG_S", 1.0)
    with FakeRunPod(workspace=tmp_path / "ws") as fake:
        monkeypatch.setenv("RUNPOD_API_URL", fake.url)
        monkeypatch.setenv("RUNPOD_API_KEY", fake.api_key)
        d = Dispatcher(engine, runs, url, "secret", 0, 1, False, 1.0, lambda job_id: None)
        none_made = new_id()
        d.launchers[none_made] = launched(none_made)
        d.tick()
        assert registry.get_job(none_made, url) is None  # inside the listing lag from its exit
        time.sleep(1.2)
        d.tick()  # 1 s after the exit, not CREATE_AFTER_S (150 s) after its last log line
        row = registry.get_job(none_made, url)
        assert (
            row.status == "failed"
            and row.error_message == "the pod could not be launched: a pod may exist and bill"
        )
        assert fake.did("terminate") == 0 and d.exit_codes == d.sweeping == {}

    # RunPod unreachable from now on: the sweep cannot finish; past the give-up the job is failed anyway.
    monkeypatch.setenv("RUNPOD_API_URL", "http://127.0.0.1:9")
    unanswered = new_id()
    d.launchers[unanswered] = launched(unanswered)
    d.tick()
    assert registry.get_job(unanswered, url) is None and unanswered in d.sweeping
    monkeypatch.setattr(dispatcher, "SWEEP_GIVE_UP_S", 0.0)
    d.tick()
    row = registry.get_job(unanswered, url)
    assert row.status == "failed" and row.error_message.startswith(
        "the pod could not be launched: a pod may exist and bill; RunPod could not say for 0 min whether a pod "
        f"named {unanswered} exists"
    ), row.error_message
    assert d.exit_codes == d.sweeping == {}
