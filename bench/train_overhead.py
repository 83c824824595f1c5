"""What `python -m jobs train` (= `just train`) costs on top of bare Axolotl, on the smoke job.

Usage: python bench/train_overhead.py [--steps 2]      (`just bench-train-overhead`)

Both sides run the same rendered smoke config, one after the other on this machine, each with its
own fresh dataset_prepared_path so neither reuses the other's tokenization:
  bare   `axolotl preprocess CFG` then `axolotl train CFG --launcher python` (Axolotl's documented flow)
  jobs   `python -m jobs train balanced smoke ... --no-eval` (the same two subprocesses plus the registry,
         the plugin's metrics, lineage and the progress bar), and once more with the held-out evaluation
Target (issue 4): jobs / bare <= 1.15. Reported as measured, one run each.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from brightrun import offline  # noqa: E402 -- the repo root is on the path only now


def timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2)
    args = ap.parse_args()
    from axolotl_configs import render

    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        **offline.ALL,
    }
    data = "data/converted/demo"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        common = [f"max_steps={args.steps}"]
        cfg = tmp / "bare.yaml"
        rendered = render.render(
            "balanced",
            "smoke",
            data,
            overrides=[
                *common,
                f"output_dir={tmp / 'bare-out'}",
                f"dataset_prepared_path={tmp / 'bare-prep'}",
            ],
        )
        render.write(rendered, cfg)
        axolotl = str(bin_dir / "axolotl")
        bare = timed([axolotl, "preprocess", str(cfg)], env) + timed(
            [axolotl, "train", str(cfg), "--launcher", "python"], env
        )
        job_env = {**env, "DATABASE_URL": f"sqlite:///{tmp / 'registry.db'}"}
        jobs_cmd = [
            sys.executable,
            "-m",
            "jobs",
            "--runs-dir",
            str(tmp / "runs"),
            "train",
            "balanced",
            "smoke",
            "--data",
            data,
            *common,
        ]
        ours = timed([*jobs_cmd, f"dataset_prepared_path={tmp / 'jobs-prep'}", "--no-eval"], job_env)
        with_eval = timed([*jobs_cmd, f"dataset_prepared_path={tmp / 'jobs-prep2'}"], job_env)
    print(f"smoke job, {args.steps} steps, data {data}, one run each on this machine:")
    print(f"  bare axolotl preprocess + train   {bare:7.1f} s")
    print(f"  python -m jobs train --no-eval    {ours:7.1f} s   = {ours / bare:.2f}x bare (target <= 1.15x)")
    print(f"  python -m jobs train (with eval)  {with_eval:7.1f} s   = {with_eval / bare:.2f}x bare")


if __name__ == "__main__":
    main()
