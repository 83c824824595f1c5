"""`python -m jobs serve-adapter REF ...` (`just serve`): one vLLM command for several versions and runs on one
base, each reachable by its model name. vLLM is not installed here and there is no GPU, so what is tested
is the command itself (its flags as vLLM's docs give them, see jobs/serve.py), the versions downloaded from
the store into the cache with their sha256s checked, and the refusals; never a running vLLM.
"""

from __future__ import annotations

import json
import shlex
import shutil

import pytest
from conftest import TINY_MODEL_DIR

from jobs import registry as jobs_registry
from jobs.runfolder import sha256_file as sha
from tests.versions.runs import adapter, adapter_b, make_run  # noqa: F401
from versions import registry
from versions.promote import promote


@pytest.fixture
def served(tmp_path, monkeypatch, capsys, adapter, adapter_b):  # noqa: F811
    """em@v1, em@v2 promoted (their run folders here too), run-c a run of its own; `serve(*refs)` runs
    `python -m jobs --runs-dir RUNS serve-adapter REFS` in this process: (exit code, stdout, stderr)."""
    from jobs.__main__ import main

    runs, url = tmp_path / "runs", f"sqlite:///{tmp_path / 'registry.db'}"
    env = {
        "DATABASE_URL": url,
        "ARTIFACT_STORE": str(tmp_path / "store"),
        "VERSIONS_CACHE": str(tmp_path / "cache"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for run, weights in (("run-a", adapter), ("run-b", adapter_b), ("run-c", adapter)):
        make_run(runs, url, run, weights)
    with (runs / "run-b" / "config.yaml").open("a") as f:
        f.write("sequence_len: 2048\n")
    engine = jobs_registry.engine(url)
    for run in ("run-a", "run-b"):
        promote(engine, runs, run, "em", store_url=env["ARTIFACT_STORE"], say=lambda _: None)

    def serve(*refs: str) -> tuple[int, str, str]:
        capsys.readouterr()
        rc = main(["--runs-dir", str(runs), "serve-adapter", *refs])
        out, err = capsys.readouterr()
        return rc, out, err

    serve.runs, serve.tmp, serve.engine = runs, tmp_path, engine
    return serve


def cached(served, version: int):
    v = registry.get_version(served.engine, "em", version)
    return served.tmp / "cache" / "em" / f"v{version}-{v.manifest_sha256[:16]}"


def test_one_command_serves_two_versions_and_a_run_on_one_base(served):
    (served.runs / "run-c" / "output" / "adapter_config.json").write_text(
        json.dumps({"r": 12, "target_modules": ["q_proj", "v_proj"]})
    )  # a rank between vLLM's sizes: the largest needed (12) rounds up to 16
    rc, out, err = served("em@v1", "em@v2", "run-c")
    assert rc == 0, err
    v1, v2 = cached(served, 1), cached(served, 2)
    assert shlex.split(out) == [
        "vllm", "serve", str(TINY_MODEL_DIR), "--enable-lora",
        "--lora-modules", f"em-v1={v1}/adapter", f"em-v2={v2}/adapter", f"brightrun-run-c={served.runs}/run-c/output",
        "--max-lora-rank", "16", "--max-loras", "3", "--max-model-len", "2048",
    ]  # fmt: skip
    assert '"model": one of "em-v1", "em-v2", "brightrun-run-c"' in err
    # The versions came from the store (their run folders are here too): what was promoted is what is served.
    for number, folder in ((1, v1), (2, v2)):
        v = registry.get_version(served.engine, "em", number)
        assert sha(folder / "adapter" / "adapter_model.safetensors") == v.adapter_sha256

    # A damaged cached copy is noticed and downloaded again, never served.
    (v2 / "adapter" / "adapter_model.safetensors").write_bytes(b"not the adapter")
    rc, out, err = served("em@v2")
    assert rc == 0 and "the cached copy is damaged (adapter/adapter_model.safetensors differs)" in err
    assert (
        sha(v2 / "adapter" / "adapter_model.safetensors")
        == registry.get_version(served.engine, "em", 2).adapter_sha256
    )
    assert "--max-loras 1" in out and "--max-lora-rank 8" in out and "--max-model-len 2048" in out


def test_refusals_name_the_versions_and_download_nothing(served):
    other = served.runs / "run-c" / "config.yaml"
    other.write_text(other.read_text().replace(f"base_model: {TINY_MODEL_DIR}", "base_model: other/base-8b"))
    rc, _, err = served("em@v1", "run-c")
    assert rc == 2 and "not all on the same" in err
    assert f"em@v1 on {TINY_MODEL_DIR}; run-c on other/base-8b" in err
    assert not (served.tmp / "cache").exists()  # refused before any download

    rc, _, err = served("em@v1", "em@v9")
    assert rc == 2 and "em@v9: no such version" in err
    rc, _, err = served("em@v1", "em@v1")
    assert rc == 2 and "em@v1: named twice" in err
    rc, _, err = served("no-such-run")
    assert rc == 2 and "no-such-run: no run folder with an adapter" in err

    bad = served.runs / "run-b" / "output" / "adapter_config.json"
    bad.write_text(
        json.dumps({"r": 8, "target_modules": ["q_proj", "embed_tokens"], "modules_to_save": ["lm_head"]})
    )
    rc, out, err = served("run-a", "run-b")
    assert rc == 2 and out == "" and "vLLM cannot serve: run-b: modules_to_save ['lm_head']" in err
    assert "run-b: target_modules ['embed_tokens']" in err and "Traceback" not in err

    # --exec where vLLM is not installed (here): said plainly, no traceback.
    assert shutil.which("vllm") is None, "this test would start a real vLLM"
    rc, _, err = served("run-a", "--exec")
    assert rc == 2 and "vllm is not installed here" in err
