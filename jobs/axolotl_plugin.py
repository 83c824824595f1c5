"""An Axolotl plugin that reports from inside training: status, every logged step, eval loss.

Loaded by Axolotl in the training process (`plugins: [..., jobs.axolotl_plugin.RegistryPlugin]`,
with `brightrun_run_id` and `brightrun_run_dir` in the config). It writes each logged step to
runs/<id>/metrics.jsonl and to the registry (DATABASE_URL, set by the launcher in the environment:
never in the config). On SIGTERM it asks the trainer to save a checkpoint and stop at the end of the
current step, so `jobs resume` can go on from there; on a pod (BRIGHTRUN_STOP_GRACE_S) it waits for that
at most the grace, then exits (jobs/stopgrace.py). With WEBHOOK_URL set, each status change and
logged step is also sent as a signed event (jobs/webhooks.py), off the training thread.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from axolotl.integrations.base import BasePlugin
from pydantic import BaseModel
from transformers import TrainerCallback

from brightrun import heap
from jobs import registry, stopgrace
from jobs.status import Cancelled, set_status
from jobs.status import emit as emit_status


class RegistryArgs(BaseModel):
    brightrun_run_id: str | None = None
    brightrun_run_dir: str | None = None
    brightrun_heldout_eval: bool = True  # false with `jobs train --no-eval`


def point_from_logs(step: int, logs: dict) -> dict | None:
    keys = {
        "loss": "loss",
        "learning_rate": "learning_rate",
        "grad_norm": "grad_norm",
        "eval_loss": "eval_loss",
        "epoch": "epoch",
    }
    point = {ours: float(logs[theirs]) for theirs, ours in keys.items() if theirs in logs}
    if "loss" not in point and "eval_loss" not in point:
        return None  # the final train summary (train_runtime, ...) is not a step
    return {"step": step, **point}


class RegistryCallback(TrainerCallback):
    def __init__(self, run_id: str, run_dir: str):
        self.run_id = run_id
        self.run_dir = run_dir
        self.metrics_path = Path(run_dir) / "metrics.jsonl"
        self.stop_requested = False
        self.deadline = None  # the timer that ends the process after a SIGTERM's grace, once armed

    def _on_sigterm(self, signum, frame):
        self.stop_requested = True
        # On a pod SIGKILL follows within seconds: the save is tried, never waited for past the grace
        # (jobs/stopgrace.py). Once: a second SIGTERM does not move the deadline.
        seconds = stopgrace.grace()
        if seconds is not None and self.deadline is None:
            self.deadline = stopgrace.arm(seconds)

    def on_train_begin(self, args, state, control, **kwargs):
        # Settled again once the model is in and placed: after a FSDP or DeepSpeed wrap, so what a wrap
        # replaced is collected first, not frozen for good (brightrun/heap.py; every rank its own heap).
        heap.settle()
        if state.is_world_process_zero:
            signal.signal(signal.SIGTERM, self._on_sigterm)
            # A resume goes back to its checkpoint: steps logged after it are logged again, not twice.
            kept = []
            if self.metrics_path.exists():
                kept = [
                    line
                    for line in self.metrics_path.read_text("utf-8").splitlines()
                    if line.strip() and json.loads(line)["step"] <= state.global_step
                ]
            self.metrics_path.write_text("".join(f"{line}\n" for line in kept), "utf-8")
            registry.truncate_metrics(self.run_id, state.global_step)
            try:
                set_status(
                    self.run_dir, self.run_id, "training", total_steps=state.max_steps, step=state.global_step
                )
            except Cancelled:
                self.stop_requested = True  # cancelled while it loaded: stop after the first step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        point = point_from_logs(state.global_step, logs)
        if point is None:
            return
        with self.metrics_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(point) + "\n")
        registry.record_metric(self.run_id, point)
        latest = {k: v for k, v in point.items() if k != "step"}
        job = registry.get_job(self.run_id)
        registry.update_job(
            self.run_id,
            step=state.global_step,
            epoch=point.get("epoch", job.epoch),
            metrics={**(job.metrics or {}), **latest},
        )
        emit_status(self.run_dir, registry.get_job(self.run_id), "training", metrics=latest)

    def on_step_end(self, args, state, control, **kwargs):
        if self.stop_requested:
            control.should_save = True
            control.should_training_stop = True


class RegistryPlugin(BasePlugin):
    def __init__(self):
        super().__init__()
        self.callback: RegistryCallback | None = None
        self.evaluated = False

    def load_datasets(self, cfg, preprocess: bool = False):
        """None: Axolotl loads the data itself. This hook runs only in `axolotl train` and `preprocess`,
        before the data; never where a config is merely validated (brightrun/heap.py)."""
        heap.settle()
        return None

    def get_input_args(self) -> str:
        return "jobs.axolotl_plugin.RegistryArgs"

    def post_train(self, cfg, model):
        """Held-out base vs adapter on the model in memory (Axolotl calls this hook twice: once is enough)."""
        import torch.distributed as dist

        if (
            self.evaluated
            or not cfg.brightrun_run_id
            or cfg.brightrun_heldout_eval is False
            or self.callback is None
            or self.callback.stop_requested
        ):
            return
        self.evaluated = True
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return  # a sharded model cannot be scored by one rank; `just eval RUN` does it afterwards
        from jobs import evaluate

        run_dir = Path(cfg.brightrun_run_dir)
        try:
            eval_cfg = evaluate.config_of(run_dir)
        except ValueError:
            return
        evaluate.write(run_dir, evaluate.compare_loaded(model, evaluate.load_tokenizer(eval_cfg), eval_cfg))

    def post_model_load(self, cfg, model):
        if cfg.brightrun_run_id and os.environ.get("RANK", "0") == "0":  # every rank loads; one change
            try:
                set_status(cfg.brightrun_run_dir, cfg.brightrun_run_id, "model_loaded")
            except Cancelled:
                pass  # training stops at its first step (on_train_begin sees the same)

    def add_callbacks_post_trainer(self, cfg, trainer):
        if not cfg.brightrun_run_id:
            return []
        self.callback = RegistryCallback(cfg.brightrun_run_id, cfg.brightrun_run_dir)
        return [self.callback]
