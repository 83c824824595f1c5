"""Before any GPU: tokens, packed rows, optimizer steps, peak memory, hours and dollars.

Tokens and rows come from the converter's manifest (measured). Memory is a model, not a measurement:
  weights      4-bit body (NF4 + double-quantized scales, 4.127 bits) with embeddings and LM head in
               bf16 (bitsandbytes quantizes only the decoder's Linear layers), or bf16/fp32 in full;
  LoRA         parameters and gradients in fp32, Adam state in 8 bits (2 bytes) or fp32 (8 bytes);
  activations  per layer ~34·s·h bytes while it is being recomputed (Korthikanti et al. 2022, with
               flash attention removing the s² term), plus 2·s·h bytes kept per layer when
               checkpointing (its input);
  logits       s × vocab in bf16 + fp32 loss and gradient, unless cut-cross-entropy computes the
               loss without materialising them;
  overhead     1.5 GB of CUDA context and allocator slack.
Time is processed tokens (padded rows × sequence length) over the hardware file's throughput figure
(estimated there, with its source) plus evaluation (forward only, ~1/3 of a training step per token)
and the model profile's load time. The GPU benchmark issue replaces the figures with measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

from axolotl_configs import data as data_mod
from axolotl_configs import render as render_mod

GB = 1024**3
OVERHEAD_GB = 1.5


@dataclass
class Estimate:
    name: str
    hardware: dict
    throughput: dict
    data: data_mod.DataInfo
    numbers: dict
    memory: dict  # component -> GB per GPU
    hours: dict  # component -> hours
    costs: dict  # on_demand / spot -> USD

    @property
    def peak_gb(self) -> float:
        return sum(self.memory.values())

    @property
    def fits(self) -> bool:
        return self.peak_gb <= self.hardware["gpu_memory_gb"]


def lora_params(arch: dict, r: int, modules: list[str]) -> int:
    h, i, heads, kv = arch["hidden"], arch["intermediate"], arch["heads"], arch["kv_heads"]
    kv_dim = h // heads * kv
    shapes = {
        "q_proj": (h, h),
        "k_proj": (h, kv_dim),
        "v_proj": (h, kv_dim),
        "o_proj": (h, h),
        "gate_proj": (h, i),
        "up_proj": (h, i),
        "down_proj": (i, h),
    }
    return arch["layers"] * sum(r * (a + b) for m, (a, b) in shapes.items() if m in modules)


def memory(model: dict, v: dict, gpus: int) -> dict:
    arch = model["architecture"]
    params, h, vocab = float(arch["params"]), arch["hidden"], arch["vocab"]
    embed_and_head = vocab * h * (1 if arch["tied_embeddings"] else 2)
    bits = model["weights_bits"]
    if bits < 16:
        weights = (params - embed_and_head) * bits / 8 + embed_and_head * 2
    else:
        weights = params * bits / 8
    shard = gpus if v.get("fsdp_version") else 1  # FSDP splits weights and optimizer state
    n_lora = lora_params(arch, int(v["lora_r"]), v["lora_target_modules"])
    adam_bytes = 2 if "8bit" in str(v["optimizer"]) else 8
    tokens = int(v["micro_batch_size"]) * int(v["sequence_len"])
    act_bytes = 2 if v.get("bf16") else 4
    working_layer = 34 * tokens * h * act_bytes / 2  # the 34·s·h figure is for 2-byte activations
    if v.get("gradient_checkpointing"):
        activations = arch["layers"] * tokens * h * act_bytes + working_layer
    else:
        activations = arch["layers"] * working_layer
    logits = tokens * h * act_bytes if v.get("cut_cross_entropy") else tokens * vocab * (act_bytes + 8)
    return {
        "weights": weights / shard / GB,
        "LoRA params, grads, optimizer": n_lora * (4 + 4 + adam_bytes) / shard / GB,
        "activations": activations / GB,
        "logits and loss": logits / GB,
        "CUDA context and slack": OVERHEAD_GB,
    }


def estimate(
    preset: str,
    model: str,
    data_dir: str,
    hardware: str | None = None,
    overrides: list[str] | None = None,
    allow_drop: bool = False,
    rendered: render_mod.Rendered | None = None,
) -> Estimate:
    """The numbers for a render; pass one already made (same arguments) to skip rendering again."""
    if rendered is None:
        rendered = render_mod.render(
            preset, model, data_dir, hardware, overrides, check=False, allow_drop=allow_drop
        )
    p, info = rendered.profiles, rendered.data
    v, n = rendered.values, rendered.derived
    gpus = int(p.hardware["gpu_count"])
    tput = p.throughput["tokens_per_s"] * gpus
    train_s = n["total_steps"] * n["seconds_per_step"]
    evals = max(1, n["total_steps"] // int(v["eval_steps"])) if info.val_lines else 0
    eval_tokens = info.val_tokens if info.val_tokens is not None else 0.1 * n["tokens_per_step"]
    eval_s = evals * eval_tokens / (3 * tput)
    hours = {"load model": p.model["load_minutes"] / 60, "train": train_s / 3600, "evaluate": eval_s / 3600}
    total_h = sum(hours.values())
    prices = p.hardware["price_per_hour"]
    return Estimate(
        name=render_mod.run_name(p),
        hardware=p.hardware,
        throughput=p.throughput,
        data=info,
        numbers=n | {"processed_tokens": n["total_steps"] * n["tokens_per_step"]},
        memory=memory(p.model, v, gpus),
        hours=hours,
        costs={kind: total_h * gpus * price for kind, price in prices.items()},
    )


def show(est: Estimate) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    n, info, hw = est.numbers, est.data, est.hardware
    t = Table(title=f"Estimate: {est.name} on {hw['description']}", title_justify="left", show_header=False)
    t.add_column(style="bold")
    t.add_column(justify="right")
    tokens = f"{info.tokens_per_epoch:,}" if info.tokens_per_epoch is not None else "not counted"
    t.add_row("tokens per epoch (train, from the manifest)", tokens)
    t.add_row("trained targets per epoch", f"{info.train_targets:,}")
    t.add_row("packed rows per epoch", f"{n['rows_per_epoch']:,} (~{n['targets_per_row']:.1f} targets each)")
    t.add_row("optimizer steps", f"{n['steps_per_epoch']} per epoch, {n['total_steps']} in all")
    t.add_row("processed tokens (padded rows)", f"{n['processed_tokens']:,}")
    for part, gb in est.memory.items():
        t.add_row(f"  memory: {part}", f"{gb:.1f} GB")
    t.add_row("peak memory per GPU (modelled)", f"{est.peak_gb:.1f} GB of {hw['gpu_memory_gb']} GB")
    t.add_row("throughput (per GPU, estimated)", f"{est.throughput['tokens_per_s']:,} tokens/s")
    for part, h in est.hours.items():
        t.add_row(f"  time: {part}", f"{h * 60:.1f} min")
    t.add_row("wall time", f"{sum(est.hours.values()):.2f} h")
    for kind, usd in est.costs.items():
        t.add_row(f"cost at {kind} price (${hw['price_per_hour'][kind]}/GPU-h)", f"${usd:.2f}")
    console.print(t)
    console.print(f"throughput source: {est.throughput['source']}")
    console.print(f"price source: {hw['price_source']}")
    if not est.fits:
        console.print(
            f"[bold red]WARNING: the modelled peak ({est.peak_gb:.1f} GB) exceeds the GPU's "
            f"{hw['gpu_memory_gb']} GB: lower sequence_len or micro_batch_size, or use more GPUs[/]"
        )
