"""jobs/pod/bundle.py without a pod: what goes on the volume for Axolotl's own image, and why."""

from __future__ import annotations

import zipfile
from pathlib import Path

import yaml
from conftest import ROOT

from jobs.pod import bundle, lockfile
from jobs.pod import volume as vol


def test_extra_is_derived_from_the_lock():
    """The committed list is what uv.lock gives (`just lock` rewrites both): the pod installs the versions
    that were resolved and tested here, whatever the registry holds today."""
    assert lockfile.render((ROOT / "uv.lock").read_text()) == lockfile.LIST.read_text()
    assert bundle.EXTRA == lockfile.read() and len(bundle.EXTRA) > 10
    assert not any(r.split("==")[0] in ("torch", "axolotl", "transformers", "peft") for r in bundle.EXTRA)


LOCK = """
version = 1
[[package]]
name = "brightrun-lora"
version = "0.1.0"
source = { editable = "." }
dependencies = [
    { name = "axolotl" },
    { name = "psycopg", extra = ["binary"] },
    { name = "Shared_Dep" },
    { name = "colorama", marker = "sys_platform == 'win32'" },
    { name = "old-backport", marker = "python_full_version < '3.12'" },
]
[package.optional-dependencies]
dev = [{ name = "pytest" }]

[[package]]
name = "axolotl"
version = "0.19.0"
dependencies = [{ name = "shared-dep" }]

[[package]]
name = "shared-dep"
version = "1.0"
dependencies = [{ name = "only-on-312", marker = "python_full_version >= '3.12'" }]

[[package]]
name = "only-on-312"
version = "2.0"

[[package]]
name = "psycopg"
version = "3.3.9"
dependencies = [{ name = "tzdata", marker = "sys_platform == 'win32'" }]
[package.optional-dependencies]
binary = [{ name = "psycopg-binary" }]

[[package]]
name = "psycopg-binary"
version = "3.3.9"

[[package]]
name = "colorama"
version = "0.4.6"

[[package]]
name = "old-backport"
version = "1.0"

[[package]]
name = "pytest"
version = "9.2.0"
"""


def test_the_derivation_follows_extras_and_markers_and_leaves_axolotls_out():
    """Extras pull their optional dependencies; markers are the image's (Python 3.12, Linux): a Windows
    or pre-3.12 dependency is not installed there; what Axolotl already needs is on the image; the dev
    extra is not the pod's."""
    assert lockfile.extra(LOCK) == ["psycopg==3.3.9", "psycopg-binary==3.3.9"]
    graph = lockfile.packages(LOCK)
    assert lockfile.closure(graph, [{"name": "axolotl"}]) == {"axolotl", "shared-dep", "only-on-312"}
    cpu = {**lockfile.IMAGE, "python_version": "3.11", "python_full_version": "3.11.7"}
    assert "old-backport" in lockfile.closure(graph, graph["brightrun-lora"]["dependencies"], cpu)


def test_a_lock_missing_a_package_is_refused():
    broken = LOCK.replace('[[package]]\nname = "psycopg-binary"', '[[package]]\nname = "not-it"')
    try:
        lockfile.extra(broken)
    except lockfile.LockError as exc:
        assert str(exc) == "uv.lock: psycopg-binary is required but has no [[package]] entry"
    else:
        raise AssertionError("a dangling dependency passed")


def test_only_axolotls_image_installs_our_code():
    hw = yaml.safe_load((ROOT / "axolotl_configs" / "hardware" / "h100-pcie.yaml").read_text())
    assert bundle.installs_code(hw["image"])
    assert bundle.installs_code("axolotlai/axolotl-cloud:0.19.0")
    assert not bundle.installs_code("registry.example/brightrun-lora:0.1.0")
    assert not bundle.installs_code("axolotlai/axolotl-cloud-uv:0.19.0")


def test_the_wheel_runs_without_the_checkout(tmp_path):
    """Profiles, templates and migrations travel in it: a pod on Axolotl's image has no source tree."""
    names = zipfile.ZipFile(bundle.own_wheel(tmp_path)).namelist()
    for path in ("axolotl_configs/hardware", "axolotl_configs/models", "axolotl_configs/presets"):
        assert {p.name for p in (ROOT / path).glob("*.yaml")} <= {
            Path(n).name for n in names if n.startswith(path)
        }
    assert {p.name for p in (ROOT / "axolotl_configs" / "templates").glob("*.j2")} <= {
        Path(n).name for n in names
    }
    assert "jobs/migrations/versions/0001_initial.py" in names and "jobs/pod/bundle.py" in names
    assert "versions/store.py" in names  # the pod uploads a completed run to the artifact store


def test_publish_puts_the_bundle_up_once(tmp_path, monkeypatch):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "ftfy-6.3.1-py3-none-any.whl").write_bytes(b"not really a wheel")
    (extra / "ftfy-6.2.0-py3-none-any.whl").write_bytes(b"an older pin's: left out")
    monkeypatch.setenv("BRIGHTRUN_POD_WHEELS", str(extra))
    volume, said = vol.LocalVolume(tmp_path / "volume"), []
    key = bundle.publish(volume, say=said.append)
    assert key.startswith("brightrun/") and volume.has(f"{key}/done") and volume.has(f"{key}/entrypoint.sh")
    assert volume.files(f"{key}/wheels") == [
        "brightrun_lora-0.1.0-py3-none-any.whl",
        "ftfy-6.3.1-py3-none-any.whl",
    ]
    assert bundle.publish(volume, say=said.append) == key  # the same code: nothing sent again
    assert said[-1] == f"bundle: already on {volume} at {key}/"
