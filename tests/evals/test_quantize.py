"""evals/quantize.py and its wiring: the base's precision by default as the run trained, the exact arguments
each back-end is handed for 4-bit, and the refusals (exit 2) before any model loads. No GPU, no model
weights: the 4-bit load itself needs a CUDA GPU and is not run here."""

from __future__ import annotations

import json
import sys
import types

import pytest
from conftest import TINY_MODEL_DIR
from fake_run import make_run, rendered, runs  # noqa: F401 (runs: a fixture)

from brightrun.errors import ConfigError
from evals import general, generate, quantize
from evals.__main__ import main

# Axolotl 0.19.0's QLoRA BitsAndBytesConfig (axolotl/loaders/model.py), dtypes by name.
AXOLOTL_QLORA = {
    "load_in_4bit": True,
    "llm_int8_threshold": 6.0,
    "llm_int8_has_fp16_weight": False,
    "bnb_4bit_compute_dtype": "bfloat16",
    "bnb_4bit_use_double_quant": True,
    "bnb_4bit_quant_type": "nf4",
    "bnb_4bit_quant_storage": "bfloat16",
}


def test_default_is_how_the_run_trained():
    qlora = quantize.choose(None, rendered("balanced-70b-qlora.yaml"))
    assert qlora["mode"] == "4bit" and "load_in_4bit true" in qlora["source"]
    assert qlora["bitsandbytes"] == AXOLOTL_QLORA
    full = quantize.choose(None, rendered("balanced-8b.yaml"))  # adapter: lora, load_in_4bit: false, bf16
    assert full == {"mode": "none", "source": "config.yaml: trained on the base at full precision"}
    # The flag overrides either way; Axolotl quantizes only `adapter: qlora` with load_in_4bit.
    assert quantize.choose("none", rendered("balanced-70b-qlora.yaml"))["mode"] == "none"
    assert quantize.choose("4bit", rendered("balanced-8b.yaml"))["bitsandbytes"] == AXOLOTL_QLORA
    assert quantize.choose(None, {"adapter": "lora", "load_in_4bit": True})["mode"] == "none"
    # A config that could not be read: full precision, said so.
    assert "unreadable" in quantize.choose(None, None)["source"]
    # The run's own bnb_config_kwargs go on top, as Axolotl applies them; fp16 training computes in fp16.
    tweaked = {"adapter": "qlora", "load_in_4bit": True, "fp16": True, "bnb_config_kwargs": {"x": 1}}
    assert quantize.choose(None, tweaked)["bitsandbytes"] == AXOLOTL_QLORA | {
        "bnb_4bit_compute_dtype": "float16",
        "x": 1,
    }
    with pytest.raises(ConfigError, match="--quantize '8bit': expected one of none, 4bit"):
        quantize.choose("8bit", {})


def test_transformers_gets_axolotls_bitsandbytes_config(tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM

    quant = quantize.choose("4bit", rendered("balanced-70b-qlora.yaml"))
    kwargs = quantize.transformers_kwargs(quant, "cuda", dtype="auto")
    assert set(kwargs) == {"quantization_config", "device_map", "dtype"}
    assert kwargs["device_map"] == "cuda" and kwargs["dtype"] == "bfloat16"
    bnb = kwargs["quantization_config"]
    assert bnb.load_in_4bit and not bnb.load_in_8bit
    assert (bnb.bnb_4bit_quant_type, bnb.bnb_4bit_use_double_quant) == ("nf4", True)
    assert bnb.bnb_4bit_compute_dtype == torch.bfloat16 and bnb.bnb_4bit_quant_storage == torch.bfloat16
    assert quantize.transformers_kwargs(quantize.NONE, "cpu", dtype="float32") == {"dtype": "float32"}

    # What from_pretrained receives through load_with_adapters, the loader of the answers and of lm-eval's
    # hf back-end (evals/general.py builds HFLM over it): stopped before any weight loads.
    seen = {}

    class Stop(Exception):
        pass

    def from_pretrained(name, **kw):
        seen.update(kw, name=name)
        raise Stop

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    with pytest.raises(Stop):
        generate.load_with_adapters("base", {"base": None, "adapter": tmp_path}, "cuda", quant)
    assert set(seen) == {"name", "quantization_config", "device_map", "dtype"}
    assert seen["quantization_config"].to_dict()["bnb_4bit_quant_type"] == "nf4"
    seen.clear()
    with pytest.raises(Stop):
        generate.load_with_adapters(
            "base", {"adapter": tmp_path}, "cpu", quantize.NONE, general.hf_dtype("cpu")
        )
    assert seen == {"name": "base", "dtype": "float32"}


def test_vllm_gets_bitsandbytes_with_lora(tmp_path):
    quant = quantize.choose("4bit", {})
    assert quantize.vllm_kwargs(quant) == {"quantization": "bitsandbytes", "load_format": "bitsandbytes"}
    assert quantize.vllm_kwargs(quantize.NONE) == {} and quantize.vllm_kwargs(None) == {}
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 12}))
    # lm-eval's VLLM: one engine, LoRA on (lora_local_path), a rank vLLM accepts, the base in 4-bit.
    assert general.vllm_args("base", {"base": None, "adapter": tmp_path}, quant) == {
        "pretrained": "base",
        "gpu_memory_utilization": 0.9,
        "seed": 0,
        "lora_local_path": str(tmp_path),
        "max_lora_rank": 16,
        "quantization": "bitsandbytes",
        "load_format": "bitsandbytes",
    }
    assert "quantization" not in general.vllm_args("base", {"adapter": tmp_path}, quantize.NONE)


def fake_vllm(seen: dict):
    """A stand-in for the vllm package (not installed here): records the LLM's arguments, answers "ok"."""
    out = types.SimpleNamespace(text=" ok ", token_ids=[1, 2], finish_reason="stop")

    class LLM:
        def __init__(self, **kw):
            seen["llm"] = kw

        def chat(self, conversations, params, **kw):
            seen.setdefault("lora", []).append(kw["lora_request"])
            return [types.SimpleNamespace(outputs=[out]) for _ in conversations]

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, lambda **kw: kw
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = lambda name, i, path: (name, i, path)
    return {"vllm": vllm, "vllm.lora": types.ModuleType("vllm.lora"), "vllm.lora.request": request}


def test_vllm_answers_engine_is_quantized_and_generation_json_says_so(tmp_path, monkeypatch, assets):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8}))
    seen: dict = {}
    for name, module in fake_vllm(seen).items():
        monkeypatch.setitem(sys.modules, name, module)
    prompts = [{"id": "p1", "messages": [{"role": "user", "content": "Hello"}], "reference": "Hi there"}]
    quant = quantize.choose(None, rendered("balanced-70b-qlora.yaml"))
    rows, info = generate.answer(prompts, str(TINY_MODEL_DIR), tmp_path, "vllm", 4, quantization=quant)
    llm = seen["llm"]
    assert (llm["quantization"], llm["load_format"]) == ("bitsandbytes", "bitsandbytes")
    assert llm["enable_lora"] is True and llm["max_lora_rank"] == 8 and llm["max_loras"] == 1
    assert seen["lora"] == [None, ("adapter", 2, str(tmp_path))]  # the base without a LoRA request
    assert info["quantization"] == quant and info["vllm_args"]["quantization"] == "bitsandbytes"
    assert [r["text"] for r in rows] == ["ok", "ok"]


def test_4bit_refusals_are_config_errors(monkeypatch):
    quant = quantize.choose("4bit", {})
    with pytest.raises(ConfigError, match="needs a CUDA GPU and --device is 'cpu'"):
        quantize.check(quant, "transformers", "cpu")
    with pytest.raises(ConfigError, match="torch sees no CUDA GPU"):  # this machine has none
        quantize.check(quant, "transformers", "cuda")
    quantize.check(quant, "vllm", "cpu")  # vLLM picks its GPU itself; bitsandbytes is installed here
    quantize.check(quantize.NONE, "transformers", "cpu")
    monkeypatch.setattr(quantize, "bitsandbytes_importable", lambda: False)
    with pytest.raises(ConfigError, match="needs bitsandbytes, which is not installed here"):
        quantize.check(quant, "vllm", "cuda")


def test_cli_qlora_run_on_cpu_exits_2_before_any_model(runs, capsys):  # noqa: F811
    run = make_run(runs, rendered("balanced-70b-qlora.yaml"))
    assert main(["--runs-dir", str(runs), "run", run, "--no-judge"]) == 2  # default: 4bit, as trained
    err = capsys.readouterr().err
    assert "error: --quantize 4bit (" in err and "load_in_4bit true" in err and "needs a CUDA GPU" in err
    assert "Traceback" not in err
    # --quantize none overrides: past the precision checks, to the next one (the run's data).
    assert main(["--runs-dir", str(runs), "run", run, "--quantize", "none"]) == 2
    assert "the run's converted data is gone" in capsys.readouterr().err
    (runs / run / "config.yaml").write_text("{unclosed")
    assert main(["--runs-dir", str(runs), "run", run]) == 2
    assert "config.yaml: the run's Axolotl config is unreadable" in capsys.readouterr().err
