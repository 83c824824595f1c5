"""How long a training run may take to stop after SIGTERM, and the bound that enforces it.

Locally nothing follows a SIGTERM: the trainer finishes its step, saves a checkpoint and stops, however long
that takes. On a RunPod pod SIGKILL follows about 5 s later (RunPod's pricing page, cited in issue 16):
a 70B checkpoint is not saved in that time, and a process killed mid-save leaves its run saying `training`
on the volume. So on a pod (docker/entrypoint.sh sets BRIGHTRUN_STOP_GRACE_S, default 3) the save is tried
but never waited for past the grace:
  * the trainer (jobs/axolotl_plugin.py) arms a timer at SIGTERM that ends its process after GRACE s,
    saved or not. A cut save leaves a checkpoint without trainer_state.json, which transformers writes last
    and jobs/runfolder.py requires: the last periodic checkpoint is the one a resume takes;
  * the parent (jobs/run.py, run_logged) kills the trainer's whole process group GRACE + 1 s after it passed
    the SIGTERM on (a trainer stuck where its timer cannot run, accelerate's workers), then records the run
    `interrupted`, and the entrypoint marks the pod's exit: all within RunPod's 5 s.
"""

from __future__ import annotations

import os
import sys
import threading

GRACE_VAR = "BRIGHTRUN_STOP_GRACE_S"
POD_DEFAULT_S = 3.0  # docker/entrypoint.sh's default on a pod: leaves ~2 s of RunPod's 5 for the records
PARENT_EXTRA_S = 1.0  # the parent's kill comes this long after the trainer's own deadline
EXIT_CODE = 143  # 128 + SIGTERM, as a process ended by the signal reports it


def grace() -> float | None:
    """The grace from the environment in seconds; None when unset or not a positive number (no bound)."""
    try:
        value = float(os.environ.get(GRACE_VAR, ""))
    except ValueError:
        return None
    return value if value > 0 else None


def arm(seconds: float) -> threading.Timer:
    """End this process `seconds` from now, whatever it is doing: os._exit runs no handler and no atexit
    hook, so nothing waits on a save still being written."""

    def end() -> None:
        print(
            f"SIGTERM: the checkpoint save did not finish within {seconds:g} s ({GRACE_VAR}); exiting "
            "without it (the last complete checkpoint stands)",
            file=sys.stderr,
            flush=True,
        )
        os._exit(EXIT_CODE)

    timer = threading.Timer(seconds, end)
    timer.daemon = True
    timer.start()
    return timer
