"""Held-out results of a run: base model vs adapter on the same val.jsonl, and side-by-side samples.

Right after training this runs inside the training process (jobs/axolotl_plugin.py), on the model
that is already loaded, quantized and on its device: the base scores come from the same model with
the adapter switched off, so a 70B run is not loaded a second time. `just eval RUN` does the same
out of process, loading the base model and the saved adapter again.

The val lines are tokenized and masked by Axolotl's own chat_template strategy (the code that prepared
them for training), so "loss" means the same tokens in training, here and in the report: the trained
targets and their <|eot_id|>. Loss is the mean over those tokens; perplexity is exp(loss).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

MAX_SAMPLES = 3
SAMPLE_TOKENS = 48


def load_rows(cfg: dict, tokenizer) -> tuple[list[dict], list[dict]]:
    from brightrun.quiet import quiet_third_party_logs

    quiet_third_party_logs()
    from axolotl.prompt_strategies.chat_template import load as load_strategy
    from axolotl.utils.dict import DictDefault

    ds_cfg = cfg["test_datasets"][0]
    lines = [json.loads(x) for x in Path(ds_cfg["path"]).read_text("utf-8").splitlines() if x.strip()]
    strategy = load_strategy(tokenizer, DictDefault(cfg), ds_cfg)
    return lines, [strategy.tokenize_prompt(line) for line in lines]


def mean_loss(model, rows: list[dict]) -> tuple[float, int]:
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            ids = torch.tensor([row["input_ids"]], device=model.device)
            labels = torch.tensor([row["labels"]], device=model.device)
            logits = model(input_ids=ids).logits[:, :-1].float()
            target = labels[:, 1:]
            mask = target != -100
            losses = torch.nn.functional.cross_entropy(logits[mask], target[mask], reduction="sum")
            total += losses.item()
            count += int(mask.sum())
    return total / count, count


def prompt_of(line: dict) -> tuple[list[dict], str]:
    """The messages before the first trained target, and that target: a held-out question."""
    msgs = line["messages"]
    i = next(i for i, m in enumerate(msgs) if m["train"])
    return [{"role": m["role"], "content": m["content"]} for m in msgs[:i]], msgs[i]["content"]


def generate(model, tokenizer, messages: list[dict]) -> str:
    import torch

    enc = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    ).to(model.device)
    with torch.no_grad():
        out = model.generate(
            **enc,
            max_new_tokens=SAMPLE_TOKENS,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        )
    return tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def load_tokenizer(cfg: dict):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg["base_model"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = (cfg.get("special_tokens") or {}).get("pad_token") or tokenizer.eos_token
    return tokenizer


def compare_loaded(model, tokenizer, cfg: dict) -> dict:
    """Base vs adapter with one PeftModel: the base is the same model with the adapter switched off."""
    lines, rows = load_rows(cfg, tokenizer)
    prompts = [prompt_of(line) for line in lines[:MAX_SAMPLES]]
    was_training = model.training
    model.eval()
    with model.disable_adapter():
        base_loss, n_tokens = mean_loss(model, rows)
        base_text = [generate(model, tokenizer, p) for p, _ in prompts]
    adapter_loss, _ = mean_loss(model, rows)
    adapter_text = [generate(model, tokenizer, p) for p, _ in prompts]
    model.train(was_training)
    return {
        "val_lines": len(rows),
        "scored_tokens": n_tokens,
        "base": {"loss": base_loss, "perplexity": math.exp(base_loss)},
        "adapter": {"loss": adapter_loss, "perplexity": math.exp(adapter_loss)},
        "samples": [
            {"prompt": p[-1]["content"], "reference": ref, "base": b, "adapter": a}
            for (p, ref), b, a in zip(prompts, base_text, adapter_text, strict=True)
        ],
    }


def write(run_dir: Path, result: dict) -> None:
    (run_dir / "eval.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", "utf-8")


def config_of(run_dir: Path) -> dict:
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    if not cfg.get("test_datasets"):
        raise ValueError("the run has no held-out data (converted with --val-fraction 0)")
    return cfg


def evaluate(run_dir: Path) -> dict:
    """`just eval RUN`: load the base model and the run's adapter again, in this process (CPU)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = config_of(run_dir)
    tokenizer = load_tokenizer(cfg)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(cfg["base_model"]), run_dir / "output"
    )
    result = compare_loaded(model, tokenizer, cfg)
    write(run_dir, result)
    return result
