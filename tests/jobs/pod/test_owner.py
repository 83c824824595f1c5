"""One follower per pod run (jobs/pod/owner.py): the lock is held by a live process only, and a second
`jobs follow` of a followed run leaves it to the first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from conftest import ROOT

from jobs.pod import owner
from jobs.pod.follow import follow

HOLD = "import sys, time; from jobs.pod import owner; owner.hold(sys.argv[1]); print('held', flush=True); time.sleep(60)"


def test_a_run_is_followed_by_the_live_process_holding_its_lock_and_by_no_other(tmp_path, capsys):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    assert owner.holder(run) is None  # never followed
    other = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout.readline().strip() == "held"
        assert owner.holder(run) == other.pid
        # A second follower (the service's, a person's `jobs follow`) leaves the run to it: exit 75, said.
        assert follow("r1", str(tmp_path / "runs"), api=None) == 75
        assert f"run r1 is followed by process {other.pid} already" in capsys.readouterr().err
        # Killed without a chance to clean up: the kernel drops its lock, and the run is free to follow.
        other.send_signal(signal.SIGKILL)
        other.wait()
        deadline = time.monotonic() + 5
        while owner.holder(run) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert owner.holder(run) is None
        owner.hold(run)
        owner.hold(run)  # again in the same process: a no-op, not a conflict with itself
        assert owner.holder(run) == os.getpid()
        owner.release(run)
        assert owner.holder(run) is None
    finally:
        other.kill()


def test_the_services_supervision_outlives_the_followers_it_started(tmp_path):
    """The dispatcher's supervision (jobs/service/dispatcher.py) once polled a follower it had already
    seen end (None) on every tick: every later tick failed and no orphaned pod was followed again."""
    from jobs.service import db
    from jobs.service.dispatcher import REFOLLOW_S, Dispatcher

    url = f"sqlite:///{tmp_path / 'registry.db'}"
    d = Dispatcher(db.make_engine(url), tmp_path, url, "secret", 0, 1, False, 1.0, lambda job_id: None)
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    long_ago = time.monotonic() - REFOLLOW_S - 1
    d.followers = {"over": (ended, long_ago), "just-ended": (None, time.monotonic())}
    d.supervise()
    d.supervise()  # twice: the second tick sees what the first left
    assert d.followers == {"just-ended": (None, d.followers["just-ended"][1])}  # the throttle kept
