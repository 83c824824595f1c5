"""Two harmless lines that torchao and torch print whenever transformers or Axolotl is imported, dropped where
they are logged; every other message of those two loggers still shows.

  Failed to load .../torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: Could not load this library: ...
      logger "torchao" (torchao/__init__.py), WARNING, once for each CUDA extension of torchao that cannot
      load here. Dropped only where it cannot: torch is a build without CUDA (the lock's CPU build), or the
      file was built for another Python (cpython-310 on 3.11). A kernel that fails on a CUDA build of torch,
      for this Python, is a real problem and still shows.
  W... torch/utils/_pytree.py:630] <enum 'KernelPreference'> is an Enum subclass and is now natively supported
  by torch.compile as an opaque value type. Calling register_constant() on Enum subclasses is deprecated ...
      logger "torch.utils._pytree", WARNING, once for each of torchao's enums that torchao still registers: a
      notice for torchao's authors. Dropped only for an enum defined in torchao.

Both are logging records, not `warnings`, so PYTHONWARNINGS cannot reach them, and neither library has a
setting for exactly these: TORCH_LOGS="-torch.utils._pytree" (or any logger level) hides every warning of
that logger, and TORCHAO_FORCE_SKIP_LOADING_SO_FILES=1 skips the kernels that do load and logs a warning of
its own. So a logging.Filter on each of the two loggers (a logger's filters see only its own records:
torchao's sub-loggers are untouched) drops exactly those records.

Where it is installed (each time this one function):
- in our own processes: brightrun/__init__.py calls `quiet_third_party_logs()`, and every stage imports
  brightrun before anything imports torch;
- in the Python processes we start (`python -m jobs.preprocess`, `axolotl train` and the workers accelerate
  starts under it): `child_env` puts brightrun/_startup/ first on PYTHONPATH, where Python finds and runs
  sitecustomize.py at startup (the standard hook; see that file). The environment is what reaches a
  grandchild we do not start ourselves; wrapping our command lines would not.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import sysconfig
from collections.abc import Mapping

STARTUP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_startup")

_LOAD_FAILED = re.compile(r"Failed to load (?P<path>.+): Could not load this library: (?P=path)", re.DOTALL)
_ENUM_NOTICE = "%s is an Enum subclass and is now natively supported by torch.compile"


def _cannot_load_here(path: str) -> bool:
    """A torchao extension (`torchao/_C*.so`) that no torch and Python like this one loads."""
    folder, name = os.path.split(path)
    if os.path.basename(folder) != "torchao" or not (name.startswith("_C") and name.endswith(".so")):
        return False
    other_python = ".cpython-" in name and not name.endswith(sysconfig.get_config_var("EXT_SUFFIX") or "")
    torch = sys.modules.get("torch")  # imported by torchao before it logs this
    no_cuda = torch is not None and getattr(getattr(torch, "version", None), "cuda", "") is None
    return other_python or no_cuda


class HarmlessLines(logging.Filter):
    """Drops the two records above, nothing else (installed on "torchao" and "torch.utils._pytree")."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING or not isinstance(record.msg, str):
            return True
        if record.name == "torchao":
            found = _LOAD_FAILED.fullmatch(record.msg)
            return not (found and not record.args and _cannot_load_here(found["path"]))
        if record.name == "torch.utils._pytree" and record.msg.startswith(_ENUM_NOTICE):
            cls = record.args[0] if isinstance(record.args, tuple) and record.args else None
            return not (isinstance(cls, type) and cls.__module__.split(".")[0] == "torchao")
        return True


LOGGERS = ("torchao", "torch.utils._pytree")


def quiet_third_party_logs() -> None:
    """Install the filter in this process (once; before torch is imported, or the lines are already out)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, HarmlessLines) for f in logger.filters):
            logger.addFilter(HarmlessLines())


def child_env(env: Mapping[str, str]) -> dict[str, str]:
    """{"PYTHONPATH": ...} for a Python process started with `env`: brightrun/_startup/ first (once), whatever
    PYTHONPATH env had after it, so the process and its own children install the filter at startup."""
    current = env.get("PYTHONPATH", "")
    if STARTUP in current.split(os.pathsep):
        return {"PYTHONPATH": current}
    return {"PYTHONPATH": STARTUP + (os.pathsep + current if current else "")}
