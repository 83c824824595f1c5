"""Verify on use (issue 28, item 6): every file of a version (adapter weights, adapter_config.json, the
tokenizer files) is checked against the version's manifest wherever it is used, not the weights alone:
a run folder whose adapter_config.json changed since the promotion is not used (the store's copy is), a
cached copy edited together with its manifest is downloaded again, and a store whose copy was changed is
refused by name."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from jobs import registry as jobs_registry
from tests.versions.runs import adapter, make_run  # noqa: F401 (fixtures)
from versions import registry, sides, store
from versions.promote import promote


@pytest.fixture
def version(tmp_path, monkeypatch, adapter):  # noqa: F811
    runs, url = tmp_path / "runs", f"sqlite:///{tmp_path / 'registry.db'}"
    monkeypatch.setenv("VERSIONS_CACHE", str(tmp_path / "cache"))
    make_run(runs, url, "run-a", adapter)
    engine = jobs_registry.engine(url)
    promote(engine, runs, "run-a", "em", store_url=str(tmp_path / "store"), say=lambda _: None)
    return registry.get_version(engine, "em", 1), runs, tmp_path / "store" / "models" / "em" / "v1"


def test_a_changed_adapter_config_is_never_used(version):
    v, runs, stored = version
    said: list[str] = []
    assert sides.local_copy(v, runs, say=said.append) == (runs / "run-a", False)  # all as promoted

    config = runs / "run-a" / "output" / "adapter_config.json"
    original = config.read_bytes()
    config.write_text(json.dumps({**json.loads(original), "r": 64}))  # the weights untouched
    folder, downloaded = sides.local_copy(v, runs, say=said.append)
    assert downloaded and folder == sides.cache_dir(v)
    assert (folder / "adapter" / "adapter_config.json").read_bytes() == original
    assert any("adapter/adapter_config.json differ" in s for s in said)

    # A cached copy changed together with its manifest (sha256 rewritten to match) is still caught: the
    # manifest's own sha256 is the registry's.
    cached_config = folder / "adapter" / "adapter_config.json"
    cached_config.write_text(json.dumps({**json.loads(original), "lora_alpha": 1}))
    manifest = json.loads((folder / store.MANIFEST).read_text())
    manifest["files"]["adapter/adapter_config.json"]["sha256"] = hashlib.sha256(
        cached_config.read_bytes()
    ).hexdigest()
    (folder / store.MANIFEST).write_text(json.dumps(manifest))
    said.clear()
    assert sides.cached(v, say=said.append) == folder
    assert cached_config.read_bytes() == original and "its manifest is not the version's" in said[0]

    # The store's own copy changed: nothing to use, refused by name.
    (stored / "adapter" / "adapter_config.json").write_text("{}")
    config.write_bytes(original.replace(b"}", b" }", 1))  # the run folder differs too
    shutil.rmtree(folder)
    with pytest.raises(store.Corrupt, match="adapter/adapter_config.json: sha256 mismatch"):
        sides.local_copy(v, runs, say=said.append)
    assert not folder.exists()  # nothing half-downloaded left to pass for the version
