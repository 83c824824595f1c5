"""How long a refused run takes to say why: `jobs train balanced 70b-qlora max_steps=1` on a machine with no
GPU and the Hub off (the issue's laptop), and `jobs preflight` for the same, against the CLI's own floor.

Usage: python bench/preflight.py [--repeats 7]                                  (`just bench-preflight`)

Each command runs in a fresh interpreter (what a person waits for), interleaved with `python -m jobs
--help` (start-up and the parser, the floor any verb pays), median of --repeats. The machine is made
GPU-less for the run (CUDA_VISIBLE_DEVICES="") and its Hub cache empty (a temporary HF_HOME), so the answer
is the same on every machine. Each refusal must exit 2 with one line on stderr and leave no run folder.
Target (issue 26): under 2 s. Before preflight the same command failed after ~17 s in Axolotl's preprocess.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd: list[str], env: dict, expect: int) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if done.returncode != expect:
        sys.exit(f"{' '.join(cmd)}: exit {done.returncode}, expected {expect}\n{done.stderr[-2000:]}")
    return took, done.stderr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        env = os.environ | {
            "CUDA_VISIBLE_DEVICES": "",
            "HF_HOME": f"{tmp}/hf",
            "HF_HUB_CACHE": f"{tmp}/hf/hub",
            "HF_HUB_OFFLINE": "1",
            "DATABASE_URL": f"sqlite:///{tmp}/registry.db",
        }
        py = [sys.executable, "-m", "jobs", "--runs-dir", str(runs)]
        commands = {
            "floor: jobs --help": (py + ["--help"], 0),
            "jobs train balanced 70b-qlora max_steps=1": (
                py + ["train", "balanced", "70b-qlora", "max_steps=1"],
                2,
            ),
            "jobs preflight balanced 70b-qlora": (py + ["preflight", "balanced", "70b-qlora"], 2),
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeats):
            for name, (cmd, expect) in commands.items():
                took, stderr = timed(cmd, env, expect)
                times[name].append(took)
                if expect == 2 and len(stderr.strip().splitlines()) != 1:
                    sys.exit(f"{name}: the refusal is not one line:\n{stderr}")
                if runs.exists() and any(runs.iterdir()):
                    sys.exit(f"{name}: left {sorted(p.name for p in runs.iterdir())} in the runs folder")
        floor = statistics.median(times["floor: jobs --help"])
        print(
            f"preflight refusals, median of {args.repeats} (fresh interpreter each, no GPU, empty Hub cache)"
        )
        for name, values in times.items():
            median = statistics.median(values)
            print(
                f"  {name:45s} {median:6.2f} s  ({median / floor:4.1f}x the floor)  max {max(values):.2f} s"
            )
        worst = max(statistics.median(v) for k, v in times.items() if not k.startswith("floor"))
        print(f"target: under 2 s -> {'met' if worst < 2 else 'NOT met'} ({worst:.2f} s); no run folder left")


if __name__ == "__main__":
    main()
