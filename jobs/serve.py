"""Merge an adapter into its base (Axolotl's merge-lora) or serve base + adapters with vLLM.

vLLM's OpenAI-compatible server loads LoRA adapters beside one base model: `--enable-lora --lora-modules
NAME=PATH NAME=PATH ...`, each adapter then answering as its NAME in the request's "model" (vLLM's docs,
"Serving LoRA Adapters": https://docs.vllm.ai/en/latest/features/lora.html, docs/features/lora.md in
vllm-project/vllm). `--max-lora-rank` must be at least the largest adapter's rank and one of the sizes
vLLM accepts; `--max-loras` is how many adapters one batch may mix (default 1, which would make requests
for two versions wait on each other), so it is the number served. Several versions of a model in one
server, one base in memory, is the live A/B: the customer's app picks a version by its model name.
Before printing the command we check each adapter holds nothing vLLM rejects: `modules_to_save` (e.g.
trained embeddings or LM head) and target modules outside the projections; and that all share one base.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from axolotl_configs.profiles import Profiles
from brightrun.errors import ConfigError
from evals.generate import VLLM_RANKS, vllm_lora_rank
from jobs import registry
from jobs.run import axolotl_command, child_env
from jobs.runfolder import sha256_file

SERVABLE_MODULES = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
# Fused projections vLLM serves under their own names (its packed_modules_mapping: qkv_proj holds q, k, v;
# gate_up_proj holds gate and up): what Phi-3-style models call their layers, so their adapters name them.
FUSED_MODULES = {"qkv_proj", "gate_up_proj"}


def _run_dir(run_id: str, runs_dir: str) -> Path:
    run_dir = Path(runs_dir) / run_id
    if not (run_dir / "output" / "adapter_config.json").is_file():
        raise ConfigError(f"no finished run {run_id!r} with an adapter (see `just runs`)")
    return run_dir


def adapter_problems(adapter_cfg: dict) -> list[str]:
    """What vLLM's own check (vllm/lora/peft_helper.py: _validate_features, validate_legal) would refuse
    when the server loads the adapter, said before the command is printed."""
    problems = []
    if adapter_cfg.get("use_dora"):
        problems.append("use_dora: vLLM does not serve DoRA adapters (retrain without DoRA)")
    if adapter_cfg.get("bias", "none") not in (None, "none") or adapter_cfg.get("lora_bias"):
        problems.append(f"bias {adapter_cfg.get('bias')!r}: vLLM serves adapters without bias terms only")
    if adapter_cfg.get("modules_to_save"):
        problems.append(
            f"modules_to_save {adapter_cfg['modules_to_save']}: vLLM cannot load trained full modules"
        )
    targets = adapter_cfg.get("target_modules") or []
    odd = sorted(set(targets) - SERVABLE_MODULES - FUSED_MODULES) if isinstance(targets, list) else [targets]
    if odd:
        problems.append(f"target_modules {odd}: outside the attention and MLP projections vLLM serves")
    if adapter_cfg.get("r", 0) > VLLM_RANKS[-1]:
        problems.append(f"rank {adapter_cfg['r']} exceeds vLLM's largest --max-lora-rank {VLLM_RANKS[-1]}")
    return problems


def lora_sides(refs: list[str], runs_dir: str, say=print) -> list:
    """Each NAME@vN or run id as an adapter folder here (versions/sides.py: a version always from the
    store, through the sha256-checked cache, so what is served is what was promoted), all on one base."""
    from versions import registry as versions_registry
    from versions import sides

    if len(set(refs)) != len(refs):
        raise ConfigError(f"{', '.join(sorted({r for r in refs if refs.count(r) > 1}))}: named twice")
    engine = registry.engine() if any("@" in r for r in refs) else None
    try:
        found = [sides.lookup(engine, runs_dir, ref) for ref in refs]
    except versions_registry.VersionError as exc:
        raise ConfigError(str(exc)) from None
    bases = {s.base_model for s in found}
    if len(bases) > 1 or "?" in bases:
        on = "; ".join(f"{s.ref} on {s.base_model}" for s in found)
        raise ConfigError(f"one vLLM server holds one base model, and these are not all on the same: {on}")
    return [sides.materialize(s, runs_dir, prefer_store=True, say=say) for s in found]


def vllm_command(found: list) -> list[str]:
    """`vllm serve BASE --enable-lora --lora-modules NAME=PATH ...` for sides on one base (lora_sides)."""
    ranks, problems = [], []
    for side in found:
        adapter_cfg = json.loads((side.adapter_dir / "adapter_config.json").read_text())
        problems += [f"{side.ref}: {p}" for p in adapter_problems(adapter_cfg)]
        ranks.append(adapter_cfg["r"])
    if problems:
        raise ConfigError("vLLM cannot serve: " + "; ".join(problems))
    rank = vllm_lora_rank(max(ranks))
    lengths = [n for n in (side.config().get("sequence_len") for side in found) if n]
    return [
        "vllm",
        "serve",
        found[0].base_model,
        "--enable-lora",
        "--lora-modules",
        *(f"{side.served_name}={side.adapter_dir}" for side in found),
        "--max-lora-rank",
        str(rank),
        "--max-loras",
        str(len(found)),
        *(["--max-model-len", str(max(lengths))] if lengths else []),
    ]


def serve(
    refs: list[str],
    runs_dir: str = "runs",
    execute: bool = False,
    hardware: str | None = None,
    precision: str | None = None,
    target_dir: str | None = None,
) -> int:
    from versions import store

    say = lambda m: print(m, file=sys.stderr)  # noqa: E731  (stdout: the command only)
    if hardware is not None:
        runs = [r for r in refs if "@" not in r]
        if runs:  # the GPU machine fetches what it serves from the store: a run folder is only here
            raise ConfigError(
                f"{', '.join(runs)}: --hardware plans serve versions (NAME@vN): promote it first"
            )
        if execute:
            raise ConfigError("--hardware prints a plan for another machine: run its commands there")
    try:
        found = lora_sides(refs, runs_dir, say)
    except store.StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    cmd = vllm_command(found)
    if hardware is not None:
        return plan_for(found, hardware, precision, target_dir)
    if not execute:
        print(shlex.join(cmd))
        names = ", ".join(f'"{side.served_name}"' for side in found)
        print(f'# then: POST /v1/chat/completions with "model": one of {names}', file=sys.stderr)
        return 0
    try:
        return subprocess.call(cmd)
    except FileNotFoundError:
        raise ConfigError("vllm is not installed here: run the printed command on the GPU machine") from None


def plan_for(found: list, hardware: str, precision: str | None, target_dir: str | None) -> int:
    """`--hardware NAME`: versions/serving.py's plan for that profile's GPUs, its arithmetic on stderr,
    the commands for the GPU machine on stdout; refused (exit 2) when nothing (or not the asked
    precision) fits."""
    from axolotl_configs.profiles import load
    from versions import serving

    configs = [json.loads((s.adapter_dir / "adapter_config.json").read_text()) for s in found]
    modules = sorted({m for c in configs for m in (c.get("target_modules") or [])}) or list(SERVABLE_MODULES)
    rank = vllm_lora_rank(max(c["r"] for c in configs))
    max_model_len = max((n for n in (s.config().get("sequence_len") for s in found) if n), default=4096)
    plans = serving.candidates(
        serving.arch_for(found[0].base_model), load("hardware", hardware),
        adapters=len(found), rank=rank, modules=modules, max_model_len=max_model_len,
    )  # fmt: skip
    try:
        chosen = serving.choose(plans, precision)
    except ConfigError:
        print(serving.describe(plans, None), file=sys.stderr)
        raise
    print(serving.describe(plans, chosen), file=sys.stderr)
    target = target_dir or serving.TARGET_DIR
    print(serving.shell(serving.commands(found, found[0].base_model, chosen, rank, max_model_len, target)))
    print(f"# on the GPU machine ({hardware}), with ARTIFACT_STORE and its keys set", file=sys.stderr)
    return 0


def merge(run_id: str, runs_dir: str = "runs", db_url: str | None = None) -> int:
    run_dir = _run_dir(run_id, runs_dir)
    lineage = json.loads((run_dir / "run.json").read_text())
    profiles = Profiles.load(lineage["preset"], lineage["model"], lineage["hardware"])
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cmd = axolotl_command(
        "merge-lora", run_dir / "config.yaml", profiles, "--lora-model-dir", str(run_dir / "output")
    )
    with (run_dir / "logs" / "merge.log").open("w") as log:
        rc = subprocess.call(
            cmd, env=child_env(cfg, registry.database_url(db_url)), stdout=log, stderr=subprocess.STDOUT
        )
    merged = run_dir / "output" / "merged"
    if rc != 0 or not merged.is_dir():
        print(f"error: merge failed (exit {rc}); see {run_dir}/logs/merge.log", file=sys.stderr)
        return 1
    files = sorted(p for p in merged.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in files)
    # One digest for the folder: over each file's relative path and sha256, in a fixed order.
    digest = hashlib.sha256(
        "".join(f"{p.relative_to(merged)}:{sha256_file(p)}\n" for p in files).encode()
    ).hexdigest()
    registry.add_artifact(
        run_id,
        db_url,
        artifact_type="merged",
        storage_path=str(merged),
        size_bytes=size,
        sha256=digest,
        base_model=cfg["base_model"],
        lora_config={},
    )
    print(f"merged model: {merged} ({size / 1e6:.1f} MB)", file=sys.stderr)
    return 0
