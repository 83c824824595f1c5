"""brightrun/quiet.py: torchao's "Failed to load ..._C*.so" and torch's "Enum subclass ... register_constant()"
lines are gone, in our processes and in those the jobs runner starts; other warnings of the same loggers show."""

from __future__ import annotations

import enum
import logging
import os
import subprocess
import sys
import types

import pytest
from conftest import ROOT

from brightrun import quiet
from jobs.run import child_env

LOAD_FAILED = "Failed to load "
ENUM_NOTICE = "is an Enum subclass and is now natively supported by torch.compile"
# What a process that imports transformers or Axolotl does, plus one more warning on each of the two loggers.
IMPORT_TORCHAO = (
    "import logging, torchao; "
    "logging.getLogger('torchao').warning('another torchao warning'); "
    "logging.getLogger('torch.utils._pytree').warning('another pytree warning')"
)


def record(name: str, msg: str, *args, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args or None, None)


def load_failed(path: str) -> str:
    return f"Failed to load {path}: Could not load this library: {path}"


TORCHAO = "/venv/lib/python3.11/site-packages/torchao"
KernelPreference = enum.Enum("KernelPreference", "AUTO")
KernelPreference.__module__ = "torchao.quantization.quantize_.common.kernel_preference"
TheirOwn = enum.Enum("TheirOwn", "A")


@pytest.mark.parametrize("cuda", [None, "12.8"])
def test_the_filter_drops_exactly_the_two_lines(monkeypatch, cuda):
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(version=types.SimpleNamespace(cuda=cuda)))
    keep = quiet.HarmlessLines().filter
    # Built for Python 3.10: never loads on this Python, with or without CUDA.
    assert not keep(record("torchao", load_failed(f"{TORCHAO}/_C_mxfp8.cpython-310-x86_64-linux-gnu.so")))
    # A CUDA kernel: cannot load under torch's CPU build; under a CUDA build its failure is real and shows.
    assert keep(record("torchao", load_failed(f"{TORCHAO}/_C_cutlass_90a.abi3.so"))) == (cuda is not None)
    assert not keep(record("torch.utils._pytree", f"%s {ENUM_NOTICE} ...", KernelPreference))
    shown = [
        record("torchao", load_failed("/elsewhere/_C_other.abi3.so")),
        record("torchao", load_failed(f"{TORCHAO}/_C_mxfp8.cpython-310-x86_64-linux-gnu.so"), level=40),
        record("torchao", "Skipping import of cpp extensions due to incompatible torch version"),
        record("torch.utils._pytree", f"%s {ENUM_NOTICE} ...", TheirOwn),
        record("torch.utils._pytree", "%s is already registered as pytree node", KernelPreference),
        record("torchao.quantization", load_failed(f"{TORCHAO}/_C_mxfp8.cpython-310-x86_64-linux-gnu.so")),
    ]
    assert all(keep(r) for r in shown)


def test_importing_brightrun_installs_it_once():
    # conftest imported brightrun: this process has it, as each of ours does.
    for name in quiet.LOGGERS:
        quiet.quiet_third_party_logs()
        assert sum(isinstance(f, quiet.HarmlessLines) for f in logging.getLogger(name).filters) == 1


def test_child_env_puts_the_startup_folder_first_once():
    assert quiet.child_env({}) == {"PYTHONPATH": quiet.STARTUP}
    theirs = {"PYTHONPATH": f"/a{os.pathsep}/b"}
    once = quiet.child_env(theirs)
    assert once == {"PYTHONPATH": f"{quiet.STARTUP}{os.pathsep}/a{os.pathsep}/b"}
    assert quiet.child_env(once) == once
    assert os.path.isfile(os.path.join(quiet.STARTUP, "sitecustomize.py"))


def test_a_process_the_jobs_runner_starts_is_quiet_and_still_warns():
    """A bare `python -c` (it imports nothing of ours) under the environment jobs/run.py gives `axolotl
    preprocess` and `axolotl train`, beside the same process without it: the control shows the two lines."""
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    envs = {
        "jobs": base | child_env({"base_model": str(ROOT / "assets" / "tiny-llama")}, "sqlite://"),
        "bare": base,
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-c", IMPORT_TORCHAO],
            cwd="/",
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, env in envs.items()
    }
    out = {name: proc.communicate(timeout=300)[0] for name, proc in procs.items()}
    assert all(proc.returncode == 0 for proc in procs.values()), out
    for name in envs:
        assert "another torchao warning" in out[name] and "another pytree warning" in out[name], out[name]
    assert LOAD_FAILED in out["bare"] and ENUM_NOTICE in out["bare"], out["bare"]  # what a newcomer saw
    assert LOAD_FAILED not in out["jobs"] and ENUM_NOTICE not in out["jobs"], out["jobs"]


def test_startup_folders_chain_once_each(tmp_path):
    """Two _startup folders on PYTHONPATH (two checkouts, or one under a symlinked spelling) and another
    sitecustomize after them: each runs once, the last one too, and none calls the other again."""
    source = os.path.join(quiet.STARTUP, "sitecustomize.py")
    one, two, last = tmp_path / "one", tmp_path / "two", tmp_path / "last"
    for folder in (one, two, last):
        folder.mkdir()
    for folder in (one, two):
        text = open(source, encoding="utf-8").read()
        (folder / "sitecustomize.py").write_text(f"print('ran {folder.name}')\n" + text)
    (last / "sitecustomize.py").write_text("print('ran last')\n")
    (tmp_path / "link").symlink_to(two)
    path = os.pathsep.join(str(p) for p in (one, two, tmp_path / "link", last))
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.run([sys.executable, "-c", "pass"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "Error in sitecustomize" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == ["ran one", "ran two", "ran last"]
