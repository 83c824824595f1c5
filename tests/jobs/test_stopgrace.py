"""The bound on a stop after SIGTERM (jobs/stopgrace.py): on a pod the trainer tries its checkpoint save but
is never waited for past BRIGHTRUN_STOP_GRACE_S, RunPod's SIGKILL being about 5 s away; locally (no grace
set) it saves however long that takes. The trainer side runs the plugin's real callback, the parent side
jobs/run.py's real run_logged, each in a process of its own that the test signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT

from jobs import stopgrace

# A trainer whose step or save never ends: the plugin's callback handles SIGTERM as in training.
TRAINER = """
import os, sys, time
from jobs.axolotl_plugin import RegistryCallback
import signal
callback = RegistryCallback("r", sys.argv[1])
signal.signal(signal.SIGTERM, callback._on_sigterm)
print("ready", flush=True)
assert sys.stdin.readline() == "signalled\\n" and callback.stop_requested
print("stop requested, still saving", flush=True)
os.environ["BRIGHTRUN_STOP_GRACE_S"] = sys.argv[2]  # from now on, a pod
print("on a pod", flush=True)
time.sleep(120)  # the save that takes longer than RunPod waits
"""

# The parent of a trainer that ignores SIGTERM altogether (stuck where no Python handler runs).
PARENT = """
import sys
from pathlib import Path
from jobs.run import run_logged
child = [sys.executable, "-c", "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
         "print(os.getpid(), flush=True); time.sleep(120)"]
print("ready", flush=True)
try:
    run_logged(child, Path(sys.argv[1]), {})
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
"""


def start(script: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)} | (env or {}),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    ("value", "expected"), [("3", 3.0), ("0.5", 0.5), ("", None), ("0", None), ("-1", None), ("x", None)]
)
def test_grace_from_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv(stopgrace.GRACE_VAR, value)
    assert stopgrace.grace() == expected


def test_the_trainer_waits_for_its_save_locally_and_never_past_the_grace_on_a_pod(tmp_path):
    proc = start(TRAINER, str(tmp_path), "1", env={stopgrace.GRACE_VAR: ""})
    try:
        assert proc.stdout.readline() == "ready\n", proc.stderr.read()
        proc.send_signal(signal.SIGTERM)  # locally: the save goes on as long as it takes
        proc.stdin.write("signalled\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "stop requested, still saving\n"
        time.sleep(2)
        assert proc.poll() is None
        assert proc.stdout.readline() == "on a pod\n"
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # on a pod (grace 1 s): never waited for past it
        assert proc.wait(30) == stopgrace.EXIT_CODE
        took = time.monotonic() - signalled
        assert 1 <= took < 3, took
        assert "did not finish within 1 s (BRIGHTRUN_STOP_GRACE_S)" in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()


def test_the_parent_kills_a_trainer_that_does_not_stop_within_the_grace_and_records_it(tmp_path):
    log = tmp_path / "train.log"
    proc = start(PARENT, str(log), env={stopgrace.GRACE_VAR: "1"})
    try:
        assert proc.stdout.readline() == "ready\n", proc.stderr.read()
        child = None
        deadline = time.monotonic() + 60
        while child is None and time.monotonic() < deadline:  # its stdout goes to the log
            lines = log.read_text().splitlines() if log.is_file() else []
            child = next((int(x) for x in lines if x.isdigit()), None)
            time.sleep(0.1)
        assert child, log.read_text()
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 130
        took = time.monotonic() - signalled
        assert 2 <= took < 4, took  # grace 1 s + PARENT_EXTRA_S, within RunPod's ~5 s
        assert proc.stdout.read() == "interrupted\n"
        with pytest.raises(ProcessLookupError):
            os.kill(child, 0)
        assert "brightrun: killed 2 s after SIGTERM" in log.read_text()
    finally:
        proc.kill()
        proc.wait()


# The image's `python` for docker/entrypoint.sh: the job itself only says which grace it was given.
STUB = """#!/bin/bash
if [[ "$1 $2" == "-m jobs" ]]; then echo "${BRIGHTRUN_STOP_GRACE_S:-unset}" >"$GRACE_OUT"; exit 0; fi
if [[ "$1" == "-c" ]]; then exit 0; fi  # its import checks: Axolotl is not what this test is about
exec "%s" "$@"
"""


@pytest.mark.parametrize(
    ("env", "given"),
    [
        ({"RUNPOD_POD_ID": "pod1"}, "3"),
        ({"RUNPOD_POD_ID": "pod1", stopgrace.GRACE_VAR: "2"}, "2"),
        ({}, "unset"),
    ],
)
def test_the_entrypoint_sets_the_grace_on_a_runpod_pod_only(tmp_path, env, given):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(STUB % sys.executable)
    (bin_dir / "python").chmod(0o755)
    volume = tmp_path / "volume"
    proc = subprocess.run(
        ["bash", str(ROOT / "docker" / "entrypoint.sh")],
        env={
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(ROOT),
            "BRIGHTRUN_VOLUME": str(volume),
            "BRIGHTRUN_CONFIG": str(volume / "configs" / "run-1" / "config.yaml"),
            "BRIGHTRUN_RUN_ID": "run-1",
            "GRACE_OUT": str(tmp_path / "grace"),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "grace").read_text().strip() == given
    if given == "3":
        assert float(given) == stopgrace.POD_DEFAULT_S  # the entrypoint's default is the module's
