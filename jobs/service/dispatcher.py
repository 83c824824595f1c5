"""The service's dispatcher: a thread that starts its customers' jobs (jobs/service/queue.py says which and
where) and watches what it started: a pod job's launcher that ends before its pod exists (jobs/service/
pods.py), a stop asked for before a job's pod existed, and every pod of its jobs that no process follows
(a launcher killed, this service restarted: it follows it again). Started and stopped with the service."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from jobs import registry
from jobs.cancel import cancel
from jobs.service import pods, queue, secrets, start
from jobs.service.queue import NotStarted, ServiceJob

log = logging.getLogger("jobs.service")
TICK_S = 1.0


# How long the orphan sweep may go on failing (RunPod not answering, a terminate never confirmed) for a job
# whose launcher is gone, before the job is failed all the same: its customer told, and the pod, if one
# exists, left to end itself at its deadline (jobs/pod/selfend.py) and named for the console.
SWEEP_GIVE_UP_S = 15 * 60.0

# Least time between two followers this service starts for one pod run (a follower that ends at once, its
# run still active: RunPod's API down, a pod not confirmed gone, must not be restarted every tick).
REFOLLOW_S = 30.0


def spawn_launcher(argv: list[str], runs: Path, job_id: str, env: dict) -> subprocess.Popen:
    """A pod job's launcher or follower, its output in the job's launcher log (it follows its pod
    meanwhile, whatever happens to the service)."""
    return start.spawn(argv, pods.launcher_log(runs, job_id), env)


def dispatch_once(
    engine: Engine,
    runs: Path,
    db_url: str,
    service_secret: str,
    gpus: int,
    per_job: int,
    evaluate: bool,
    poll: float,
) -> tuple[ServiceJob, subprocess.Popen | None] | None:
    """Start the next waiting job (a local one when its GPUs are free; a pod job at once): (the job, the pod
    launcher's process or None), or None. NotStarted: it was claimed and could not be started."""
    job = queue.next_queued(engine)
    if job is None:
        return None
    devices = queue.free_gpus(engine, runs, gpus, per_job) if job.mode == "local" else []
    if devices is None:
        return None
    with Session(engine) as s:
        row = s.get(ServiceJob, job.job_id, with_for_update=True)
        if row.dispatched_at is not None:  # another dispatcher (a second service on this registry) took it
            return None
        row.dispatched_at = registry.now()
        row.request = {**row.request, "gpus": devices}
        s.commit()
    try:
        destination = (job.webhook_url, secrets.open_secret(service_secret, job.webhook_secret))
        if job.mode == "pod":
            env = pods.launcher_env(job, db_url, destination, service_secret)
            proc = spawn_launcher(pods.launch_argv(job, runs, poll), runs, job.job_id, env)
            pods.launcher_log(runs, job.job_id).with_suffix(".pid").write_text(str(proc.pid))
            log.info("job %s: launching its pod", job.job_id)
            return job, proc
        argv = [sys.executable, "-m", "jobs", "--runs-dir", str(runs), "execute", job.job_id]
        env = queue.job_env(job.job_id, db_url, destination, devices)
        start.spawn(
            argv + ([] if evaluate else ["--no-eval"]), runs / job.job_id / "logs" / "launcher.log", env
        )
    except Exception as exc:
        raise NotStarted(job, f"{type(exc).__name__}: {exc}") from exc
    log.info("job %s started (local run%s)", job.job_id, f" on GPU {devices}" if devices else "")
    return job, None


class Dispatcher:
    """The service's thread that starts queued jobs (and notices a pod launcher that ended before its pod
    existed); stopped with the service."""

    def __init__(
        self,
        engine: Engine,
        runs: Path,
        db_url: str,
        service_secret: str,
        gpus: int,
        per_job: int,
        evaluate: bool,
        poll: float,
        route: Callable[[str], None],
    ):
        self.args = (engine, runs, db_url, service_secret, gpus, per_job, evaluate, poll)
        self.route = route  # a job's events from this process go to its customer (training_api)
        self.launchers: dict[str, subprocess.Popen] = {}
        self.exit_codes: dict[str, tuple[int, float]] = {}  # launchers that ended here: (code, when)
        self.sweeping: dict[str, float] = {}  # jobs whose orphan sweep is not done yet: since when
        self.followers: dict[str, tuple[subprocess.Popen | None, float]] = {}  # started here, and when
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self.loop, name="dispatcher", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def poke(self) -> None:
        self.wake.set()

    def failed(self, job_id: str, message: str, **row) -> None:
        try:
            self.route(job_id)
        except secrets.SealError as exc:  # the customer cannot be told; the row says why all the same
            message += f" (and its webhook secret cannot be opened: {exc})"
        engine, runs, db_url = self.args[:3]
        queue.fail(engine, runs, db_url, job_id, message, **row)

    def carry_out_stops(self) -> None:
        """Stops asked for before a pod job's pod existed: before its launch, the job never starts; once
        its launcher has registered it, the one cancel (its pod terminated)."""
        engine, runs, db_url = self.args[:3]
        for job in queue.stops(engine):
            row = registry.get_job(job.job_id, db_url)
            if row is None and job.dispatched_at is not None:
                continue  # its launcher is creating the pod: cancelled once it is registered
            self.route(job.job_id)
            if row is None:
                queue.fail(engine, runs, db_url, job.job_id, "cancelled on request", "cancelled")
            elif row.status not in registry.TERMINAL:
                cancel(job.job_id, str(runs), db_url)
            queue.stopped(engine, job.job_id, job.dispatched_at is not None)

    def tick(self) -> None:
        self.carry_out_stops()
        while True:
            try:
                started = dispatch_once(*self.args)
            except NotStarted as exc:
                self.failed(exc.job.job_id, f"could not be started: {exc.why}")
                continue
            if started is None:
                break
            job, proc = started
            if proc is not None:
                self.launchers[job.job_id] = proc
        engine, runs, db_url = self.args[:3]
        for job_id, proc in list(self.launchers.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.launchers[job_id]
            if registry.get_job(job_id, db_url) is None:
                self.exit_codes[job_id] = (code, time.time())
        # A launcher gone with no pod registered, whether it exited here (RunPod refused, or its create's
        # answer was lost and the lookup failed too: a pod may exist) or died unseen (the service restarted):
        # any pod it made is found, ended and priced before the job is failed (`just chaos`, issue 25: a
        # failed job's unrecorded pod had no one left to end it).
        gone = pods.unattended(engine, runs, db_url, set(self.launchers), set(self.exit_codes))
        for job_id in gone:
            code, exited_at = self.exit_codes.get(job_id, (-1, None))
            left = pods.orphan_pods(runs, job_id, exited_at)
            since = self.sweeping.setdefault(job_id, time.monotonic())
            if left is None and time.monotonic() - since >= SWEEP_GIVE_UP_S:
                left = (
                    f"; RunPod could not say for {SWEEP_GIVE_UP_S / 60:.0f} min whether a pod named {job_id}"
                    " exists: if one does, it ends itself at its deadline (look in the RunPod console)",
                    0.0,
                )
            if left is not None:
                said, cost = left
                self.failed(job_id, pods.launch_failed(runs, job_id, code) + said, actual_cost=cost)
                self.exit_codes.pop(job_id, None)  # only once failed: a failing database keeps them for later
                self.sweeping.pop(job_id, None)
        for kept in (self.exit_codes, self.sweeping):  # jobs registered or failed elsewhere meanwhile
            for job_id in set(kept) - set(gone):
                del kept[job_id]
        self.supervise()

    def supervise(self) -> None:
        """Every pod of this service's jobs has a follower (issue 25): one whose launcher or follower is
        gone (killed, the machine rebooted, this service restarted) is followed again by `jobs follow`,
        the follower every pod run uses, which ends the run and its pod as its launcher would have."""
        engine, runs, db_url, service_secret, *_, poll = self.args
        orphans = pods.unfollowed(engine, runs)
        waiting = {job.job_id for job in orphans}
        for job_id, (proc, started) in list(self.followers.items()):
            if proc is not None and proc.poll() is not None:
                proc = None  # ended (reaped): its run is followed again below if it still needs it
            if proc is None and job_id not in waiting and time.monotonic() - started >= REFOLLOW_S:
                del self.followers[job_id]  # over, or followed by someone: nothing to remember
            else:
                self.followers[job_id] = (proc, started)
        for job in orphans:
            proc, started = self.followers.get(job.job_id, (None, -REFOLLOW_S))
            if proc is not None or time.monotonic() - started < REFOLLOW_S:
                continue  # starting (it takes the lock once it runs), or ended a moment ago
            self.followers[job.job_id] = (None, time.monotonic())
            try:
                destination = (job.webhook_url, secrets.open_secret(service_secret, job.webhook_secret))
                env = pods.launcher_env(job, db_url, destination, service_secret)
                proc = spawn_launcher(pods.follow_argv(job, runs, poll), runs, job.job_id, env)
            except Exception as exc:  # noqa: BLE001 -- said, tried again later; the other pods go on
                log.error("job %s: following its pod: %s: %s", job.job_id, type(exc).__name__, exc)
                continue
            self.followers[job.job_id] = (proc, time.monotonic())
            log.info(
                "job %s: nothing followed its pod (launcher gone, or service restarted); following it",
                job.job_id,
            )

    def loop(self) -> None:
        engine, runs = self.args[:2]
        try:
            queue.resend_all(engine, runs, self.route)
        except Exception as exc:  # noqa: BLE001 -- said; the jobs themselves go on
            log.error("resending undelivered events: %s: %s", type(exc).__name__, exc)
        while not self.stopping.is_set():
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 -- the loop must outlive a database blip; said, retried
                log.error("dispatcher: %s: %s", type(exc).__name__, exc)
            self.wake.wait(TICK_S)
            self.wake.clear()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        self.thread.join(5)
