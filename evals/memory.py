"""Does an evaluation fit its GPU? The memory arithmetic of the base, its adapters and the KV cache.

Plain functions of a model's shapes (the model profiles' `architecture:` keys, or a config.json read by
`arch_from_hf_config`), so docs/evaluation.md ("70B on one 80 GB GPU"), its test and `evals run`'s refusal
use the same numbers. A model, not a measurement; each figure's source is beside it:
  weights      bf16: 2 bytes a parameter. 4-bit: the decoder's Linear layers in NF4 with double-quantized
               block scales, 4 + 8/64 + 32/(64*256) = 4.127 bits a parameter (QLoRA, Dettmers et al. 2023,
               section 3: 8-bit scales per 64 weights, an fp32 constant per 256 scales); bitsandbytes leaves
               the embeddings, norms and LM head unquantized (transformers' get_keys_to_not_convert keeps
               the output embedding; the input embedding is no Linear), so they stay at 2 bytes;
  adapters     r x (in + out) per targeted projection per layer (axolotl_configs/estimate.py lora_params),
               in fp32 under PEFT (PeftModel.from_pretrained upcasts bf16 adapters: autocast_adapter_dtype),
               in bf16 in vLLM's preallocated slots of max_lora_rank;
  KV cache     2 (K and V) x layers x KV heads x head dim x 2 bytes (bf16) per token, for every token a
               sequence holds (prompt and answer) times the sequences decoded together;
  activations  the prefill's working set of one layer, ~ tokens x (4 x hidden + 3 x intermediate) x 2 bytes
               (hidden states in and out, attention output, residual; the MLP's gate, up and their
               product); attention through SDPA / flash keeps no tokens-squared score matrix. An estimate;
  overhead     CUDA context and allocator slack, 1.5 GiB (axolotl_configs/estimate.py OVERHEAD_GB).
vLLM takes `gpu_memory_utilization` (0.9 by default: vllm EngineArgs) of the card for everything and
turns what the weights and its profiled activations leave into KV cache; it refuses to start unless that
holds at least one whole sequence (max_model_len), which is what its plan counts.
"""

from __future__ import annotations

from axolotl_configs.estimate import OVERHEAD_GB, lora_params
from brightrun.errors import ConfigError

GIB = 1024**3
NF4_BITS = 4 + 8 / 64 + 32 / (64 * 256)  # 4.126953125: the profiles' weights_bits 4.127
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
VLLM_UTILIZATION = 0.9  # vLLM's default gpu_memory_utilization (vllm/engine/arg_utils.py EngineArgs)
# Meta-Llama-3-70B-Instruct's config.json (hidden_size, num_hidden_layers, intermediate_size,
# num_attention_heads, num_key_value_heads, vocab_size, tie_word_embeddings): the model is gated, its
# config read through copies that name it as _name_or_path, e.g.
# huggingface.co/failspy/llama-3-70B-Instruct-abliterated/blob/main/config.json. The same shapes as
# axolotl_configs/models/70b-qlora.yaml's architecture.
LLAMA3_70B = {
    "layers": 80,
    "hidden": 8192,
    "intermediate": 28672,
    "heads": 64,
    "kv_heads": 8,
    "vocab": 128256,
    "tied_embeddings": False,
}


def arch_from_hf_config(cfg: dict) -> dict:
    """The shapes this module reads, from a transformers config.json (a Llama-style decoder)."""
    try:
        arch = {
            "layers": int(cfg["num_hidden_layers"]),
            "hidden": int(cfg["hidden_size"]),
            "intermediate": int(cfg["intermediate_size"]),
            "heads": int(cfg["num_attention_heads"]),
            "kv_heads": int(cfg.get("num_key_value_heads") or cfg["num_attention_heads"]),
            "vocab": int(cfg["vocab_size"]),
            "tied_embeddings": bool(cfg.get("tie_word_embeddings", False)),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"config.json: no decoder shape to plan memory with ({exc})") from None
    if cfg.get("head_dim"):
        arch["head_dim"] = int(cfg["head_dim"])
    return arch


def head_dim(arch: dict) -> int:
    return int(arch.get("head_dim") or arch["hidden"] // arch["heads"])


def linear_params(arch: dict) -> int:
    """The decoder layers' seven projections: what bitsandbytes quantizes."""
    h, i, kv = arch["hidden"], arch["intermediate"], arch["kv_heads"] * head_dim(arch)
    q_out = arch["heads"] * head_dim(arch)
    per_layer = h * q_out + 2 * h * kv + q_out * h + 3 * h * i
    return arch["layers"] * per_layer


def other_params(arch: dict) -> int:
    """Embeddings, LM head (unless tied) and RMSNorm weights (two a layer and a final one): left in bf16."""
    embed = arch["vocab"] * arch["hidden"]
    head = 0 if arch["tied_embeddings"] else embed
    norms = (2 * arch["layers"] + 1) * arch["hidden"]
    return embed + head + norms


def params(arch: dict) -> int:
    return linear_params(arch) + other_params(arch)


def weight_bytes(arch: dict, mode: str) -> float:
    if mode == "4bit":
        return linear_params(arch) * NF4_BITS / 8 + other_params(arch) * 2
    return params(arch) * 2.0


def kv_bytes_per_token(arch: dict, dtype_bytes: int = 2) -> int:
    return 2 * arch["layers"] * arch["kv_heads"] * head_dim(arch) * dtype_bytes


def activation_bytes(arch: dict, tokens: int) -> float:
    return tokens * (4 * arch["hidden"] + 3 * arch["intermediate"]) * 2.0


def plan(
    arch: dict,
    mode: str,
    *,
    gpu_gib: float,
    backend: str = "transformers",
    lora_rank: int = 16,
    lora_modules: tuple[str, ...] | list[str] = PROJECTIONS,
    adapters: int = 1,
    prompt_tokens: int = 4096,
    new_tokens: int = 1024,
    sequences: int = 8,
    utilization: float = VLLM_UTILIZATION,
) -> dict:
    """Each part in GiB and whether their sum fits. transformers: `sequences` prompts decoded together (the
    answers' batch), every adapter on the base at once in fp32; vllm: one sequence of prompt + answer
    tokens (the least it starts with), `adapters` LoRA slots of lora_rank in bf16, within utilization."""
    if mode not in ("none", "4bit"):
        raise ConfigError(f"memory plan for precision {mode!r}: expected none or 4bit")
    n_lora = lora_params(arch, lora_rank, list(lora_modules))
    if backend == "vllm":
        sequences, adapter_bytes, budget = 1, 2, gpu_gib * utilization
    else:
        adapter_bytes, budget = 4, gpu_gib
    tokens = sequences * (prompt_tokens + new_tokens)
    parts = {
        "weights": weight_bytes(arch, mode) / GIB,
        "adapters": adapters * n_lora * adapter_bytes / GIB,
        "KV cache": tokens * kv_bytes_per_token(arch) / GIB,
        "activations": activation_bytes(arch, sequences * prompt_tokens) / GIB,
        "CUDA context and slack": OVERHEAD_GB,
    }
    total = sum(parts.values())
    return {
        "mode": mode,
        "backend": backend,
        "parts_gib": {k: round(v, 2) for k, v in parts.items()},
        "total_gib": round(total, 2),
        "gpu_gib": round(gpu_gib, 2),
        "budget_gib": round(budget, 2),
        "fits": total <= budget,
        "left_gib": round(budget - total, 2),
        "assumed": {
            "params": params(arch),
            "lora_rank": lora_rank,
            "lora_params": n_lora,
            "adapters": adapters,
            "sequences": sequences,
            "tokens_per_sequence": prompt_tokens + new_tokens,
            "kv_bytes_per_token": kv_bytes_per_token(arch),
            "utilization": utilization if backend == "vllm" else 1.0,
        },
    }


def refuse_unless_fits(p: dict, where: str) -> None:
    """ConfigError (exit 2) for a plan over its budget, naming what to change."""
    if p["fits"]:
        return
    parts = " + ".join(f"{k} {v:.1f}" for k, v in p["parts_gib"].items())
    hint = (
        "evaluate with --quantize 4bit (what a QLoRA run trained on)"
        if p["mode"] == "none"
        else "use a GPU with more memory, or shorter answers (--max-new-tokens)"
    )
    raise ConfigError(
        f"{where}: the base in {'bf16' if p['mode'] == 'none' else '4-bit'} does not fit the GPU: {parts} = "
        f"{p['total_gib']:.1f} GiB > {p['budget_gib']:.1f} GiB available ({p['backend']}); {hint}"
    )


def describe(p: dict) -> str:
    """The plan as docs/evaluation.md shows it: one line a part, the total against the budget."""
    a = p["assumed"]
    precision = "bf16" if p["mode"] == "none" else "4-bit NF4"
    head = (
        f"{p['backend']}, base in {precision}, {a['params'] / 1e9:.2f}e9 parameters, "
        f"{a['sequences']} x {a['tokens_per_sequence']} tokens, LoRA r={a['lora_rank']} x {a['adapters']}"
    )
    lines = [head]
    lines += [f"  {k:<24}{v:>8.2f} GiB" for k, v in p["parts_gib"].items()]
    card = f"card {p['gpu_gib']:g} GiB" + (
        f" x gpu_memory_utilization {a['utilization']}" if p["backend"] == "vllm" else ""
    )
    left = p["left_gib"]
    verdict = f"fits, {left:.2f} GiB left" if p["fits"] else f"does NOT fit, {-left:.2f} GiB over"
    lines.append(f"  {'total':<24}{p['total_gib']:>8.2f} GiB of {p['budget_gib']:.2f} ({card}): {verdict}")
    return "\n".join(lines)


def llama3_70b_on_80gb() -> list[dict]:
    """The plans docs/evaluation.md shows: Llama 3 70B on one 80 GB card (the h100-pcie profile's
    gpu_memory_gb, counted in GiB as axolotl_configs/estimate.py does), rank 16 on all seven projections
    (the balanced preset), prompts up to the 70b-qlora profile's sequence_len 4096, answers up to 1024."""
    common = {"gpu_gib": 80, "lora_rank": 16, "prompt_tokens": 4096, "new_tokens": 1024}
    return [
        plan(LLAMA3_70B, "none", **common),
        plan(LLAMA3_70B, "4bit", **common),
        plan(LLAMA3_70B, "4bit", backend="vllm", **common),
    ]


if __name__ == "__main__":  # python -m evals.memory: the figures docs/evaluation.md shows
    print("\n\n".join(describe(p) for p in llama3_70b_on_80gb()))
