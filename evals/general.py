"""General ability kept: base model and adapter on the same lm-evaluation-harness tasks, and the difference.

Each model is scored through lm-eval's own back-ends with `lm_eval.simple_evaluate`, one model in memory
for both sides (the base loaded once, as the answers do: a 70B base loads in minutes and two of them do
not fit one GPU):
- `hf`: lm-eval's HFLM over the model evals/generate.py's load_with_adapters builds (the PEFT model with
  the adapter, the base's turns under `disable_adapter()`). Built here and not from lm-eval's model
  arguments because lm-eval 0.4.11 passes `load_in_4bit`/`bnb_4bit_*` straight to `from_pretrained`, which
  transformers 5 refuses (LlamaForCausalLM.__init__() got an unexpected keyword argument 'load_in_4bit'),
  and a `quantization_config` argument collides with the one HFLM passes itself (lm_eval/models/
  huggingface.py, HFLM.__init__ -> _create_model).
- `vllm`: lm-eval's VLLM, one engine with the adapter enabled (`lora_local_path`); the base's turns with
  its `lora_request` set to None, the adapter's with the adapter's (lm_eval/models/vllm_causallms.py reads
  `self.lora_request` for every request). One engine gets vLLM's usual share of the GPU instead of two
  engines sharing it: a 4-bit 70B (~37 GiB) does not fit in half of an 80 GB card.
Either loads the base at full precision or in 4-bit (`quantization`, evals/quantize.py). By
default the task is `brightrun_ifeval` (evals/tasks/: 25 IFEval prompts kept in the repo, scored by
lm-eval's IFEval rule-based checkers), so nothing is downloaded; the hub's tasks are one argument away
(`tasks=["ifeval", "mmlu", "arc_easy", "hellaswag"]`, with `limit`), on a machine that can fetch them.

Why not Axolotl's integration (`axolotl.integrations.lm_eval`, `lm_eval_tasks` / `lm_eval_post_train`):
it builds an `lm_eval` command line and runs it in a subprocess after training, for one model only:
`pretrained=` the output folder (or `lm_eval_model`), which for a LoRA run holds the adapter and not a
model, no `peft=` argument, so no base-vs-adapter pair; `dtype` is always bfloat16 or float16 (slow or
unsupported on CPU); no `--limit`, no `--include_path` (so no task kept in the repo), no vLLM back-end;
and the results land in a timestamped folder to be found and parsed again. What it does, calling lm-eval
on the run's model, is done here with lm-eval's Python entry point, which returns the scores and their
standard errors; the back-ends, task format and metrics are lm-eval's own, not wired a second way.

Scores are reported in percentage points (lm-eval's fraction × 100), with lm-eval's standard error;
delta = adapter − base. Both models answer the same items, so the comparison is paired (issue 27): lm-eval's
per-item results are kept (`log_samples`), each item's difference adapter − base, and a 95% bootstrap
interval of their mean over items (`paired`), which the verdict's non-inferiority gate reads. The unpaired
sqrt(se_base² + se_adapter²) is still reported as `delta_stderr`, for comparison.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import math
import time
from pathlib import Path

from brightrun.errors import ConfigError
from evals import quantize, stats

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
OFFLINE_TASK = "brightrun_ifeval"
BACKENDS = {"hf": "hf", "vllm": "vllm"}  # our name -> lm-eval's model name
# The headline metric of each task we name; any other task reports its first accuracy-like metric.
METRICS = {
    "brightrun_ifeval": "prompt_level_strict_acc",
    "ifeval": "prompt_level_strict_acc",
    "mmlu": "acc",
    "arc_easy": "acc",
    "arc_challenge": "acc_norm",
    "hellaswag": "acc_norm",
}


def score(
    base_model: str,
    adapter_dir: Path,
    tasks: list[str] | None = None,
    limit: int | None = None,
    backend: str = "hf",
    device: str = "cpu",
    *,
    batch_size: int = 1,
    max_gen_toks: int | None = None,
    apply_chat_template: bool = True,
    sides: dict[str, Path | None] | None = None,
    quantization: dict | None = None,
) -> dict:
    """{"tasks": {...: {"metric", "base", "base_stderr", "adapter", "adapter_stderr", "delta",
    "delta_stderr", "n"}}, "backend", "limit", "wall_s", "lm_eval_version"}; default task = the offline
    repo task. sides: the two models scored, name -> adapter folder (None: the base alone), default
    {"base": None, "adapter": adapter_dir}; the A/B passes {"A": folder_a, "B": folder_b}, and then the
    rows say "A", "B" and delta = B - A. quantization: the base's precision (evals/quantize.py choose())."""
    tasks = list(tasks or [OFFLINE_TASK])
    if backend not in BACKENDS:
        raise ConfigError(f"lm-eval back-end {backend!r}: expected one of {', '.join(BACKENDS)}")
    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ConfigError(
            "lm-eval's vllm back-end needs vLLM, which is not installed here; it runs on a GPU machine "
            "(pip install vllm), or choose backend hf"
        )
    sides = {"base": None, "adapter": adapter_dir} if sides is None else sides
    if len(sides) != 2:
        raise ConfigError(f"general ability compares two models, not {len(sides)}")
    for folder in (Path(f) for f in sides.values() if f is not None):
        if not (folder / "adapter_config.json").is_file():
            raise ConfigError(f"{folder}: no adapter_config.json (not a PEFT adapter folder)")

    import lm_eval
    from lm_eval.tasks import TaskManager

    # Indexing lm-eval's ~10,000 task files takes seconds: only when a hub task is asked for.
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=set(tasks) != {OFFLINE_TASK})
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ConfigError(f"unknown lm-eval task(s): {', '.join(unknown)}")

    start = time.perf_counter()
    runs, walls = {}, {}
    lm, use = _model(base_model, sides, backend, device, batch_size, quantization)
    for name, folder in sides.items():
        t0 = time.perf_counter()
        with use(name, folder):
            runs[name] = lm_eval.simple_evaluate(
                model=lm,
                tasks=tasks,
                limit=limit,
                task_manager=manager,
                apply_chat_template=apply_chat_template,
                gen_kwargs={"max_gen_toks": max_gen_toks} if max_gen_toks else None,
                log_samples=True,  # per-item results: the paired difference (compare)
            )
        walls[name] = round(time.perf_counter() - t0, 2)
    del lm, use
    from evals.generate import release

    release()  # lm-eval's model freed before anything loads the base again (an A/B: --against)
    return {
        "tasks": {task: compare(task, runs, tuple(sides)) for task in tasks},
        "backend": backend,
        "device": "cuda" if backend == "vllm" else device,
        "limit": limit,
        "apply_chat_template": apply_chat_template,
        "max_gen_toks": max_gen_toks,
        "unit": "percentage points",
        "models": {name: {"wall_s": wall} for name, wall in walls.items()},
        "wall_s": round(time.perf_counter() - start, 2),
        "lm_eval_version": importlib.metadata.version("lm_eval"),
        "quantization": quantization or quantize.NONE,
    }


def hf_dtype(device: str) -> str:
    # float32 on CPU: "auto" can pick bfloat16, slow on most CPUs (lm-eval's hf default is "auto").
    return "float32" if device == "cpu" else "auto"


def vllm_args(base_model: str, sides: dict, quantization: dict | None = None) -> dict:
    """lm-eval's VLLM arguments: one engine for every side, LoRA enabled with the largest rank among the
    adapters (lora_local_path names the first; the sides switch by lora_request, see _model)."""
    from evals.generate import vllm_lora_rank

    folders = [Path(f) for f in sides.values() if f is not None]
    rank = max(json.loads((f / "adapter_config.json").read_text())["r"] for f in folders)
    return {
        "pretrained": str(base_model),
        # One engine in the process, so vLLM's own default share (vllm EngineArgs gpu_memory_utilization).
        "gpu_memory_utilization": 0.9,
        "seed": 0,
        "lora_local_path": str(folders[0]),
        # vLLM accepts only some ranks (a rank 12 adapter needs max_lora_rank 16): the same rule as answers.
        "max_lora_rank": vllm_lora_rank(rank),
        **quantize.vllm_kwargs(quantization),
    }


def _model(base_model, sides, backend, device, batch_size, quantization):
    """(lm-eval model, use): `use(name, folder)` is a context in which the model is that side."""
    if backend == "vllm":
        from lm_eval.models.vllm_causallms import VLLM
        from vllm.lora.request import LoRARequest

        lm = VLLM(**vllm_args(base_model, sides, quantization), batch_size=batch_size)
        requests = {
            name: LoRARequest(name, i, str(folder)) if folder is not None else None
            for i, (name, folder) in enumerate(sides.items(), 1)
        }

        def use_vllm(name, folder):
            lm.lora_request = requests[name]
            return contextlib.nullcontext()

        return lm, use_vllm
    from lm_eval.models.huggingface import HFLM

    from evals.generate import load_with_adapters, side

    model = load_with_adapters(base_model, sides, device, quantization, dtype=hf_dtype(device))
    lm = HFLM(pretrained=model, tokenizer=str(base_model), batch_size=batch_size)
    return lm, lambda name, folder: side(model, name, folder)


def compare(task: str, runs: dict[str, dict], names: tuple[str, str] = ("base", "adapter")) -> dict:
    """One task's row: each model's score and standard error, delta = second - first."""
    first, second = names
    metric = METRICS.get(task) or first_metric(runs[first]["results"][task])
    b, b_se = value(runs[first], task, metric)
    a, a_se = value(runs[second], task, metric)
    both = b_se is not None and a_se is not None
    n = (runs[first].get("n-samples") or {}).get(task, {}).get("effective")
    per_item = paired_items(runs, task, metric, names)
    diffs = [(row["doc_id"], row[second] - row[first]) for row in per_item]
    return {
        "metric": metric,
        first: b,
        f"{first}_stderr": b_se,
        second: a,
        f"{second}_stderr": a_se,
        "delta": round(a - b, 4),
        "delta_stderr": round(math.sqrt(b_se**2 + a_se**2), 4) if both else None,
        "n": n,
        "paired": stats.interval(diffs) if per_item else None,
        "per_item": per_item,
    }


def paired_items(runs: dict[str, dict], task: str, metric: str, names: tuple[str, str]) -> list[dict]:
    """[{"doc_id", first, second}] in points, for the items both models were scored on; [] when lm-eval
    kept no per-item number for this metric (a corpus-level metric such as BLEU has none)."""
    found = []
    for name in names:
        samples = (runs[name].get("samples") or {}).get(task) or []
        found.append(
            {
                s["doc_id"]: 100.0 * float(s[metric])
                for s in samples
                if isinstance(s.get(metric), bool | int | float)
            }
        )
    first, second = found
    return [
        {"doc_id": doc, names[0]: first[doc], names[1]: second[doc]} for doc in sorted(first) if doc in second
    ]


def value(run: dict, task: str, metric: str) -> tuple[float, float | None]:
    """A metric and its standard error in points; lm-eval writes "N/A" where it has no standard error."""
    row = run["results"][task]
    key = f"{metric},none"
    if key not in row:
        raise ConfigError(f"lm-eval task {task} has no metric {metric} (it has: {', '.join(sorted(row))})")
    se = row.get(f"{metric}_stderr,none")
    return round(100 * row[key], 4), round(100 * se, 4) if isinstance(se, int | float) else None


def first_metric(row: dict) -> str:
    names = [
        k.split(",")[0] for k, v in row.items() if "," in k and "_stderr" not in k and isinstance(v, float)
    ]
    if not names:
        raise ConfigError(f"lm-eval returned no numeric metric: {sorted(row)}")
    return next((n for n in names if n.startswith("acc")), names[0])
