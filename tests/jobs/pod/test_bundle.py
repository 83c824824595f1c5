"""jobs/pod/bundle.py without a pod: what goes on the volume for Axolotl's own image, and why."""

from __future__ import annotations

import importlib.metadata as md
import tomllib
import zipfile
from pathlib import Path

import yaml
from conftest import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from jobs.pod import bundle
from jobs.pod import volume as vol

# The image's Python (bundle.PYTHON) on Linux x86_64: which requirements apply there.
MARKERS = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "os_name": "posix",
}


def closure(roots: list[tuple[str, tuple[str, ...]]]) -> set[str]:
    """The distributions `roots` need, from the installed metadata, markers evaluated for the image."""
    seen, todo = set(), list(roots)
    while todo:
        name, extras = todo.pop()
        if (canonicalize_name(name), extras) in seen:
            continue
        seen.add((canonicalize_name(name), extras))
        for req in map(Requirement, md.requires(name) or []):
            wanted = [{**MARKERS, "extra": e} for e in (extras or ("",))]
            if req.marker is None or any(req.marker.evaluate(m) for m in wanted):
                todo.append((req.name, tuple(sorted(req.extras))))
    return {name for name, _ in seen}


def test_extra_is_what_our_dependencies_add_to_axolotls():
    """EXTRA = closure(pyproject's dependencies) - closure(axolotl), at the versions installed (our pins)."""
    deps = [
        Requirement(d)
        for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    ]
    ours = closure([(r.name, tuple(sorted(r.extras))) for r in deps])
    added = sorted(ours - closure([("axolotl", ())]))
    assert list(bundle.EXTRA) == [f"{name}=={md.version(name)}" for name in added]


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
