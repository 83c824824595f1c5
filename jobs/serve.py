"""Merge an adapter into its base (Axolotl's merge-lora) or serve base + adapter with vLLM.

vLLM's OpenAI-compatible server loads a LoRA adapter beside the base model (`--enable-lora
--lora-modules NAME=PATH`); `--max-lora-rank` must be at least the adapter's rank and is one of the
sizes vLLM accepts. Before printing the command we check the adapter holds nothing vLLM rejects:
`modules_to_save` (e.g. trained embeddings or LM head) and target modules outside the projections.
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
from jobs import registry
from jobs.run import axolotl_command, child_env
from jobs.runfolder import sha256_file

VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's accepted --max-lora-rank values
SERVABLE_MODULES = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def _run_dir(run_id: str, runs_dir: str) -> Path:
    run_dir = Path(runs_dir) / run_id
    if not (run_dir / "output" / "adapter_config.json").is_file():
        raise ConfigError(f"no finished run {run_id!r} with an adapter (see `just runs`)")
    return run_dir


def adapter_problems(adapter_cfg: dict) -> list[str]:
    problems = []
    if adapter_cfg.get("modules_to_save"):
        problems.append(
            f"modules_to_save {adapter_cfg['modules_to_save']}: vLLM cannot load trained full modules"
        )
    targets = adapter_cfg.get("target_modules") or []
    odd = sorted(set(targets) - SERVABLE_MODULES) if isinstance(targets, list) else [targets]
    if odd:
        problems.append(f"target_modules {odd}: outside the attention and MLP projections vLLM serves")
    if adapter_cfg.get("r", 0) > VLLM_LORA_RANKS[-1]:
        problems.append(
            f"rank {adapter_cfg['r']} exceeds vLLM's largest --max-lora-rank {VLLM_LORA_RANKS[-1]}"
        )
    return problems


def vllm_command(run_dir: Path) -> list[str]:
    adapter_cfg = json.loads((run_dir / "output" / "adapter_config.json").read_text())
    problems = adapter_problems(adapter_cfg)
    if problems:
        raise ConfigError("the adapter cannot be served by vLLM: " + "; ".join(problems))
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    rank = next(r for r in VLLM_LORA_RANKS if r >= adapter_cfg["r"])
    return [
        "vllm",
        "serve",
        cfg["base_model"],
        "--enable-lora",
        "--lora-modules",
        f"brightrun-{run_dir.name}={run_dir / 'output'}",
        "--max-lora-rank",
        str(rank),
        "--max-model-len",
        str(cfg["sequence_len"]),
    ]


def serve(run_id: str, runs_dir: str = "runs", execute: bool = False) -> int:
    cmd = vllm_command(_run_dir(run_id, runs_dir))
    if not execute:
        print(shlex.join(cmd))
        print(f'# then: POST /v1/chat/completions with "model": "brightrun-{run_id}"', file=sys.stderr)
        return 0
    return subprocess.call(cmd)


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
