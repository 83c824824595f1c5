"""Run by Python at the start of every process whose PYTHONPATH names this folder (brightrun/quiet.py's
`child_env`: the processes the jobs runner starts, and theirs): installs brightrun.quiet's filter before
anything imports torch. A sitecustomize that this one shadows (a distribution's own, further along sys.path)
still runs after it."""

import importlib.machinery
import importlib.util
import os
import sys

try:
    from brightrun.quiet import quiet_third_party_logs
except ImportError:  # a Python without this repo installed: nothing to quiet
    pass
else:
    quiet_third_party_logs()


def _run_the_shadowed_one() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


_run_the_shadowed_one()
