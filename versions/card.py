"""A model card in each version (issue 28, item 7): README.md at the version's root, in the Hugging Face
Hub's conventions (YAML metadata first: `base_model`, `library_name: peft`, `pipeline_tag`, `tags`; the
Hub reads these keys, huggingface.co/docs/hub/model-cards), then what a reader needs to trust the
adapter: its data's and config's sha256, the verdict and every gate, the hyperparameters as trained.

Made from the version's row and the run's config.yaml only, so a resumed upload writes the same bytes.
"""

from __future__ import annotations

import yaml

from versions import registry

HYPERPARAMETERS = (
    "adapter", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "load_in_4bit", "sequence_len",
    "learning_rate", "lr_scheduler", "num_epochs", "max_steps", "micro_batch_size",
    "gradient_accumulation_steps", "optimizer", "seed",
)  # fmt: skip


def card(row: registry.ModelVersion, config: dict) -> str:
    meta = {
        "base_model": row.base_model,
        "library_name": "peft",
        "pipeline_tag": "text-generation",
        "tags": ["lora", config.get("adapter") or "peft", "brightrun-lora", "axolotl"],
    }
    scores = row.scores or {}
    gates = [g for g in scores.get("gates") or [] if isinstance(g, dict)]
    when = f"{row.created_at:%Y-%m-%d %H:%M}Z" if row.created_at else "an unrecorded time"
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False).strip(),
        "---",
        "",
        f"# {row.model_name} v{row.version}",
        "",
        f"A LoRA adapter for `{row.base_model}`, trained with Axolotl (BrightRun LoRA run `{row.run_id}`).",
        "",
        "## Provenance",
        "",
        f"- adapter sha256: `{row.adapter_sha256}`",
        f"- training data manifest sha256: `{row.data_sha256 or 'not recorded'}`",
        f"- Axolotl config sha256: `{row.config_sha256 or 'not recorded'}`",
        f"- promoted by {row.created_by} at {when}",
        "",
        "## Evaluation",
        "",
        f"Verdict: **{row.verdict or 'not evaluated'}**" + (" (promoted with --force)" if row.forced else ""),
        "",
    ]
    if gates:
        lines += ["| gate | result | detail |", "|---|---|---|"]
        for g in gates:
            detail = str(g.get("detail", "")).replace("|", "/").replace("\n", " ")
            lines.append(f"| {g.get('gate')} | {g.get('status')} | {detail} |")
        lines.append("")
    lines += ["## Hyperparameters", "", "| key | value |", "|---|---|"]
    lines += [f"| {k} | {config[k]} |" for k in HYPERPARAMETERS if k in config]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM",
        f'base = AutoModelForCausalLM.from_pretrained("{row.base_model}")',
        'model = PeftModel.from_pretrained(base, "adapter")  # this version\'s adapter/ folder',
        "```",
        "",
    ]
    return "\n".join(lines)
