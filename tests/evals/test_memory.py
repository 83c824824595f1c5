"""evals/memory.py: Llama 3 70B on one 80 GB GPU, every figure against hand arithmetic; the docs show the
module's own output; `evals run` refuses a plan over the GPU (exit 2) before any model loads."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import ROOT
from fake_run import make_run, rendered, runs  # noqa: F401 (runs: a fixture)

from brightrun.errors import ConfigError
from evals import memory
from evals.__main__ import main

GIB = 2**30
# Meta-Llama-3-70B-Instruct's config.json, the keys read (evals/memory.py says where it was read).
CONFIG_70B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_attention_heads": 64,
    "num_hidden_layers": 80,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
}


def test_llama3_70b_by_hand():
    arch = memory.LLAMA3_70B
    assert memory.arch_from_hf_config(CONFIG_70B) == arch
    # Per layer: q and o 8192 x 8192, k and v 8192 x 1024 (8 KV heads x 128), gate, up, down 8192 x 28672.
    per_layer = 2 * 8192 * 8192 + 2 * 8192 * 1024 + 3 * 8192 * 28672
    assert per_layer == 855_638_016 and memory.linear_params(arch) == 80 * per_layer == 68_451_041_280
    # Embeddings and LM head (untied) 128256 x 8192 each, RMSNorms 2 a layer and a final one.
    assert memory.other_params(arch) == 2 * 128256 * 8192 + 161 * 8192 == 2_102_665_216
    assert memory.params(arch) == 70_553_706_496  # the 70b-qlora profile's 70.55e9
    profile = yaml.safe_load((ROOT / "axolotl_configs" / "models" / "70b-qlora.yaml").read_text())
    assert round(memory.params(arch) / 1e9, 2) == float(profile["architecture"]["params"]) / 1e9
    assert {k: v for k, v in profile["architecture"].items() if k != "params"} == arch
    # bf16: 2 bytes a parameter, 141.1 GB (the profile's download_gb), 131.4 GiB: more than the card.
    assert memory.weight_bytes(arch, "none") == 2 * 70_553_706_496 == 141_107_412_992
    # NF4 + double quantization: 4 + 8/64 + 32/(64 x 256) = 4.126953125 bits; the rest stays bf16.
    assert memory.NF4_BITS == 4.126953125
    assert memory.weight_bytes(arch, "4bit") == 68_451_041_280 * 4.126953125 / 8 + 2 * 2_102_665_216
    assert memory.weight_bytes(arch, "4bit") == 35_311_779_840 + 4_205_330_432 == 39_517_110_272
    # KV cache: K and V x 80 layers x 8 KV heads x 128 x 2 bytes = 327,680 bytes (0.3125 MiB) a token.
    assert memory.kv_bytes_per_token(arch) == 2 * 80 * 8 * 128 * 2 == 327_680


def test_70b_on_80gb_bf16_refused_4bit_fits():
    bf16, nf4, vllm = memory.llama3_70b_on_80gb()
    # LoRA r=16 on the seven projections: 16 x 80 x (16384 + 9216 + 9216 + 16384 + 3 x 36864) parameters.
    assert nf4["assumed"]["lora_params"] == 16 * 80 * 161_792 == 207_093_760
    assert nf4["parts_gib"] == {
        "weights": round(39_517_110_272 / GIB, 2),  # 36.80
        "adapters": round(207_093_760 * 4 / GIB, 2),  # fp32 under PEFT: 0.77
        "KV cache": round(8 * 5120 * 327_680 / GIB, 2),  # 8 answers of 4096 + 1024 tokens: 12.50
        "activations": round(8 * 4096 * (4 * 8192 + 3 * 28672) * 2 / GIB, 2),  # 7.25
        "CUDA context and slack": 1.5,
    }
    assert nf4["fits"] and nf4["total_gib"] == 58.82 and nf4["left_gib"] == 21.18
    assert not bf16["fits"] and bf16["parts_gib"]["weights"] == 131.42 and bf16["total_gib"] == 153.44
    # vLLM: within 0.9 of the card, one sequence of KV at least, adapter slots in bf16.
    assert vllm["budget_gib"] == 72.0 and vllm["parts_gib"]["KV cache"] == round(5120 * 327_680 / GIB, 2)
    assert vllm["parts_gib"]["adapters"] == round(207_093_760 * 2 / GIB, 2) and vllm["fits"]
    memory.refuse_unless_fits(nf4, "here")
    with pytest.raises(
        ConfigError, match=r"base in bf16 does not fit the GPU: weights 131\.4 .* 153\.4 GiB > 80\.0"
    ):
        memory.refuse_unless_fits(bf16, "here")


def test_docs_show_the_modules_own_figures():
    docs = (ROOT / "docs" / "evaluation.md").read_text()
    for p in memory.llama3_70b_on_80gb():
        assert memory.describe(p) in docs


def test_cli_refuses_a_plan_over_the_gpu(runs, tmp_path, monkeypatch, capsys):  # noqa: F811
    import torch

    from evals import run as run_mod

    base = tmp_path / "llama-3-70b-shape"  # config.json only: the plan reads shapes, no weights
    base.mkdir()
    (base / "config.json").write_text(json.dumps(CONFIG_70B))
    run = make_run(runs, rendered("balanced-70b-qlora.yaml"), base_model=str(base))
    monkeypatch.setattr(run_mod, "gpu_gib", lambda opts: 80.0)  # as on an 80 GB card
    args = ["--runs-dir", str(runs), "run", run, "--device", "cuda"]
    assert main([*args, "--quantize", "none"]) == 2
    err = capsys.readouterr().err
    assert "the base in bf16 does not fit the GPU" in err and "evaluate with --quantize 4bit" in err
    # 4-bit (the run's default) fits: past the plan, to the next check (the run's data).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert main(args) == 2
    err = capsys.readouterr().err
    # 58.82 GiB of the docs' plan less its seven-projection adapter (0.77) plus this one's q_proj only
    # (16 x 80 x 16384 x 4 bytes = 0.08): 58.1.
    assert "memory plan: 58.1 of 80.0 GiB (4bit)" in err and "the run's converted data is gone" in err
