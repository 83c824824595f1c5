"""Random-weight Llama 3 models of the real shapes, built on the benchmark machine (nothing can be
downloaded there). Weights do not change speed or memory; shapes do.

Shapes from Meta's Llama 3 config.json files (8B and 70B Instruct): vocab 128256, rope_theta 500000,
RMSNorm eps 1e-5, grouped-query attention with 8 KV heads, untied embeddings.
"""

from __future__ import annotations

import shutil
from pathlib import Path

SHAPES = {
    "8b": {
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
    },
    "70b": {
        "hidden_size": 8192,
        "intermediate_size": 28672,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
    },
}
COMMON = {
    "vocab_size": 128256,
    "num_key_value_heads": 8,
    "max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "bos_token_id": 128000,
    "eos_token_id": 128009,
}


def config(shape: str, layers: int | None = None):
    from transformers import LlamaConfig

    values = SHAPES[shape] | COMMON
    if layers is not None:
        values["num_hidden_layers"] = layers
    return LlamaConfig(**values)


def parameters(shape: str, layers: int | None = None) -> int:
    """Parameter count from the shape alone (no weights built)."""
    c = config(shape, layers)
    h, i, v = c.hidden_size, c.intermediate_size, c.vocab_size
    kv = c.num_key_value_heads * (h // c.num_attention_heads)
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * i + 2 * h
    return c.num_hidden_layers * per_layer + 2 * v * h + h


def build(
    shape: str, out: Path, tokenizer_dir: Path, layers: int | None = None, device: str = "cuda"
) -> Path:
    """Save a bf16 random-weight model (and the Llama 3 tokenizer beside it) to `out`; reused if there."""
    import torch
    from transformers import LlamaForCausalLM

    if (out / "config.json").is_file():
        return out
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config(shape, layers), torch_dtype=torch.bfloat16)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    for f in tokenizer_dir.iterdir():
        if f.is_file():
            shutil.copy(f, tmp / f.name)
    tmp.rename(out)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return out
