"""Kill -9 after a checkpoint, resume, finish at the planned step: for real, on CPU.

Runs on PostgreSQL when TEST_POSTGRES_URL is set (CI), so the whole path is exercised on both
backends (test_jobs.py uses SQLite).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import psutil
from conftest import jobs_cli, start_smoke_job
from safetensors import safe_open

from jobs import registry


def test_kill_9_then_resume_finishes_at_the_planned_step(tmp_path, sample_out):
    runs = tmp_path / "runs"
    url = os.environ.get("TEST_POSTGRES_URL") or f"sqlite:///{tmp_path / 'registry.db'}"
    parent = start_smoke_job(
        runs,
        url,
        sample_out,
        "max_steps=4",
        "save_steps=1",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 600
    checkpoint = None
    while time.time() < deadline and checkpoint is None:
        time.sleep(1)
        found = list(runs.glob("*/output/checkpoint-2/trainer_state.json"))
        checkpoint = found[0].parent if found else None
        assert parent.poll() is None, "the run ended before it could be killed"
    assert checkpoint is not None, "no checkpoint-2 within 10 minutes"
    # The machine dies: every process of the run, at once, with no chance to clean up.
    procs = [psutil.Process(parent.pid), *psutil.Process(parent.pid).children(recursive=True)]
    for p in procs:
        p.send_signal(signal.SIGKILL)
    parent.wait()
    run_dir = checkpoint.parent.parent
    run_id = run_dir.name
    assert registry.get_job(run_id, url).status in ("training", "model_loaded")  # nobody could say otherwise

    proc = jobs_cli("--runs-dir", str(runs), "resume", run_id, env={"DATABASE_URL": url})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resuming" in proc.stderr and "from checkpoint-" in proc.stderr
    resumed_from = int(proc.stderr.split("from checkpoint-")[1].split()[0])
    assert resumed_from >= 2

    job = registry.get_job(run_id, url)
    assert (job.status, job.step, job.total_steps, job.retry_count) == ("completed", 4, 4, 1)
    steps = [p.step for p in registry.metrics(run_id, url) if p.loss is not None]
    assert steps == [1, 2, 3, 4]  # each step once: nothing duplicated by the resume
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged if "loss" in m] == [1, 2, 3, 4]
    lineage = json.loads((run_dir / "run.json").read_text())
    assert lineage["attempts"][-1]["resume_from"].endswith(f"checkpoint-{resumed_from}")
    # The LoRA weights are loaded from the checkpoint, not stacked on top of a fresh adapter.
    with safe_open(str(run_dir / "output" / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert len(keys) == 2 * 7 * 2  # 2 layers × 7 projections × (A, B)
    assert all(k.startswith("base_model.model.model.layers.") and k.count("lora_") == 1 for k in keys)
