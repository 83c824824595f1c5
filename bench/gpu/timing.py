"""An Axolotl plugin for the GPU benchmark: per optimizer step, wall seconds (after a device sync) and
the tokens it processed; at the end, peak memory. Written to `bench_out` as JSON.

Processed tokens are all real tokens of the batch (the attention mask is non-zero; with sample packing
Axolotl's collator numbers the packed sequences 1..k and leaves padding at 0), not only the trained
ones: Axolotl's own tokens/s counts trained tokens. Trained tokens (labels != -100) are kept too.
Loaded with PYTHONPATH at the repo root: `plugins: [..., bench.gpu.timing.TimingPlugin]`.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import torch
from axolotl.integrations.base import BasePlugin
from pydantic import BaseModel
from transformers import TrainerCallback

from brightrun import heap


class TimingArgs(BaseModel):
    bench_out: str | None = None


def count_tokens(inputs: dict) -> tuple[int, int]:
    """(processed, trained) tokens of one micro-batch."""
    mask = inputs.get("attention_mask")
    ids = inputs["input_ids"]
    processed = int((mask != 0).sum()) if mask is not None and mask.dim() == ids.dim() else ids.numel()
    labels = inputs.get("labels")
    trained = int((labels != -100).sum()) if labels is not None else 0
    return processed, trained


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class TimingCallback(TrainerCallback):
    def __init__(self, out: str):
        self.out = Path(out)
        self.steps: list[dict] = []
        self.tokens = [0, 0]
        self.started = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        sync()
        self.tokens = [0, 0]
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        sync()
        seconds = time.perf_counter() - self.started
        self.steps.append(
            {
                "step": state.global_step,
                "seconds": seconds,
                "tokens": self.tokens[0],
                "trained": self.tokens[1],
            }
        )

    def on_train_end(self, args, state, control, **kwargs):
        cuda = torch.cuda.is_available()
        result = {
            "device": torch.cuda.get_device_name(0) if cuda else "cpu",
            "peak_allocated_bytes": torch.cuda.max_memory_allocated() if cuda else None,
            "peak_reserved_bytes": torch.cuda.max_memory_reserved() if cuda else None,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "steps": self.steps,
        }
        self.out.write_text(json.dumps(result, indent=1) + "\n")


class TimingPlugin(BasePlugin):
    def load_datasets(self, cfg, preprocess: bool = False):
        heap.settle()  # as every run's own plugin does (jobs/axolotl_plugin.py): timed as runs go
        return None

    def get_input_args(self) -> str:
        return "bench.gpu.timing.TimingArgs"

    def add_callbacks_post_trainer(self, cfg, trainer):
        if not cfg.bench_out:
            return []
        callback = TimingCallback(cfg.bench_out)
        step = trainer.training_step

        def counted(model, inputs, *args, **kwargs):
            processed, trained = count_tokens(inputs)
            callback.tokens[0] += processed
            callback.tokens[1] += trained
            return step(model, inputs, *args, **kwargs)

        trainer.training_step = counted  # every micro-batch of the optimizer step passes here
        return [callback]
