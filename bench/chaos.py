"""Seeded chaos (issue 25, "Done when"): N jobs through the real jobs service (`--runs pods`) and the fake
RunPod, with RunPod's faults (issue 25, item 7) and the service SIGKILLed and started again mid-run.

Usage: python -m bench.chaos [--jobs 50] [--seed 1] [--concurrency 6] [--restarts 4] [--keep]
       (`just chaos ...`: a table, bench/results/chaos-<seed>.json, exit 1 when a check fails)

As tests/jobs/service/test_customer_pods.py: the fake RunPod in this process (a 5 s stop grace, a 2 s
listing lag, hosts on CUDA 12.4, 12.8 and 13.0), the customer's receiver over their tables and their
Storage (tests/customer_app.py), the service a real process on SQLite. Jobs start as their app starts
them (POST /training/start, a signed dataset URL); a spot job adds runpod_config.instance_type=spot, which
their app does not forward today. At most --concurrency jobs are live at once (2 cores). Each pod runs the
real docker/entrypoint.sh (its marks, its self-end, a finished run's restart) behind a `python` that
stands in for the trainer (`pod_trainer`: the run's row in the volume's registry, its signed events to
the service, --steps steps of --step-s s, an adapter; SIGTERM: interrupted) and for `import axolotl`.

Faults, drawn per job from --seed (each job's list, and what fired, in the JSON): its create answered 502
or with an error inside a 200, the pod made all the same; 1-3 failing reads of its pod; 2 failing
terminates; a price change; a spot reclaim (kept EXITED); an on-demand pod terminated outside. For all:
429 and 502 bursts, and service restarts (SIGKILL; a "reboot" kills its launchers and followers too). A
fault that acts on a request is armed for that job's request only (the fake's switches are global
counters, so its requests pass one at a time here). When faults fire depends on timing: a run is seeded,
not replayed.

Checks: no pod left on the fake; every job final (completed, or failed/cancelled with an error_message),
never final in our registry while one of its pods still ran, and the customer's row at that status; each
job's actual_cost within 1% of the fake's own billing of its pods (FakeRunPod.billed); no event out of
order at their receiver (per job by (retry_count, sequence): none older than one applied but an end of
the same attempt, none after an end).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "fixtures" / "brightrun-v4-sample.json"
TOKEN, SERVICE_SECRET, CUSTOMER_SECRET = "chaos-token-5e1f", "chaos-whsec-8b07", "whsec-customer-7d41"
TERMINAL = ("completed", "failed", "cancelled")
SWITCHES = {  # per-job faults that act on a request: the fake's counter each arms
    "error_after_create": "_create_then_error",
    "fail_after_create": "_create_then_fail",
    "query_errors": "_query_errors",
    "fail_terminates": "_terminate_failures",
}
# The pod's `python`: the trainer and Axolotl's import check are stand-ins, everything else is real.
WRAPPER = """#!/usr/bin/env bash
case " $* " in
  *" -c import axolotl, jobs "*) exit 0 ;;
  *" -m jobs "*" run-config "*|*" -m jobs "*" resume "*) exec "{python}" -m bench.chaos pod-trainer "$@" ;;
esac
exec "{python}" "$@"
"""


def pod_trainer(argv: list[str]) -> int:
    """A run on the pod, as `jobs run-config` / `jobs resume` leave it on the volume."""
    from jobs import registry
    from jobs.status import emit, set_status

    run_id = argv[argv.index("--run-id") + 1] if "--run-id" in argv else argv[argv.index("resume") + 1]
    run_dir = Path(argv[argv.index("--runs-dir") + 1]) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "run.json").is_file():
        (run_dir / "run.json").write_text(json.dumps({"run_id": run_id, "stand_in": "bench/chaos.py"}))
    steps, step_s = int(os.environ["CHAOS_STEPS"]), float(os.environ["CHAOS_STEP_S"])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    job = registry.get_job(run_id)
    if job is None:
        with registry.session() as s:
            s.add(registry.TrainingJob(id=run_id, status="queued", preset="balanced", model="smoke",
                                       hardware="cpu", hyperparameters={}, metrics={}))  # fmt: skip
            s.commit()
    first = (job.step or 0) if job else 0
    set_status(run_dir, run_id, "preprocessing", started_at=registry.now(), event={"error_message": None})
    set_status(run_dir, run_id, "training", total_steps=steps, step=first)
    for step in range(first + 1, steps + 1):
        if stop.wait(step_s):
            set_status(run_dir, run_id, "interrupted", error_message="SIGTERM", event={"relaunch": True})
            return 130
        metrics = {"loss": round(2.0 / step, 4), "learning_rate": 2e-4, "epoch": round(step / steps, 3)}
        registry.update_job(run_id, step=step, metrics=metrics)
        emit(run_dir, registry.get_job(run_id), "training", metrics=metrics)
    out = run_dir / "output"
    out.mkdir(exist_ok=True)
    (out / "adapter_model.safetensors").write_bytes(os.urandom(64))
    (out / "adapter_config.json").write_text(json.dumps({"r": 16, "lora_alpha": 32, "lora_dropout": 0.05}))
    set_status(run_dir, run_id, "completed", completed_at=registry.now(), artifact_path=str(out),
               event={"lora_artifact_path": str(out)})  # fmt: skip
    return 0


def chaos_fake(workspace: Path, bindir: Path, steps: int, step_s: float):
    """The fake RunPod, its requests one at a time, a job's armed fault consumed by that job's request."""
    from brightrun import offline
    from tests.fake_runpod import FakeRunPod

    def command(env: dict, volume: Path) -> list[str]:
        env.update(offline.ALL, PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}", BRIGHTRUN_HARDWARE="cpu")
        env |= {"PYTHONPATH": str(ROOT), "CHAOS_STEPS": str(steps), "CHAOS_STEP_S": str(step_s)}
        log = volume / f"container-{env['RUNPOD_POD_ID']}.log"
        return ["bash", "-c", f'exec bash "{ROOT}/docker/entrypoint.sh" 2>>"{log}"']

    class ChaosRunPod(FakeRunPod):
        def __init__(self):
            hosts = ("12.4", "12.8", "13.0")  # hosts on several CUDA versions; pods need the image's 13.0
            super().__init__(
                workspace=workspace, command=command, stop_grace=5.0, listing_lag=2.0, host_cuda=hosts
            )
            self.gate = threading.Lock()
            self.armed: dict[str, dict[str, int]] = {}  # job -> fault -> requests left to fail
            self.fired: dict[str, Counter] = {}

        def which(self, path: str, body: bytes, method: str) -> tuple[str | None, str | None]:
            text = body.decode("utf-8", "replace")
            if any(f in text for f in ("podFindAndDeployOnDemand", "podRentInterruptable")) or (
                method == "POST" and path.split("?")[0] == "/v2/pods"
            ):
                job = next((j for j in self.armed if j in text), None)
                armed = self.armed.get(job, {})
                return job, next(
                    (k for k in ("error_after_create", "fail_after_create") if armed.get(k)), None
                )
            found = re.search(r'podId:\s*\\?"(\w+)', text) or re.search(r"/v2/pods/(\w+)", path)
            pod = found and (self.pods.get(found.group(1)) or self.gone.get(found.group(1)))
            job = pod.env.get("BRIGHTRUN_JOB_ID") if pod else None
            if "podTerminate" in text or method == "DELETE" or '"terminate"' in text:
                return job, "fail_terminates"
            if re.search(r"\bpod\s*\(", text) or (method == "GET" and pod):
                return job, "query_errors"
            return job, None

        def answer(self, path, headers, body, method="POST"):
            with self.gate:
                job, fault = self.which(path, body, method)
                armed = self.armed.get(job, {})
                switch = SWITCHES[fault] if armed.get(fault) else None
                if switch:
                    setattr(self, switch, 1)
                try:
                    return super().answer(path, headers, body, method)
                finally:
                    if switch and getattr(self, switch) == 0:  # this request consumed it
                        armed[fault] -= 1
                        self.fired.setdefault(job, Counter())[fault] += 1
                    if switch:
                        setattr(self, switch, 0)

    ChaosRunPod.__module__ = FakeRunPod.__module__  # fake_runpod_rest finds the fake's module by it
    return ChaosRunPod()


def plan(rng: random.Random, n: int, restarts: int, life_s: float) -> tuple[list[dict], list[dict]]:
    """Each job (spot or not, its faults; `at`: seconds after its first pod's create), and the faults for
    all (each after the k-th job's start plus a delay)."""
    jobs = []
    for _ in range(n):
        spot, faults, roll, at = rng.random() < 0.35, [], rng.random(), rng.uniform(3, life_s * 0.8)
        if roll < 0.24:
            faults.append({"fault": "error_after_create" if roll < 0.12 else "fail_after_create", "n": 1})
        if rng.random() < 0.3:
            faults.append({"fault": "query_errors", "n": rng.randint(1, 3)})
        if rng.random() < 0.3:
            faults.append({"fault": "fail_terminates", "n": 2})
        if rng.random() < 0.3:
            faults.append(
                {"fault": "set_price", "at": rng.uniform(2, life_s * 0.8), "factor": rng.uniform(0.5, 3)}
            )
        if spot and rng.random() < 0.5:
            faults.append({"fault": "preempt", "at": at})
        elif not spot and rng.random() < 0.1:
            faults.append({"fault": "terminate_outside", "at": at})
        jobs.append(
            {"job_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "spot": spot, "faults": faults}
        )
    every = [
        {"fault": "restart", "after_job": k, "delay": rng.uniform(1, 12), "reboot": rng.random() < 0.5,
         "down_s": rng.uniform(0.5, 4)}
        for k in sorted(rng.sample(range(1, n), min(restarts, n - 1)))
    ]  # fmt: skip
    for _ in range(max(1, n // 8)):
        every.append({"fault": rng.choice(("rate_limit", "server_error")), "after_job": rng.randrange(n),
                      "delay": rng.uniform(0, 10), "n": rng.randint(1, 3)})  # fmt: skip
    return jobs, every


def start_service(argv: list[str], env: dict, log: Path, port: int) -> subprocess.Popen:
    import httpx

    with log.open("a") as out:
        proc = subprocess.Popen(
            [sys.executable, *argv], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the service did not start:\n" + log.read_text()[-3000:])


def procs(match) -> list[int]:
    """Pids of this machine's processes for which match(pid, ppid, cmdline) holds."""
    out = []
    for entry in Path("/proc").iterdir():
        try:
            ppid = (
                int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) if entry.name.isdigit() else 0
            )
            if ppid and match(int(entry.name), ppid, (entry / "cmdline").read_bytes()):
                out.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return out


def kill(proc: subprocess.Popen, reboot: bool) -> int:
    """SIGKILL the service; a reboot kills its launchers and followers (each a session of its own) too."""
    doomed = procs(lambda pid, ppid, cmd: ppid == proc.pid) if reboot else []
    proc.kill()
    proc.wait()
    for pid in doomed:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
    return len(doomed)


def start_job(app, base: str, job: dict, url: str) -> None:
    """Their app's start (tests/customer_app.py start_training_job), plus runpod_config for a spot job."""
    import httpx

    from tests.customer_app import HYPERPARAMETERS

    app.db.execute("INSERT INTO training_jobs (id, status) VALUES (%s, 'queued')", [job["job_id"]])
    body = {"job_id": job["job_id"], "dataset_url": url, "hyperparameters": HYPERPARAMETERS,
            "webhook_url": app.url, "webhook_secret": app.secret}  # fmt: skip
    if job["spot"]:
        body["runpod_config"] = {"instance_type": "spot"}
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    httpx.post(
        f"{base}/training/start", content=json.dumps(body), headers=headers, timeout=300
    ).raise_for_status()
    app.db.execute("UPDATE training_jobs SET status = 'preprocessing' WHERE id = %s", [job["job_id"]])


def pods_of(fake, job_id: str) -> list:
    with fake.lock:
        return [
            p for p in [*fake.pods.values(), *fake.gone.values()] if p.env.get("BRIGHTRUN_JOB_ID") == job_id
        ]


def timed_fault(fake, job: dict, fault: dict) -> str | None:
    """A fault that acts at a time after the job's first pod's create, on its newest running pod; None:
    not yet."""
    with fake.lock:
        mine = pods_of(fake, job["job_id"])
        if not mine or time.time() - min(p.created_at for p in mine) < fault["at"]:
            return None
        live = [p for p in mine if p.id in fake.pods and not p.halt.is_set() and p.started is not None]
        if not live:
            return "missed: no pod running"
        pod = max(live, key=lambda p: p.created_at)
        if fault["fault"] == "set_price":
            fake.set_price(pod.id, round(pod.cost_per_hr * fault["factor"], 4))
            return f"{pod.id}: ${pod.cost_per_hr}/h"
    (fake.preempt if fault["fault"] == "preempt" else fake.terminate_outside)(pod.id)
    return pod.id


def out_of_order(log: list[dict]) -> list[dict]:
    """Per job, as their receiver applied them: an event older (retry_count, sequence) than one applied,
    other than an end of that attempt, or any event after an end."""
    state, seen, bad = {}, set(), []
    for entry in log:
        event = entry["payload"]
        if entry["answer"] != 200 or not event or event.get("event_id") in seen:
            continue
        seen.add(event.get("event_id"))
        key, end = (event.get("retry_count") or 0, event.get("sequence") or 0), event["status"] in TERMINAL
        st = state.setdefault(event["job_id"], {"best": (-1, -1), "ended": None})
        why = f"after {st['ended']}" if st["ended"] else None
        if not why and key < st["best"] and not (end and key[0] == st["best"][0]):
            why = f"older than {st['best']}"
        if why:
            bad.append({"job_id": event["job_id"], "event": key, "status": event["status"], "why": why})
        st["best"], st["ended"] = max(st["best"], key), st["ended"] or (event["status"] if end else None)
    return bad


def check(jobs: list[dict], fake, app, db_url: str, runs: Path) -> dict:
    """Each job's figures (into its dict), and the run's."""
    from jobs import registry

    left = [
        {"pod": p.id, "job": p.env.get("BRIGHTRUN_JOB_ID"), "status": p.status} for p in [*fake.pods.values()]
    ]
    for job in jobs:
        row, mine = registry.get_job(job["job_id"], db_url), pods_of(fake, job["job_id"])
        billed, ours = sum(fake.billed(p.id) for p in mine), (row.actual_cost or 0.0) if row else 0.0
        lineage = runs / job["job_id"] / "run.json"
        tried = (
            {a["pod_id"]: a for a in json.loads(lineage.read_text())["attempts"]} if lineage.is_file() else {}
        )
        theirs = app.db.rows("SELECT status FROM training_jobs WHERE id = %s", [job["job_id"]])
        # What our side wrote about the job: a pod named nowhere in it is one no part of us ever learned of.
        ours_said = lineage.read_text() if lineage.is_file() else ""
        launcher = runs / ".launchers" / f"{job['job_id']}.log"
        ours_said += launcher.read_text("utf-8", "replace") if launcher.is_file() else ""
        job |= {
            "status": row.status if row else None,
            "reason": row and (row.error_message or (row.status == "completed" and "completed")) or None,
            "actual_cost": ours, "billed": billed,
            "cost_error": abs(ours - billed) / billed if billed else (0.0 if not ours else float("inf")),
            "customer_status": theirs[0]["status"] if theirs else None,
            "fired": dict(fake.fired.get(job["job_id"], {})),
            # per pod: its create and end here against ours (s; + = ours later), its bill and our cost
            "pods": [
                {"pod": p.id, "billed": fake.billed(p.id), "cost": tried.get(p.id, {}).get("cost"),
                 "start_lag_s": p.created_at - tried.get(p.id, {}).get("created_ts", p.created_at),
                 "end_lag_s": (tried.get(p.id, {}).get("ended_ts") or 0) - (p.halted_at or 0),
                 "ran_after_final_s": (p.halted_at or time.time()) - job.get("final_ts", time.time()),
                 "known_to_us": p.id in ours_said}
                for p in mine
            ],
        }  # fmt: skip
    return {
        "pods_left": left,
        "statuses": dict(Counter(j["status"] for j in jobs)),
        "not_final": [j["job_id"] for j in jobs if j["status"] not in TERMINAL],
        "no_reason": [j["job_id"] for j in jobs if j["status"] in TERMINAL and not j["reason"]],
        "final_while_a_pod_ran": [
            j["job_id"] for j in jobs if any(p["ran_after_final_s"] > 0 for p in j["pods"])
        ],
        "customer_not_told": [j["job_id"] for j in jobs if j["customer_status"] != j["status"]],
        "max_cost_error": max((j["cost_error"] for j in jobs), default=0.0),
        # Off by more than 1% with a pod that neither run.json nor the launcher's log names: RunPod never
        # answered us with its id (the check still counts them: the 1% is for every job).
        "off_unknown_pod": [
            j["job_id"]
            for j in jobs
            if j["cost_error"] > 0.01 and not all(p["known_to_us"] for p in j["pods"])
        ],
        "events_delivered": sum(1 for e in app.log if e["answer"] == 200),
        "events_out_of_order": out_of_order(app.log),
    }


def run(args, tmp: Path) -> dict:
    from sqlalchemy import select

    from brightrun import offline
    from jobs import registry
    from tests.customer_app import CustomerApp, Storage

    rng = random.Random(args.seed)
    jobs, every = plan(rng, args.jobs, args.restarts, args.steps * args.step_s + 4)
    (tmp / "bin").mkdir()
    (tmp / "bin" / "python").write_text(WRAPPER.format(python=sys.executable))
    (tmp / "bin" / "python").chmod(0o755)
    (tmp / "no-wheels").mkdir()
    os.environ.pop("TEST_POSTGRES_URL", None)  # their tables on SQLite, in tmp
    fake = chaos_fake(tmp / "volume", tmp / "bin", args.steps, args.step_s).start()
    for job in jobs:
        fake.armed[job["job_id"]] = {f["fault"]: f["n"] for f in job["faults"] if f["fault"] in SWITCHES}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        runs, port = tmp / "runs", sock.getsockname()[1]
    base, db_url = f"http://127.0.0.1:{port}", f"sqlite:///{tmp / 'runs' / 'registry.db'}"
    argv = f"-m jobs --runs-dir {runs} service --port {port} --data-dir {tmp / 'data'} --model smoke".split()
    argv += ["--poll", f"{args.poll:g}"]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "WEBHOOK_URL", "ARTIFACT_STORE")}
    env |= offline.ALL | {
        "JOBS_API_TOKEN": TOKEN, "TRAINING_WEBHOOK_SECRET": SERVICE_SECRET, "RUNPOD_API_URL": fake.url,
        "RUNPOD_API_KEY": fake.api_key, "BRIGHTRUN_VOLUME_DIR": str(fake.workspace), "HF_TOKEN": "",
        "BRIGHTRUN_IMAGE": "registry.example/brightrun:test", "BRIGHTRUN_POD_WHEELS": str(tmp / "no-wheels"),
        "PUBLIC_URL": base, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }  # fmt: skip
    applied, due, submitted, stuck, t0 = [], [], 0, [], time.monotonic()
    with Storage() as storage, CustomerApp(tmp, CUSTOMER_SECRET) as app:
        storage.put("u1/sample.json", SAMPLE.read_bytes())
        service = start_service(argv, env, tmp / "service.log", port)
        try:
            while True:
                with registry.session(db_url) as s:
                    rows = s.execute(select(registry.TrainingJob.id, registry.TrainingJob.status)).all()
                over = {i for i, st in rows if st in TERMINAL} | {
                    j["job_id"] for j in jobs if "start_error" in j
                }
                for job in (j for j in jobs[:submitted] if j["job_id"] in over):
                    job.setdefault("final_ts", time.time())  # first seen final in our registry
                live = sum(1 for j in jobs[:submitted] if j["job_id"] not in over)
                while submitted < len(jobs) and live < args.concurrency:
                    try:
                        start_job(app, base, jobs[submitted], storage.sign("u1/sample.json"))
                    except Exception as exc:  # noqa: BLE001 -- a start refused is a finding: said, counted
                        jobs[submitted]["start_error"] = f"{type(exc).__name__}: {exc}"
                    jobs[submitted]["started_s"] = round(time.monotonic() - t0, 1)
                    due += [(time.monotonic() + e["delay"], e) for e in every if e["after_job"] == submitted]
                    submitted, live = submitted + 1, live + 1
                for at, event in sorted(due, key=lambda d: d[0]):
                    if at > time.monotonic():
                        break
                    due.remove((at, event))
                    applied.append({"at_s": round(time.monotonic() - t0, 1), **event})
                    if event["fault"] == "restart":
                        applied[-1]["killed"] = kill(service, event["reboot"])
                        time.sleep(event["down_s"])
                        service = start_service(argv, env, tmp / "service.log", port)
                    else:
                        getattr(fake, event["fault"])(event["n"])
                for job in jobs[:submitted]:
                    for fault in (f for f in job["faults"] if "at" in f and "applied" not in f):
                        if job["job_id"] in over:
                            fault["applied"] = "missed: the job was over"
                        elif (what := timed_fault(fake, job, fault)) is not None:
                            fault["applied"] = what
                if submitted == len(jobs) and not due and all(j["job_id"] in over for j in jobs):
                    break
                if time.monotonic() - t0 > args.timeout:
                    stuck = [j["job_id"] for j in jobs if j["job_id"] not in over]
                    break
                time.sleep(0.5)
            wall = time.monotonic() - t0
            deadline = time.monotonic() + 30  # their row hears the end a moment after ours is written
            while time.monotonic() < deadline and any(
                r["status"] not in TERMINAL for r in app.db.rows("SELECT status FROM training_jobs", [])
            ):
                time.sleep(0.5)
            time.sleep(2)  # a pod's last requests
            result = check(jobs, fake, app, db_url, runs)
            for job_id in stuck:
                log = runs / ".launchers" / f"{job_id}.log"
                tail = log.read_text()[-800:] if log.is_file() else "(no launcher log)"
                result.setdefault("stuck", []).append({"job_id": job_id, "launcher_log": tail})
        finally:
            service.kill()
            service.wait()
            for pid in procs(lambda pid, ppid, cmd: str(tmp).encode() in cmd and pid != os.getpid()):
                os.kill(pid, signal.SIGKILL)  # this run's launchers and followers (their argv names tmp)
            fake.close()
    fired = Counter(e["fault"] for e in applied)
    for job in jobs:
        fired.update(job["fired"])
        fired.update(
            f["fault"] + (" (missed)" if "missed" in f.get("applied", "missed") else "")
            for f in job["faults"]
            if "at" in f
        )
    return result | {
        "seed": args.seed, "jobs": len(jobs), "wall_s": round(wall, 1), "faults_injected": dict(fired),
        "global_faults": applied, "per_job": jobs,
        "settings": {k: getattr(args, k) for k in ("concurrency", "steps", "step_s", "poll", "restarts")},
    }  # fmt: skip


def report(result: dict) -> list[str]:
    """The table; returns the checks that failed."""
    checks = {
        "pods left": result["pods_left"],
        "jobs not final": result["not_final"] or result.get("stuck"),
        "jobs final without a reason": result["no_reason"],
        "jobs final while a pod still ran": result["final_while_a_pod_ran"],
        "customer's row not at the job's final status": result["customer_not_told"],
        "a cost off by more than 1%": result["max_cost_error"] > 0.01,
        "events out of order": result["events_out_of_order"],
    }
    failed = [what for what, bad in checks.items() if bad]
    why = Counter(
        (j["status"], re.sub(r"\b[0-9a-z]{14}\b|\d+(\.\d+)?", "#", j["reason"] or "-")[:100])
        for j in result["per_job"]
    )
    restarts = [e for e in result["global_faults"] if e["fault"] == "restart"]
    lines = [
        f"chaos seed {result['seed']}: {result['jobs']} jobs, {len(restarts)} service restarts "
        f"({sum(e['reboot'] for e in restarts)} with its launchers killed), wall {result['wall_s']:.0f} s",
        f"  pods left on the fake       {len(result['pods_left'])}",
        f"  jobs per final status       {result['statuses']}",
        *(f"    {n:3d} × {status}: {reason}" for (status, reason), n in sorted(why.items())),
        f"  final without a reason      {len(result['no_reason'])}",
        f"  final while a pod ran       {len(result['final_while_a_pod_ran'])}",
        f"  customer's row not told     {len(result['customer_not_told'])}",
        f"  max |cost − billed|/billed  {result['max_cost_error']:.3%}",
        f"  jobs over 1%                {sum(j['cost_error'] > 0.01 for j in result['per_job'])}, of which "
        f"{len(result.get('off_unknown_pod', []))} with a pod whose id nothing of ours holds",
        f"  events out of order         {len(result['events_out_of_order'])} of {result['events_delivered']}",
        f"  faults injected             {result['faults_injected']}",
        *(f"  stuck: {s['job_id']}: …{s['launcher_log'][-300:]}" for s in result.get("stuck", [])),
        "  " + ("FAILED: " + "; ".join(failed) if failed else "all checks passed"),
    ]
    print("\n".join(lines))
    return failed


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["pod-trainer"]:
        return pod_trainer(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=6, help="jobs live at once (default 6)")
    ap.add_argument("--restarts", type=int, default=4, help="service SIGKILLs (default 4)")
    ap.add_argument("--steps", type=int, default=16, help="steps each pod logs (default 16)")
    ap.add_argument("--step-s", type=float, default=4.0, help="seconds a step (default 4)")
    ap.add_argument("--poll", type=float, default=0.25, help="the service's --poll, s (default 0.25)")
    ap.add_argument("--timeout", type=float, default=2400.0, help="s before stuck jobs are reported")
    ap.add_argument("--keep", action="store_true", help="keep the run's folder (logs, volume)")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix=f"chaos-{args.seed}-"))
    try:
        result = run(args, tmp)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    failed = report(result)
    out = ROOT / "bench" / "results" / f"chaos-{args.seed}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result | {"failed": failed, "kept": args.keep and str(tmp)}, indent=1) + "\n")
    print(f"  figures in {out.relative_to(ROOT)}" + (f"; the run's folder: {tmp}" if args.keep else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
