"""Answers of the base model and the adapter to the same held-out prompts: one format, two back-ends.

Both back-ends decode greedily (the same answer every run, so base and adapter differ only by the adapter),
render each prompt with the chat template of the base model's tokenizer, stop on the same token ids, and
allow the same number of new tokens: by default each answer runs to the model's own end of turn, at most
CAP tokens, a bound on runaways and not a length target (issue 27: a limit near the references' length cut
answers short, and a cut answer loses on "helpful"). The rule is stated in generation.json, with each
side's mean length and how many answers the cap cut.

- `transformers` (CPU, or one GPU): the base model is loaded once and the adapter put on it with PEFT; the
  base answers come from the same model under `disable_adapter()`. Prompts go in batches, left-padded
  (the attention mask and the position ids it implies keep each row's answer what it would be alone:
  tests/evals/test_generate.py compares batched with one-by-one).
- `vllm` (GPU): one engine with LoRA enabled answers every prompt in one batched `LLM.chat` call without a
  LoRARequest (base) and one with it (adapter), with `SamplingParams(temperature=0)`. vLLM is imported only
  when chosen; it is not installed on the CPU machines, so that path is written against vLLM's API
  (vllm/entrypoints/llm.py `LLM.chat`, vllm/lora/request.py `LoRARequest`) and not run by the tests.

Either back-end loads the base at full precision or in 4-bit (`quantization`, evals/quantize.py: by default
as the run trained, so a QLoRA adapter is judged on the quantized base it learned on); generation.json
says which.
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from pathlib import Path

from brightrun.errors import ConfigError
from evals import quantize

BACKENDS = ("transformers", "vllm")
# ~4x the longest consultant turn in the customer's data (~250 tokens): generous for a whole answer, a
# bound for one that never stops.
CAP = 1024
# Tokens that end an assistant turn in the chat templates we train with (Llama 3's <|eot_id|>, ChatML's
# <|im_end|>). A base (not instruct) model's generation_config stops only on end-of-text, while the
# template, and so the adapter, ends a turn with these: without them the adapter would run on past its answer.
END_OF_TURN = ("<|eot_id|>", "<|im_end|>")
# Prompts per generate call (transformers): evals/run.py's memory plan counts this many sequences at once.
BATCH = 8
# vLLM accepts only these LoRA ranks for max_lora_rank (vllm/config/lora.py, MaxLoRARanks).
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_lora_rank(rank: int) -> int:
    """The max_lora_rank (--max-lora-rank) for adapters up to this rank: the smallest vLLM accepts; a rank
    above them all is returned as is, for vLLM to refuse by its own words (jobs/serve.py refuses it first)."""
    return next((r for r in VLLM_RANKS if r >= rank), rank)


def answer(
    prompts: list[dict],
    base_model: str,
    adapter_dir: Path,
    backend: str = "transformers",
    max_new_tokens: int | None = None,
    device: str = "cpu",
    *,
    cap: int = CAP,
    batch_size: int = BATCH,
    vllm_args: dict | None = None,
    sides: dict[str, Path | None] | None = None,
    quantization: dict | None = None,
) -> tuple[list[dict], dict]:
    """answers.jsonl rows (base and adapter for every prompt, greedy) and generation.json.
    transformers: base loaded once, PeftModel on it, base answers under `disable_adapter()`.
    vllm: one LLM(enable_lora=True), base = no LoRARequest, adapter = LoRARequest, batched (import only
    when chosen; not testable here, written against vLLM's documented API).
    batch_size: prompts per generate call (transformers). vllm_args: more `vllm.LLM` arguments, e.g.
    {"tensor_parallel_size": 2} or {"quantization": "fp8"} for a 70B base on its GPUs.
    sides: the answer sets, name -> adapter folder (None: the base model alone), in the order they are
    generated; default {"base": None, "adapter": adapter_dir}. The A/B between versions passes
    {"A": folder_a, "B": folder_b}: one base in memory, both adapters on it.
    quantization: the base's precision, evals/quantize.py's choose() (None: full precision)."""
    if backend not in BACKENDS:
        raise ConfigError(f"generation back-end {backend!r}: expected one of {', '.join(BACKENDS)}")
    if not prompts:
        raise ConfigError("no prompts to answer")
    adapter_dir = Path(adapter_dir)
    sides = {"base": None, "adapter": adapter_dir} if sides is None else sides
    sides = {name: Path(folder) if folder is not None else None for name, folder in sides.items()}
    for folder in (f for f in sides.values() if f is not None):
        if not (folder / "adapter_config.json").is_file():
            raise ConfigError(f"{folder}: no adapter_config.json (not a PEFT adapter folder)")
    if backend == "vllm":
        vllm_api = _import_vllm()  # before any model loads, so a missing vLLM fails at once
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if not tokenizer.chat_template:
        raise ConfigError(f"{base_model}: its tokenizer has no chat template to render the prompts with")
    limit, rule = new_token_limit(tokenizer, [p["reference"] for p in prompts], max_new_tokens, cap)
    stops = stop_ids(tokenizer, base_model)
    info = {
        "backend": backend,
        "model": str(base_model),
        "adapter": str(adapter_dir),
        "sides": {name: str(f) if f else None for name, f in sides.items()},
        "device": "cuda" if backend == "vllm" else device,
        "prompts": len(prompts),
        "decoding": {"greedy": True, "temperature": 0, "stop_token_ids": stops},
        "chat_template": "the base model's tokenizer",
        "max_new_tokens": limit,
        "max_new_tokens_rule": rule,
        "quantization": quantization or quantize.NONE,
    }
    if backend == "vllm":
        # 4-bit: quantization="bitsandbytes" beside enable_lora (quantize.py says where vLLM documents it);
        # vllm_args given by the caller win.
        engine_args = {**quantize.vllm_kwargs(quantization), **(vllm_args or {})}
        texts, models = _vllm(vllm_api, prompts, base_model, sides, tokenizer, limit, stops, engine_args)
        info["vllm_args"] = engine_args
    else:
        model = load_with_adapters(base_model, sides, device, quantization)
        texts, models = _transformers(prompts, model, sides, tokenizer, limit, stops, batch_size)
        info["batch_size"] = batch_size
        del model
    release()
    info["models"] = models
    rows = [{"id": p["id"], "model": name, **texts[name][i]} for name in sides for i, p in enumerate(prompts)]
    return rows, info


def release() -> None:
    """Free the answers' model before lm-eval loads its own: a 4-bit 70B held twice (2 x ~37 GiB) does not
    fit one 80 GB GPU. The model is unreferenced by now; a collection frees what cycles keep (accelerate's
    hooks, vLLM's engine client), and empty_cache hands torch's cached blocks back to the driver."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def new_token_limit(tokenizer, references: list[str], given: int | None, cap: int) -> tuple[int, str]:
    """The max new tokens and the rule that gave it, as generation.json states it."""
    if given is not None:
        if given < 1:
            raise ConfigError(f"max_new_tokens must be at least 1 (got {given})")
        return given, f"given: {given}"
    longest = max(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in references)
    return cap, (
        f"to the model's own end of turn, at most {cap} new tokens (a bound on runaways; the longest "
        f"reference is {longest} tokens, base tokenizer)"
    )


def stop_ids(tokenizer, base_model: str) -> list[int]:
    from transformers import GenerationConfig

    ids = set()
    try:
        eos = GenerationConfig.from_pretrained(base_model).eos_token_id
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    except OSError:  # a model folder without generation_config.json
        pass
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in END_OF_TURN if t in vocab)
    return sorted(ids)


def _rendered(tokenizer, prompt: dict) -> list[int]:
    # Rendered to text, then encoded without special tokens, the way vLLM's LLM.chat does it: the template
    # already holds the begin-of-text token, and a second one would make the two back-ends differ.
    text = tokenizer.apply_chat_template(prompt["messages"], tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def load_with_adapters(base_model, sides: dict, device: str, quantization: dict | None = None, dtype="auto"):
    """The base loaded once (full precision, or 4-bit placed on its GPU as it loads: quantize.py) with every
    side's adapter on it, by the side's name (PEFT's multi-adapter API: load_adapter, then set_adapter
    picks the active one; disable_adapter() is the plain base). lm-eval's hf back-end uses it too."""
    from transformers import AutoModelForCausalLM

    kwargs = quantize.transformers_kwargs(quantization, device, dtype)
    base = AutoModelForCausalLM.from_pretrained(base_model, **kwargs)
    if not quantize.places_itself(kwargs):
        base = base.to(device)
    from peft import PeftModel  # after the base: a failed load does not wait for PEFT's import (seconds)

    adapters = [(name, Path(folder)) for name, folder in sides.items() if folder is not None]
    model = PeftModel.from_pretrained(base, str(adapters[0][1]), adapter_name=adapters[0][0])
    for name, folder in adapters[1:]:
        model.load_adapter(str(folder), adapter_name=name)
    model.eval()
    return model


def side(model, name: str, folder) -> object:
    """A context in which `model` (load_with_adapters) is that side: the plain base, or its adapter."""
    if folder is None:
        return model.disable_adapter()
    model.set_adapter(name)
    return nullcontext()


def _transformers(prompts, model, sides, tokenizer, limit, stops, batch_size):
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    encoded = [_rendered(tokenizer, p) for p in prompts]
    # Longest first: a batch holds prompts of similar length (little padding), and an out-of-memory
    # error comes with the first batch, not the last.
    order = sorted(range(len(prompts)), key=lambda i: (-len(encoded[i]), i))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    def run_all() -> tuple[list[dict], dict]:
        out: list[dict | None] = [None] * len(prompts)
        start = time.perf_counter()
        for batch in batches:
            width = max(len(encoded[i]) for i in batch)
            ids = [[pad] * (width - len(encoded[i])) + encoded[i] for i in batch]
            mask = [[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in batch]
            with torch.no_grad():
                gen = model.generate(
                    input_ids=torch.tensor(ids, device=model.device),
                    attention_mask=torch.tensor(mask, device=model.device),
                    max_new_tokens=limit,
                    do_sample=False,
                    eos_token_id=stops,
                    pad_token_id=pad,
                )
            for row, i in zip(gen[:, width:].tolist(), batch, strict=True):
                out[i] = _decoded(tokenizer, row, stops, limit)
        seconds = time.perf_counter() - start
        return out, _speed(out, seconds)

    texts, speeds = {}, {}
    for name, folder in sides.items():
        with side(model, name, folder):
            texts[name], speeds[name] = run_all()
    return texts, speeds


def _decoded(tokenizer, row: list[int], stops: list[int], limit: int) -> dict:
    """One generated row: the text up to the first stop token (rows of a batch end padded after it)."""
    end = next((k for k, t in enumerate(row) if t in stops), None)
    kept = row if end is None else row[:end]
    return {
        "text": tokenizer.decode(kept, skip_special_tokens=True).strip(),
        "new_tokens": len(kept) + (end is not None),  # the stop token was generated too
        "finish_reason": "stop" if end is not None else "length",
    }


def _speed(rows: list[dict], seconds: float) -> dict:
    """One side's answers: tokens, speed, mean length, and how many the cap cut short (issue 27: a cut
    answer loses on "helpful", so the count is shown, never hidden)."""
    tokens = sum(r["new_tokens"] for r in rows)
    return {
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 2),
        "mean_new_tokens": round(tokens / len(rows), 1) if rows else None,
        "truncated": sum(r["finish_reason"] == "length" for r in rows),
    }


def _import_vllm():
    try:
        import vllm
        from vllm.lora.request import LoRARequest
    except ImportError as exc:
        raise ConfigError(
            f"the vllm generation back-end needs vLLM, which is not installed here ({exc}); it runs on a GPU "
            "machine (pip install vllm), or choose --backend transformers"
        ) from None
    return vllm, LoRARequest


def _vllm(vllm_api, prompts, base_model, sides, tokenizer, limit, stops, vllm_args):
    vllm, LoRARequest = vllm_api
    folders = [f for f in sides.values() if f is not None]
    rank = max(json.loads((f / "adapter_config.json").read_text())["r"] for f in folders)
    longest = max(len(_rendered(tokenizer, p)) for p in prompts)
    llm = vllm.LLM(
        model=str(base_model),
        enable_lora=True,
        max_loras=len(folders),
        max_lora_rank=vllm_lora_rank(rank),
        # The longest prompt and its answer, not the model's 128k context: the KV cache a 70B leaves room
        # for on its GPUs must hold max_model_len, or the engine refuses to start.
        max_model_len=longest + limit,
        seed=0,
        **(vllm_args or {}),
    )
    params = vllm.SamplingParams(temperature=0, max_tokens=limit, stop_token_ids=stops)
    conversations = [p["messages"] for p in prompts]
    requests = {
        name: LoRARequest(name, i, str(folder)) if folder is not None else None
        for i, (name, folder) in enumerate(sides.items(), 1)
    }
    texts, models = {}, {}
    for name, request in requests.items():
        start = time.perf_counter()
        outputs = llm.chat(
            conversations, params, use_tqdm=False, lora_request=request, chat_template=tokenizer.chat_template
        )
        seconds = time.perf_counter() - start
        texts[name] = [
            {
                "text": o.outputs[0].text.strip(),
                "new_tokens": len(o.outputs[0].token_ids),
                "finish_reason": "length" if o.outputs[0].finish_reason == "length" else "stop",
            }
            for o in outputs
        ]
        models[name] = _speed(texts[name], seconds)
    return texts, models
