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
from sqlalchemy import update
from sqlalchemy.orm import Session

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


def test_the_70b_plan_for_one_h100_fits_by_its_own_arithmetic_and_bf16_is_refused():
    """Issue 28, item 2, by hand: 70.55e9 parameters in bf16 are 131.4 GiB, over one 80 GB card's 72 GiB
    (vLLM's 0.9); FP8 keeps 67.7 GiB of weights and leaves too little for 4 sequences of KV cache; NF4 4-bit
    fits. On 4 of them, bf16 split 4 ways fits, and is preferred."""
    from axolotl_configs.profiles import load
    from brightrun.errors import ConfigError
    from evals.memory import LLAMA3_70B, PROJECTIONS
    from versions import serving

    kw = {"adapters": 1, "rank": 16, "modules": list(PROJECTIONS), "max_model_len": 4096}
    plans = serving.candidates(LLAMA3_70B, load("hardware", "h100-pcie"), **kw)
    by = {p["precision"]: p for p in plans}
    assert [p["tensor_parallel"] for p in plans] == [1, 1, 1]  # one GPU: no tensor parallelism to try
    assert by["bf16"]["parts_gib"]["weights"] == round(70_553_706_496 * 2 / 2**30, 2) == 131.42
    assert by["bf16"]["budget_gib"] == 72.0 and not by["bf16"]["fits"]
    kv = 4 * 4096 * (2 * 80 * 8 * 128 * 2) / 2**30  # 4 sequences × 4096 tokens × 320 KiB
    assert by["4bit"]["parts_gib"]["KV cache"] == round(kv, 2) == 5.0
    assert not by["fp8"]["fits"] and by["4bit"]["fits"]
    chosen = serving.choose(plans)
    assert chosen["precision"] == "4bit" and sum(chosen["parts_gib"].values()) <= chosen["budget_gib"]
    with pytest.raises(ConfigError, match=r"does not fit in bf16 .* 139\.2 GiB a GPU of 72\.0"):
        serving.choose(plans, "bf16")
    four = serving.choose(serving.candidates(LLAMA3_70B, load("hardware", "h100-sxm-x4"), **kw))
    assert (four["precision"], four["tensor_parallel"]) == ("bf16", 4)
    with pytest.raises(ConfigError, match="has no GPU"):
        serving.candidates(LLAMA3_70B, load("hardware", "cpu"), **kw)


def test_a_plan_names_the_gpu_machines_paths_and_fetches_versions_from_the_store(served):
    rc, out, err = served("em@v1", "em@v2", "--hardware", "h100-pcie")
    assert rc == 0, err
    fetch_1, fetch_2, vllm = [shlex.split(line) for line in out.splitlines()]
    assert fetch_1 == ["python", "-m", "versions", "download", "em@v1", "--to", "/workspace/adapters/em-v1"]
    assert fetch_2[-1] == "/workspace/adapters/em-v2"
    assert vllm[:4] == ["VLLM_ALLOW_RUNTIME_LORA_UPDATING=True", "vllm", "serve", str(TINY_MODEL_DIR)]
    assert "em-v1=/workspace/adapters/em-v1/adapter" in vllm and "--max-loras" in vllm
    assert vllm[vllm.index("--tensor-parallel-size") + 1] == "1" and "bfloat16" in vllm  # a tiny base: bf16
    assert str(served.tmp) not in out  # nothing of this machine's paths
    assert "→ bf16 × tensor-parallel 1" in err and "fits, room for" in err

    # The 70B QLoRA version on one H100: 4-bit through bitsandbytes; bf16 asked: refused with the numbers.
    big = "meta-llama/Meta-Llama-3-70B-Instruct"
    config = served.runs / "run-c" / "config.yaml"
    config.write_text(config.read_text().replace(str(TINY_MODEL_DIR), big))
    with Session(served.engine) as s:  # the run's adapter row names its base: as a 70B run's would
        s.execute(update(jobs_registry.ModelArtifact).where(jobs_registry.ModelArtifact.job_id == "run-c")
                  .values(base_model=big))  # fmt: skip
        s.commit()
    promote(served.engine, served.runs, "run-c", "big", say=lambda _: None)
    rc, out, err = served("big@v1", "--hardware", "h100-pcie")
    assert rc == 0, err
    assert "--quantization bitsandbytes" in out and "→ 4bit × tensor-parallel 1" in err
    rc, out, err = served("big@v1", "--hardware", "h100-pcie", "--precision", "bf16")
    assert rc == 2 and out == "" and "does not fit in bf16" in err and "weights 131.42" in err

    rc, _, err = served("em@v1", "run-c", "--hardware", "h100-pcie")
    assert rc == 2 and "run-c: --hardware plans serve versions (NAME@vN)" in err
