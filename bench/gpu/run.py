"""GPU benchmark: measured tokens/s, peak memory, seconds per step, hours and dollars of the real
profiles, through real `axolotl preprocess` + `axolotl train` on random-weight models of the real shapes.

Usage (one command on the GPU machine, see bench/gpu/README.md for the wheels it needs there):
  python bench/gpu/run.py [--profiles 8b,70b-qlora] [--steps 12] [--warmup 4] [--layers-70b 2,4]
  python bench/gpu/run.py --smoke        # the same harness on CPU: smoke profile, tiny model (tests)

Method:
  data     a generated 242-conversation brightrun-v4 file (the customer's size), converted with the real
           Llama 3 tokenizer at the profile's sequence_len: the run trains on what a real run would.
  models   Llama 3 8B in full; the 70B shape truncated to a few of its 80 decoder layers (embeddings and
           head in full); per-layer time and memory are the slope between two layer counts, and the 80-layer
           figures are intercept + 80 x slope (a straight line: every decoder layer is the same work).
  timing   per optimizer step after a device sync (bench/gpu/timing.py); the first --warmup steps are
           dropped (compilation, allocator growth). Processed tokens = all real tokens, not only trained.
  memory   torch.cuda.max_memory_allocated in the training process, and nvidia-smi's peak used memory.
  MFU      6 x parameters x tokens/s (forward, recompute, backward to activations; frozen weights need no
           weight gradients) against the card's bf16 matmul rate measured here (8192^3 GEMMs).
Prints a table last; writes results.json (and RESULTS.md with --results-md, the hardware file's
throughput with --write-hardware).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from brightrun import offline  # noqa: E402 -- the repo root is on the path only now

TOKENIZER = ROOT / "assets" / "llama3-tokenizer"
TIMING_PLUGIN = "bench.gpu.timing.TimingPlugin"
EPOCHS = 3
CONVERSATIONS = 242


def sh(cmd: list[str], log: Path, env: dict) -> None:
    with log.open("a") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise SystemExit(f"{' '.join(cmd[:3])} exited {rc}; {log}:\n{tail}")


def make_data(work: Path, sequence_len: int, conversations: int) -> Path:
    """The generated file converted at this sequence length (the converter's own CLI)."""
    from converters import demo_data

    src = work / f"brightrun-{conversations}.json"
    if not src.exists():
        src.write_text(json.dumps(demo_data.generate(conversations, seed=242), ensure_ascii=False), "utf-8")
    out = work / f"data-{conversations}-{sequence_len}"
    if not (out / "manifest.json").exists():
        cmd = [sys.executable, "-m", "converters", "convert", str(src), "--out", str(out), "--quiet"]
        cmd += ["--tokenizer", str(TOKENIZER), "--sequence-len", str(sequence_len)]
        subprocess.run(cmd, cwd=ROOT, check=True)
    return out


def matmul_tflops() -> float | None:
    """The card's dense bf16 matmul rate, measured: the MFU denominator."""
    import torch

    if not torch.cuda.is_available():
        return None
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    torch.cuda.synchronize()
    reps, start = 50, time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


class SmiPeak:
    """nvidia-smi's used memory, sampled every 0.5 s while training runs (includes the CUDA context)."""

    def __init__(self):
        self.peak_mib = None
        self.exe = shutil.which("nvidia-smi")
        self.done = threading.Event()

    def __enter__(self):
        if self.exe:
            threading.Thread(target=self.sample, daemon=True).start()
        return self

    def sample(self):
        while not self.done.wait(0.5):
            out = subprocess.run(
                [self.exe, "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
            ).stdout.split()
            if out and out[0].isdigit():
                self.peak_mib = max(self.peak_mib or 0, int(out[0]))

    def __exit__(self, *exc):
        self.done.set()


def flash_attn_available() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


def train_once(name, profile, data, base_model, work, args, env) -> dict:
    """One real preprocess + train; the timing plugin's record plus what the parent measured."""
    from axolotl_configs import render
    from axolotl_configs.profiles import Profiles

    run_dir = work / name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    plugins = list(Profiles.load("balanced", profile, args.hardware).model["axolotl"].get("plugins") or [])
    overrides = [
        f"base_model={base_model}",
        f"max_steps={args.steps}",
        f"save_steps={args.steps * 10}",  # no checkpoint inside the timed steps
        f"eval_steps={args.steps * 10}",
        f"output_dir={run_dir / 'out'}",
        f"dataset_prepared_path={run_dir / 'prepared'}",
        f"plugins=[{', '.join([*plugins, TIMING_PLUGIN])}]",
        f"bench_out={run_dir / 'timing.json'}",
    ]
    if args.smoke:  # one packed row per step: the harness's arithmetic, at a CPU step's cost (~10 s a row)
        overrides.append("gradient_accumulation_steps=1")
    attention = "flash_attention_2"
    if not args.smoke and not flash_attn_available():
        overrides.append("attn_implementation=sdpa")  # the flash-attn package cannot travel here
        attention = "sdpa"
    rendered = render.render(
        "balanced", profile, str(data), args.hardware, overrides, str(run_dir / "config.yaml")
    )
    render.write(rendered, run_dir / "config.yaml")
    axolotl = str(Path(sys.executable).parent / "axolotl")
    if not Path(axolotl).exists():
        axolotl = shutil.which("axolotl") or axolotl
    log = run_dir / "log.txt"
    sh([axolotl, "preprocess", str(run_dir / "config.yaml")], log, env)
    with SmiPeak() as smi:
        sh([axolotl, "train", str(run_dir / "config.yaml"), "--launcher", "python"], log, env)
    timing = json.loads((run_dir / "timing.json").read_text())
    steady = timing["steps"][args.warmup :] or timing["steps"]
    seconds = sum(s["seconds"] for s in steady)
    tokens = sum(s["tokens"] for s in steady)
    cfg = rendered.config
    return {
        "name": name,
        "profile": profile,
        "attention": cfg.get("attn_implementation") if args.smoke else attention,
        "sequence_len": cfg["sequence_len"],
        "micro_batch_size": cfg["micro_batch_size"],
        "gradient_accumulation_steps": cfg["gradient_accumulation_steps"],
        "steps_timed": len(steady),
        "seconds_per_step": seconds / len(steady),
        "tokens_per_step": tokens / len(steady),
        "tokens_per_s": tokens / seconds,
        "trained_per_s": sum(s["trained"] for s in steady) / seconds,
        "peak_allocated_gb": (timing["peak_allocated_bytes"] or 0) / 1e9 or None,
        "peak_smi_gb": smi.peak_mib * 1.048576e-3 if smi.peak_mib else None,
        "peak_rss_gb": timing["peak_rss_bytes"] / 1e9,
        "device": timing["device"],
        "data_tokens_per_epoch": rendered.data.tokens_per_epoch,
        "rows_per_epoch": render.data_mod.rows_per_epoch(rendered.data, cfg["sequence_len"], True),
    }


def extrapolate(points: list[tuple[int, dict]], layers: int) -> dict:
    """Seconds per step and peak memory at `layers` decoder layers, by the straight line through two
    truncated runs (slope = per-layer cost; intercept = embeddings, head, loss, optimizer state)."""
    (l1, a), (l2, b) = points[0], points[-1]
    out = dict(b)

    def line(key):
        if a.get(key) is None or b.get(key) is None:
            return None
        slope = (b[key] - a[key]) / (l2 - l1)
        return a[key] + slope * (layers - l1)

    out["seconds_per_step"] = line("seconds_per_step")
    out["tokens_per_s"] = b["tokens_per_step"] / out["seconds_per_step"]
    out["trained_per_s"] = b["trained_per_s"] * b["seconds_per_step"] / out["seconds_per_step"]
    for key in ("peak_allocated_gb", "peak_smi_gb"):
        out[key] = line(key)
    out["name"] = f"{b['profile']} (80 layers, extrapolated from {l1} and {l2})"
    out["extrapolated_from"] = [l1, l2]
    return out


def costs(result: dict, hardware: dict, params: int, tflops: float | None) -> dict:
    """Hours and dollars for EPOCHS epochs of the 242-conversation file at this throughput; MFU."""
    packing = result["data_tokens_per_epoch"] / (result["rows_per_epoch"] * result["sequence_len"])
    hours = EPOCHS * result["data_tokens_per_epoch"] / result["tokens_per_s"] / 3600
    prices = hardware["price_per_hour"]
    gpus = hardware["gpu_count"]
    mfu = 6 * params * result["tokens_per_s"] / (tflops * 1e12) if tflops else None
    return {
        "packing_efficiency": packing,
        "hours_3_epochs": hours,
        "cost_on_demand": hours * gpus * prices["on_demand"],
        "cost_spot": hours * gpus * prices["spot"],
        "mfu": mfu,
        "parameters": params,
    }


def table(results: list[dict], tflops: float | None, conversations: int) -> str:
    def f(value, fmt):
        return "-" if value is None else format(value, fmt)

    rows = [
        (
            "run",
            "tok/s",
            "s/step",
            "peak alloc GB",
            "peak smi GB",
            "packing",
            "h (3 ep)",
            "$ spot",
            "$ on-dem",
            "MFU",
        )
    ]
    for r in results:
        rows.append(
            (
                r["name"],
                f(r["tokens_per_s"], ",.0f"),
                f(r["seconds_per_step"], ".2f"),
                f(r["peak_allocated_gb"], ".1f"),
                f(r["peak_smi_gb"], ".1f"),
                f(r["packing_efficiency"], ".1%"),
                f(r["hours_3_epochs"], ".3f"),
                f(r["cost_spot"], ".2f"),
                f(r["cost_on_demand"], ".2f"),
                f(r["mfu"], ".1%"),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    device = results[0]["device"] if results else "?"
    lines.append(
        f"device {device}; bf16 matmul {f(tflops, '.0f')} TFLOP/s measured; "
        f"{conversations} conversations, {EPOCHS} epochs"
    )
    return "\n".join(lines)


def write_hardware(path: Path, results: list[dict], today: str) -> None:
    """The measured tokens/s into the hardware file's throughput lines, with date and card."""
    text = path.read_text()
    for r in results:
        if "extrapolated_from" not in r and r["profile"] == "70b-qlora":
            continue  # only the 80-layer figure stands for the 70B profile
        source = f"measured {today} on {r['device']} by bench/gpu/run.py ({r['name']}, {r['attention']})"
        line = f"  {r['profile']}: {{tokens_per_s: {round(r['tokens_per_s'])}, source: {json.dumps(source)}}}"
        text, n = re.subn(rf"^  {re.escape(r['profile'])}: \{{.*\}}$", line, text, flags=re.M)
        if n != 1:
            raise SystemExit(f"{path}: no throughput line for {r['profile']}")
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profiles", default="8b,70b-qlora")
    ap.add_argument("--hardware", default="h100-pcie", help="the prices and throughput file to use/update")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--layers-70b", default="2,4", help="two truncated depths of the 70B shape")
    ap.add_argument("--conversations", type=int, default=CONVERSATIONS)
    ap.add_argument("--work", default="/tmp/brightrun-gpu-bench")
    ap.add_argument("--out", default=str(ROOT / "bench" / "gpu" / "out"))
    ap.add_argument("--smoke", action="store_true", help="CPU: the smoke profile on the tiny model")
    ap.add_argument("--write-hardware", action="store_true")
    ap.add_argument("--results-md", action="store_true")
    args = ap.parse_args(argv)
    if args.smoke:  # small and quick: the harness, not the figures
        args.hardware, args.profiles = "cpu", "smoke"
        args.conversations = min(args.conversations, 8)  # a few packed rows: enough for 2 steps of 1 row
        args.steps, args.warmup = min(args.steps, 4), min(args.warmup, 1)
    import torch

    from axolotl_configs.profiles import Profiles

    if not args.smoke and not torch.cuda.is_available():
        print("error: no CUDA device; on CPU run --smoke", file=sys.stderr)
        return 2
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env |= offline.ALL
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    tflops = matmul_tflops()
    hardware = Profiles.load("balanced", "smoke", args.hardware).hardware
    from bench.gpu import models

    results = []
    for profile in args.profiles.split(","):
        seq = Profiles.load("balanced", profile, args.hardware).model["axolotl"].get("sequence_len")
        from axolotl_configs.render import BASE

        data = make_data(work, seq or BASE["sequence_len"], args.conversations)
        print(f"[{profile}] data {data}", file=sys.stderr, flush=True)
        if args.smoke:
            r = train_once(profile, profile, data, ROOT / "assets" / "tiny-llama", work, args, env)
            results.append(r | costs(r, hardware, 0, None))  # no MFU on CPU
            continue
        shape = "70b" if profile.startswith("70b") else "8b"
        if shape == "8b":
            model = models.build(shape, work / "model-8b", TOKENIZER)
            r = train_once(profile, profile, data, model, work, args, env)
            results.append(r | costs(r, hardware, models.parameters(shape), tflops))
            continue
        points = []
        for layers in [int(x) for x in args.layers_70b.split(",")]:
            model = models.build(shape, work / f"model-70b-{layers}l", TOKENIZER, layers=layers)
            r = train_once(f"{profile} ({layers} layers)", profile, data, model, work, args, env)
            results.append(r | costs(r, hardware, models.parameters(shape, layers), tflops))
            points.append((layers, r))
            shutil.rmtree(model)  # disk: the next depth is built fresh
        full = extrapolate(points, models.SHAPES[shape]["num_hidden_layers"])
        results.append(full | costs(full, hardware, models.parameters(shape), tflops))
    report = table(results, tflops, args.conversations)
    (out / "results.json").write_text(
        json.dumps({"matmul_tflops": tflops, "hardware": args.hardware, "results": results}, indent=1) + "\n"
    )
    today = datetime.date.today().isoformat()
    if args.write_hardware:
        write_hardware(ROOT / "axolotl_configs" / "hardware" / f"{args.hardware}.yaml", results, today)
    if args.results_md:
        (ROOT / "bench" / "gpu" / "RESULTS.md").write_text(
            f"# GPU benchmark results ({today})\n\n```\n{report}\n```\n\n"
            f"Command: `python bench/gpu/run.py {' '.join(argv or sys.argv[1:])}`; "
            f"torch {torch.__version__}; method in bench/gpu/run.py's docstring.\n"
        )
    print(report)
    return 0 if all(math.isfinite(r["tokens_per_s"]) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
