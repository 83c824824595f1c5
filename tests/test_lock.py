"""The lock is the environment: pyproject.toml and uv.lock agree, the venv holds exactly the lock, and the
check that setup.sh runs fails on a changed pin, never on an upstream release (it reads no registry)."""

from __future__ import annotations

import importlib.metadata as md
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from conftest import ROOT
from packaging.utils import canonicalize_name

from jobs.pod import lockfile

UV = Path(sys.executable).parent / "uv"
# What setup.sh runs before it installs anything (offline: the lock against pyproject.toml alone).
CHECK = [str(UV), "lock", "--check", "--offline", "--quiet"]


def check(project: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CHECK, "--project", str(project)], capture_output=True, text=True, timeout=120)


def test_setup_runs_this_check():
    assert " ".join(CHECK[1:]) in (ROOT / "setup.sh").read_text("utf-8")


def test_the_committed_lock_matches_pyproject():
    result = check(ROOT)
    assert result.returncode == 0, result.stderr


def test_a_pin_changed_without_a_new_lock_fails_the_check(tmp_path):
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copyfile(ROOT / name, tmp_path / name)
    assert check(tmp_path).returncode == 0  # the copy as committed passes
    pyproject = tmp_path / "pyproject.toml"
    text = pyproject.read_text("utf-8")
    assert '"rich==15.0.0"' in text
    pyproject.write_text(text.replace('"rich==15.0.0"', '"rich==14.0.0"'), "utf-8")
    result = check(tmp_path)
    # Refused, and only because of the change (the same copy passed above). What uv says depends on its
    # cache: with the registry's metadata cached it names rich; on a machine whose cache holds only the
    # locked wheels (a fresh setup), offline resolution stops at the first package it cannot read.
    assert result.returncode != 0, result.stderr
    assert "rich" in result.stderr or "network was disabled" in result.stderr, result.stderr


def _locked() -> dict[str, str]:
    """The packages the lock installs here (our dependencies and the dev extra, Python 3.11, Linux)."""
    graph = lockfile.packages((ROOT / "uv.lock").read_text("utf-8"))
    here = {**lockfile.IMAGE, "python_version": "3.11", "python_full_version": "3.11.7"}
    project = graph[lockfile.PROJECT]
    roots = project["dependencies"] + project["optional-dependencies"]["dev"]
    names = lockfile.closure(graph, roots, here) | {lockfile.PROJECT}
    return {name: graph[name]["version"] for name in names}


def test_the_venv_holds_exactly_the_lock():
    """setup.sh's `uv sync --frozen`: every locked package at its version, and nothing else."""
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in md.distributions()}
    locked = _locked()
    assert len(locked) > 200
    assert {n: v for n, v in installed.items() if locked.get(n) != v} == {}
    assert {n: v for n, v in locked.items() if installed.get(n) != v} == {}


def test_the_build_backend_is_the_locked_setuptools():
    """The editable install and the pod's wheel are built by the setuptools the lock holds, not the newest."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    assert pyproject["build-system"]["requires"] == [f"setuptools=={_locked()['setuptools']}"]
