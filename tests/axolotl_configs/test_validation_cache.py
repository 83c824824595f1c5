"""validate.py's cache of successes: a hit imports nothing of Axolotl; a changed config, Axolotl version or
validator is a miss; a failure is never cached; an unreadable entry is a miss; `off` bypasses it."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from axolotl_configs import render, sweep, validate
from brightrun.errors import ConfigError

SMOKE = ROOT / "axolotl_configs" / "rendered" / "balanced-smoke.yaml"
HEAVY = ("axolotl", "torch", "transformers", "pydantic")


def smoke() -> dict:
    return yaml.safe_load(SMOKE.read_text("utf-8"))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "validated"
    monkeypatch.setenv(validate.CACHE_ENV, str(folder))
    return folder


@pytest.fixture
def runs(monkeypatch):
    """The names of Axolotl's checks as they run: the key check, then Axolotl's validator."""
    ran = []
    for name in ("unknown_keys", "axolotl_validate"):
        real = getattr(validate, name)

        def counted(cfg, real=real, name=name):
            ran.append(name)
            return real(cfg)

        monkeypatch.setattr(validate, name, counted)
    return ran


def entries(folder) -> list:
    return sorted(folder.glob("*.json")) if folder.exists() else []


def heavy_imports(importtime_stderr: str) -> list[str]:
    """The modules of Axolotl, torch, transformers or pydantic in `python -X importtime` output."""
    names = [line.rsplit("|", 1)[-1].strip() for line in importtime_stderr.splitlines() if "|" in line]
    return [n for n in names if n.split(".")[0] in HEAVY]


def cli_importtime(cache: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m axolotl_configs ARGS` in a fresh process, as `just` runs it, with its imports timed."""
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "axolotl_configs", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, validate.CACHE_ENV: str(cache)},
    )


def test_a_hit_imports_nothing_of_axolotl(cache, runs, sample_out):
    out = render.golden_path("balanced", "smoke")
    first = render.render("balanced", "smoke", str(sample_out), out_path=out)  # a miss: Axolotl validates
    assert runs == ["unknown_keys", "axolotl_validate"] and len(entries(cache)) == 1
    # The same render in a fresh process, as `just render` runs it: the cache answers, Axolotl stays unloaded.
    proc = cli_importtime(cache, "render", "balanced", "smoke", "--data", str(sample_out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == first.text
    assert heavy_imports(proc.stderr) == []
    probe = (
        "import sys, yaml; from axolotl_configs import validate; "
        f"validate.check(yaml.safe_load(open({str(SMOKE)!r}))); "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    )
    validate.check(smoke())
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120, env=os.environ
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr[-3000:]


def test_changed_config_axolotl_version_or_validator_is_a_miss(cache, runs, monkeypatch):
    validate.check(smoke())
    validate.check(smoke())
    assert runs.count("axolotl_validate") == 1  # the second was a hit
    changed = smoke() | {"learning_rate": 3e-4}
    validate.check(changed)
    assert runs.count("axolotl_validate") == 2
    validate.check(changed)
    assert runs.count("axolotl_validate") == 2

    real = validate.environment()
    monkeypatch.setattr(validate, "environment", lambda: real | {"axolotl": "0.0.0+other"})
    validate.check(smoke())  # another Axolotl: validated again
    assert runs.count("axolotl_validate") == 3
    monkeypatch.setattr(validate, "environment", lambda: real | {"validator": "another validate.py"})
    validate.check(smoke())  # another validate.py: validated again
    assert runs.count("axolotl_validate") == 4
    assert len(entries(cache)) == 4


def test_an_entry_recording_another_axolotl_version_is_a_miss(cache, runs):
    validate.check(smoke())
    (entry,) = entries(cache)
    recorded = json.loads(entry.read_text())
    entry.write_text(json.dumps(recorded | {"axolotl": "0.0.0+other"}))
    validate.check(smoke())
    assert runs.count("axolotl_validate") == 2
    assert json.loads(entry.read_text()) == recorded  # rewritten by the success


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"learning_rate": "abc"}, "learning_rate: Value error, could not convert string to float: 'abc'"),
        ({"lora_rr": 8}, "lora_rr: unknown key (did you mean lora_r?)"),
    ],
)
def test_a_failure_is_never_cached(cache, runs, override, message):
    errors = []
    for _ in range(2):
        with pytest.raises(ConfigError) as failed:
            validate.check(smoke() | override)
        errors.append(str(failed.value))
    assert message in errors[0] and errors[0] == errors[1]
    assert runs.count("unknown_keys") == 2  # Axolotl ran both times
    assert entries(cache) == []


@pytest.mark.parametrize(
    "content",
    [b"", b"{not json", b"\xff\xfe\x00", b"[]", b'{"key": "another", "axolotl": "0.19.0", "warnings": []}'],
)
def test_an_unreadable_entry_is_a_miss(cache, runs, content):
    validate.check(smoke())
    (entry,) = entries(cache)
    good = entry.read_bytes()
    entry.write_bytes(content)
    validate.check(smoke())
    assert runs.count("axolotl_validate") == 2
    assert entry.read_bytes() == good  # the success wrote it again
    validate.check(smoke())
    assert runs.count("axolotl_validate") == 2


def test_off_validates_every_time_and_writes_nothing(cache, runs, monkeypatch):
    monkeypatch.setenv(validate.CACHE_ENV, "off")
    validate.check(smoke())
    validate.check(smoke())
    assert runs.count("axolotl_validate") == 2 and entries(cache) == []


def test_axolotls_warnings_show_again_on_a_hit(cache, runs, caplog):
    cfg = smoke() | {"adam_beta1": 0.9, "optimizer": "sgd"}
    for _ in range(2):
        caplog.clear()
        validate.check(cfg)
        assert "adamw hyperparameters found, but no adamw optimizer set" in caplog.messages
    assert runs.count("axolotl_validate") == 1


def test_plugins_outside_axolotl_key_by_their_source():
    sources = validate.plugin_sources(
        {"plugins": ["axolotl.integrations.liger.LigerPlugin", "jobs.axolotl_plugin.RegistryPlugin"]}
    )
    plugin = (ROOT / "jobs" / "axolotl_plugin.py").read_bytes()
    assert sources == {"jobs.axolotl_plugin.RegistryPlugin": hashlib.sha256(plugin).hexdigest()}


def test_canonical_json_refuses_what_json_would_merge():
    assert validate.canonical({"b": [1, 1.0, True, None], "a": "x"}) == '{"a":"x","b":[1,1.0,true,null]}'
    for uncacheable in ({1: "x"}, {"when": datetime.date(2026, 1, 1)}, {"t": (1, 2)}):
        with pytest.raises(validate._NotJson):
            validate.canonical(uncacheable)


def test_a_sweep_validates_each_trial_once_and_then_not_at_all(cache, runs, sample_out, tmp_path):
    lr_x_rank = ROOT / "axolotl_configs" / "sweeps" / "lr-x-rank.yaml"
    first = sweep.expand("balanced", "smoke", lr_x_rank, tmp_path / "a", str(sample_out))
    assert runs.count("axolotl_validate") == len(first) == 6 and len(entries(cache)) == 6
    sweep.expand("balanced", "smoke", lr_x_rank, tmp_path / "b", str(sample_out))
    assert runs.count("axolotl_validate") == 6  # all six were hits
    out = ["--data", str(sample_out), "--out", str(tmp_path / "c")]
    proc = cli_importtime(cache, "sweep", "balanced", "smoke", str(lr_x_rank), *out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert heavy_imports(proc.stderr) == []
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == sorted(
        p.name for p in (tmp_path / "a").iterdir()
    )


def test_the_sweep_file_loaded_alone_is_axolotls_own(tmp_path):
    """sweep.axolotl_sweeps loads Axolotl's sweeps.py without the packages above it: the same trials, in the
    same seeded order, as `from axolotl.cli.utils.sweeps import generate_sweep_configs`."""
    spec = {
        "learning_rate": [1e-4, 2e-4, 3e-4],
        "lora_dropout": [0.0, 0.1],
        "_": [{"lora_r": 8}, {"lora_r": 16}],
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    probe = (
        "import json, sys; from axolotl_configs import sweep; "
        f"print(json.dumps(sweep.trials({str(tmp_path / 's.yaml')!r}))); print('axolotl' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    alone, imported = proc.stdout.splitlines()
    from axolotl.cli.utils.sweeps import generate_sweep_configs

    assert json.loads(alone) == generate_sweep_configs({}, spec)
    assert imported == "False"
