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
    """The next sitecustomize along sys.path, searched only after this folder's last entry (a symlinked
    spelling of it counts as it): one earlier on the path has run already, so two _startup folders (two
    checkouts) chain once each instead of calling each other forever."""
    here = os.path.realpath(os.path.dirname(os.path.abspath(__file__)))
    entries = [os.path.realpath(p or os.curdir) for p in sys.path]
    last = max((i for i, entry in enumerate(entries) if entry == here), default=len(entries) - 1)
    after = sys.path[last + 1 :]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", after)
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


_run_the_shadowed_one()
