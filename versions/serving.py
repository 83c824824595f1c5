"""A vLLM serving plan that fits the GPU it is for (issue 28, item 2): `just serve REFS --hardware h100-pcie`.

For one base and its adapters on a hardware profile (axolotl_configs/hardware: gpu_count, gpu_memory_gb),
each way of holding the base is tried in order, best quality first: bf16 on one GPU, bf16 tensor-parallel
over every GPU of the profile, FP8 (vLLM's online dynamic quantization, `--quantization fp8`: Hopper and
Ada GPUs; LoRA on FP8 is supported, vllm-project/vllm issue 29424's status table), then bitsandbytes 4-bit
(`--quantization bitsandbytes`, in-flight NF4 as QLoRA trained on; LoRA on it: vLLM's
examples/offline_inference/lora_with_quantization_inference.py). The first that fits is printed with the
arithmetic of every candidate; none fits, or the asked precision does not: refused, with the numbers.

What a GPU must hold, per GPU (evals/memory.py's terms and sources; vLLM takes gpu_memory_utilization of
the card, 0.9 by default):
  weights     bf16 2 bytes a parameter; FP8 1 byte for every Linear but the LM head (vLLM's FP8 docs: "all
              Linear modules (except for the final lm_head)"), the embeddings and LM head in bf16; 4-bit as
              memory.weight_bytes; divided by the tensor-parallel size;
  adapters    --max-loras slots of --max-lora-rank on every projection, bf16 (counted whole on each GPU:
              vLLM shards LoRA only with --fully-sharded-loras);
  KV cache    `concurrency` whole sequences of --max-model-len (default 4: one sequence is the least vLLM
              starts with, but a server answering one request at a time is not a server), KV heads split
              over the tensor-parallel GPUs;
  activations one prefill of --max-model-len tokens (memory.activation_bytes), and 1.5 GiB of CUDA context.
A model, not a measurement: the GPU benchmark issue is where measured figures replace it.

The command names the target machine's paths: a version is fetched there from the artifact store (`python
-m versions download NAME@vN --to DIR`, every sha256 checked), never this machine's cache.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from axolotl_configs import profiles
from axolotl_configs.estimate import OVERHEAD_GB, lora_params
from brightrun.errors import ConfigError
from evals import memory

PRECISIONS = ("bf16", "fp8", "4bit")
VLLM_FLAGS = {"bf16": ["--dtype", "bfloat16"], "fp8": ["--quantization", "fp8"],
              "4bit": ["--quantization", "bitsandbytes"]}  # fmt: skip
CONCURRENCY = 4
TARGET_DIR = "/workspace/adapters"  # RunPod pods mount their volume at /workspace


def weight_gib(arch: dict, precision: str) -> float:
    if precision == "fp8":
        return (memory.linear_params(arch) * 1 + memory.other_params(arch) * 2) / memory.GIB
    return memory.weight_bytes(arch, "4bit" if precision == "4bit" else "none") / memory.GIB


def candidate(arch: dict, precision: str, tp: int, gpu_gib: float, *, adapters: int, rank: int,
              modules: list[str], max_model_len: int, concurrency: int = CONCURRENCY,
              utilization: float = memory.VLLM_UTILIZATION) -> dict:  # fmt: skip
    """One way of serving: each part per GPU in GiB, the total against the budget, and how many tokens of
    KV cache the room left would hold across the server."""
    kv_per_token = memory.kv_bytes_per_token(arch) / tp
    parts = {
        "weights": weight_gib(arch, precision) / tp,
        "adapters": adapters * lora_params(arch, rank, modules) * 2 / memory.GIB,
        "KV cache": concurrency * max_model_len * kv_per_token / memory.GIB,
        "activations": memory.activation_bytes(arch, max_model_len) / memory.GIB,
        "CUDA context and slack": OVERHEAD_GB,
    }
    budget, total = gpu_gib * utilization, sum(parts.values())
    room = budget - total + parts["KV cache"]  # what vLLM would turn into KV cache
    return {
        "precision": precision,
        "tensor_parallel": tp,
        "parts_gib": {k: round(v, 2) for k, v in parts.items()},
        "total_gib": round(total, 2),
        "budget_gib": round(budget, 2),
        "gpu_gib": gpu_gib,
        "fits": total <= budget,
        "kv_tokens": max(0, int(room * memory.GIB / kv_per_token)),
        "concurrency": concurrency,
    }


def candidates(arch: dict, hardware: dict, **kw) -> list[dict]:
    gpus, gib = int(hardware.get("gpu_count") or 1), float(hardware.get("gpu_memory_gb") or 0)
    # The cpu profile's gpu_memory_gb is the machine's RAM standing in for the training estimate.
    if gib <= 0 or hardware.get("gpu_type") in (None, "none"):
        raise ConfigError(
            f"hardware {hardware.get('name')!r} has no GPU (gpu_memory_gb): vLLM serves on GPUs"
        )
    sizes = [1] + ([gpus] if gpus > 1 else [])
    return [candidate(arch, p, tp, gib, **kw) for p in PRECISIONS for tp in sizes]


def choose(plans: list[dict], precision: str | None = None) -> dict:
    """The first plan that fits (of the asked precision, when one is asked); ConfigError with the
    arithmetic when none does."""
    pool = [p for p in plans if precision is None or p["precision"] == precision]
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    fitting = [p for p in pool if p["fits"]]
    if fitting:
        return fitting[0]
    best = min(pool, key=lambda p: p["total_gib"] - p["budget_gib"])
    asked = f"in {precision} " if precision else ""
    raise ConfigError(
        f"the base does not fit {asked}on this hardware: the closest, {label(best)}, needs "
        f"{best['total_gib']:.1f} GiB a GPU of {best['budget_gib']:.1f} ({arithmetic(best)}); choose a "
        "profile with more or larger GPUs" + ("" if precision is None else ", or another --precision")
    )


def label(p: dict) -> str:
    return f"{p['precision']} × tensor-parallel {p['tensor_parallel']}"


def arithmetic(p: dict) -> str:
    return " + ".join(f"{k} {v:.2f}" for k, v in p["parts_gib"].items())


def describe(plans: list[dict], chosen: dict | None) -> str:
    """Every candidate's arithmetic, one line each, the chosen one marked."""
    lines = [f"serving plan, per GPU in GiB (budget = card × {memory.VLLM_UTILIZATION}):"]
    for p in plans:
        mark = "→" if p is chosen else " "
        fits = f"fits, room for {p['kv_tokens']:,} tokens of KV cache" if p["fits"] else "does NOT fit"
        lines.append(
            f" {mark} {label(p):<26} {arithmetic(p)} = {p['total_gib']:.2f} of {p['budget_gib']:.2f}: {fits}"
        )
    return "\n".join(lines)


def arch_for(base_model: str) -> dict:
    """The base's shapes: a model profile's `architecture` for that base (the 70B is gated, its config not
    here), else the config.json of a base that is a folder on this machine."""
    for name in profiles.names("model"):
        found = profiles.load("model", name)
        if (found.get("axolotl") or {}).get("base_model") == base_model and found.get("architecture"):
            return dict(found["architecture"])
    config = Path(base_model) / "config.json"
    if config.is_file():
        import json

        return memory.arch_from_hf_config(json.loads(config.read_text("utf-8")))
    raise ConfigError(f"no shapes known for {base_model} (no model profile names it and no config.json here)")


def commands(sides: list, base_model: str, plan: dict, rank: int, max_model_len: int,
             target_dir: str = TARGET_DIR) -> list[list[str]]:  # fmt: skip
    """The downloads and the vLLM command, as run on the GPU machine."""
    folders = {s.served_name: f"{target_dir.rstrip('/')}/{s.served_name}" for s in sides}
    fetch = [
        ["python", "-m", "versions", "download", s.version.ref, "--to", folders[s.served_name]] for s in sides
    ]
    serve = [
        # Runtime LoRA loading on: promote and rollback swap adapters into this server (versions/hotswap.py).
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True", "vllm", "serve", base_model, "--enable-lora",
        "--lora-modules", *(f"{name}={folder}/adapter" for name, folder in folders.items()),
        "--max-lora-rank", str(rank), "--max-loras", str(len(sides)), "--max-model-len", str(max_model_len),
        *VLLM_FLAGS[plan["precision"]], "--tensor-parallel-size", str(plan["tensor_parallel"]),
        "--gpu-memory-utilization", str(memory.VLLM_UTILIZATION),
    ]  # fmt: skip
    return [*fetch, serve]


def shell(cmds: list[list[str]]) -> str:
    return "\n".join(shlex.join(c) for c in cmds)
