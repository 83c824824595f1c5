"""The base model's precision at evaluation: full (`none`) or 4-bit NF4 (`4bit`, bitsandbytes), as trained.

A QLoRA adapter was trained against the base quantized to NF4 (Axolotl: `adapter: qlora` with
`load_in_4bit: true`, what the 70b-qlora profile sets), so by default it is evaluated on that same
quantized base, and a run trained in bf16 on the base at full precision; `evals run --quantize` overrides
(issue 27: a 70B base in bf16, ~141 GB, does not fit one 80 GB GPU; in 4-bit it does: evals/memory.py).

What each back-end is handed is built here by plain functions, so the tests read the exact arguments:
- transformers: `from_pretrained(quantization_config=BitsAndBytesConfig(**bitsandbytes), device_map=DEVICE,
  dtype=compute dtype)`. The settings are Axolotl's own for QLoRA (axolotl/loaders/model.py,
  ModelLoader's `adapter == "qlora" and load_in_4bit` branch, Axolotl 0.19.0): NF4, double
  quantization, compute in the training dtype, storage bf16, and its `bnb_config_kwargs` on top.
  lm-eval's hf back-end gets the model built the same way (evals/general.py says why).
- vLLM: `quantization="bitsandbytes"`, vLLM's in-flight quantization, which serves LoRA adapters on the
  quantized base (vLLM's examples/offline_inference/lora_with_quantization_inference.py runs a QLoRA adapter
  so; docs.vllm.ai/en/latest/features/quantization/bnb/). vLLM picks NF4 with double quantization itself.
"""

from __future__ import annotations

import importlib.util

from brightrun.errors import ConfigError

MODES = ("none", "4bit")
NONE = {"mode": "none", "source": "full precision"}


def trained_in_4bit(config: dict | None) -> bool:
    """Axolotl quantizes the base to 4 bits only for `adapter: qlora` with `load_in_4bit: true` (the branch
    of axolotl/loaders/model.py that builds its BitsAndBytesConfig); `lora` with load_in_4bit does not."""
    return isinstance(config, dict) and config.get("adapter") == "qlora" and bool(config.get("load_in_4bit"))


def compute_dtype(config: dict | None) -> str:
    """The dtype the 4-bit layers compute in: Axolotl's torch_dtype (bf16 -> bfloat16, fp16 -> float16,
    else float32: normalize_config in axolotl/utils/config/__init__.py); bfloat16, the QLoRA paper's, when
    no config says."""
    if not isinstance(config, dict) or config.get("bf16") or config.get("bfloat16"):
        return "bfloat16"
    if config.get("fp16") or config.get("float16"):
        return "float16"
    return "float32"


def bitsandbytes_kwargs(config: dict | None) -> dict:
    """BitsAndBytesConfig's arguments, as Axolotl builds them for QLoRA (axolotl/loaders/model.py), with the
    run's own `bnb_config_kwargs` on top as Axolotl applies them. Dtypes as names: the dict is recorded
    as is in generation.json and general.json (BitsAndBytesConfig accepts the names)."""
    kwargs = {
        "load_in_4bit": True,
        "llm_int8_threshold": 6.0,
        "llm_int8_has_fp16_weight": False,
        "bnb_4bit_compute_dtype": compute_dtype(config),
        "bnb_4bit_use_double_quant": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_quant_storage": "bfloat16",
    }
    extra = config.get("bnb_config_kwargs") if isinstance(config, dict) else None
    return kwargs | dict(extra or {})


def choose(asked: str | None, config: dict | None, config_path: str = "config.yaml") -> dict:
    """{"mode", "source"[, "bitsandbytes"]}: the flag when given, else what the run trained with. A config
    that could not be read (None) means full precision, said in "source"."""
    if asked is not None and asked not in MODES:
        raise ConfigError(f"--quantize {asked!r}: expected one of {', '.join(MODES)}")
    if asked is not None:
        mode, source = asked, f"--quantize {asked}"
    elif not isinstance(config, dict):
        mode = "none"
        source = f"{config_path} unreadable: full precision (pass --quantize 4bit for a QLoRA run)"
    elif trained_in_4bit(config):
        mode, source = "4bit", f"{config_path}: adapter qlora, load_in_4bit true (trained on the 4-bit base)"
    else:
        mode, source = "none", f"{config_path}: trained on the base at full precision"
    out = {"mode": mode, "source": source}
    if mode == "4bit":
        out["bitsandbytes"] = bitsandbytes_kwargs(config if isinstance(config, dict) else None)
    return out


def bitsandbytes_importable() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def check(quant: dict, backend: str, device: str) -> None:
    """Refuse a 4-bit plan that cannot run here, before any model loads (ConfigError: exit 2)."""
    if quant["mode"] != "4bit":
        return
    if backend == "transformers" and not str(device).startswith("cuda"):
        raise ConfigError(
            f"--quantize 4bit ({quant['source']}) needs a CUDA GPU and --device is {device!r}: bitsandbytes "
            "4-bit is the GPU path for a base too big for full precision; pass --device cuda, or "
            "--quantize none for a small model on the CPU"
        )
    if not bitsandbytes_importable():
        raise ConfigError(
            f"--quantize 4bit ({quant['source']}) needs bitsandbytes, which is not installed here "
            "(pip install bitsandbytes on the GPU machine), or pass --quantize none"
        )
    if backend == "transformers":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"--quantize 4bit on --device {device}: torch sees no CUDA GPU on this machine "
                f"(torch {torch.__version__}); run it on the GPU machine, or pass --quantize none"
            )


def transformers_kwargs(quant: dict | None, device: str, dtype: str = "auto") -> dict:
    """`AutoModelForCausalLM.from_pretrained` arguments. Full precision: the dtype only (the caller moves
    the model to its device). 4-bit: the BitsAndBytesConfig and a device_map, since a quantized model is
    placed on its GPU as it loads (transformers refuses `.to()` on some bitsandbytes versions); the
    layers left unquantized (embeddings, norms, LM head) in the compute dtype, as Axolotl trains them."""
    if quant is None or quant["mode"] == "none":
        return {"dtype": dtype}
    from transformers import BitsAndBytesConfig

    bnb = quant["bitsandbytes"]
    return {
        "quantization_config": BitsAndBytesConfig(**bnb),
        "device_map": device,
        "dtype": bnb["bnb_4bit_compute_dtype"],
    }


def places_itself(kwargs: dict) -> bool:
    """Whether from_pretrained put the model on its device already (a device_map), so no `.to(device)`."""
    return "device_map" in kwargs


def vllm_kwargs(quant: dict | None) -> dict:
    """`vllm.LLM` (and lm-eval's vllm model) arguments. `load_format` too: vLLM up to 0.6 needed both for
    in-flight bitsandbytes (docs.vllm.ai/en/v0.6.3.post1/quantization/bnb.html); later versions set it from
    `quantization` themselves (EngineArgs.create_load_config), so naming both works on either."""
    if quant is None or quant["mode"] == "none":
        return {}
    return {"quantization": "bitsandbytes", "load_format": "bitsandbytes"}
