"""A real PEFT LoRA adapter for the evaluation tests, made on the spot (nothing committed)."""

from __future__ import annotations


def make_adapter(base: str, out):
    """A real LoRA adapter with random A and B (init_lora_weights=False), so it changes the outputs. The tiny
    random Llama answers every long prompt with blank lines; alpha 64 (scale 8) moves its greedy choice."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out)
    return out
