"""One run's evaluation, stage by stage: held-out prompts, answers, the judge, general ability, the verdict.

It reads a finished run folder and writes runs/<id>/eval/ and nothing else in the folder but report.html
(rewritten with the evaluation in it) and the registry row's verdict. eval/ is built in a temporary
sibling and renamed into place at the end, so a folder named eval/ is always a whole evaluation: an
interrupted or failed evaluation leaves the previous one, or none.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from brightrun.errors import ConfigError
from brightrun.files import write_folder
from jobs.runfolder import check_run_id, sha256_file

EVAL_DIR = "eval"


@dataclass
class Options:
    limit: int = 40  # held-out prompts, stratified by emotional arc
    backend: str = "transformers"  # answers: transformers (CPU) | vllm (GPU)
    device: str = "cpu"
    max_new_tokens: int | None = None  # None: to the end of turn, at most generate.CAP
    judge: bool = True  # False: the judge gates are not_run
    general: bool = True  # False: the general-ability gate is not_run
    tasks: list[str] | None = None  # lm-eval tasks; None: the offline task shipped in evals/tasks/
    general_limit: int | None = None  # lm-eval items per task
    general_max_tokens: int | None = None  # lm-eval's max_gen_toks for generative tasks (None: the task's)
    gates: Path | None = None  # default evals/gates.yaml
    quantize: str | None = None  # the base's precision: none | 4bit; None: as the run trained (quantize.py)
    against: str | None = None  # a version to A/B this run against (NAME@production): the vs_production gate
    seed: int = 0
    timings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # said with the verdict (e.g. a local demo judge)
    judge_ready: Callable[[], None] | None = None  # a local judge still starting: wait for it here


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def finished_run(runs_dir: Path, run_id: str) -> tuple[Path, dict, dict]:
    """The run folder, its lineage (run.json) and its config; ConfigError unless it holds an adapter."""
    check_run_id(run_id)
    run_dir = Path(runs_dir) / run_id
    if not (run_dir / "run.json").is_file():
        raise ConfigError(f"{run_dir}: no run folder (see `just runs`)")
    if not (run_dir / "output" / "adapter_config.json").is_file():
        raise ConfigError(
            f"{run_dir}: the run has no adapter yet (output/adapter_config.json); finish it first"
        )
    lineage = json.loads((run_dir / "run.json").read_text("utf-8"))
    path = run_dir / "config.yaml"
    try:
        config = yaml.safe_load(path.read_text("utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: the run's Axolotl config is unreadable ({exc})") from None
    if not isinstance(config, dict) or not config.get("base_model"):
        raise ConfigError(f"{path}: no base_model (not the run's Axolotl config)")
    return run_dir, lineage, config


def data_dir_of(lineage: dict) -> Path:
    """The converted data the run trained on, checked against the manifest sha256 the run recorded: an
    evaluation on data re-converted since would judge prompts the run may have trained on."""
    data = Path(lineage["data"]["dir"])
    manifest = data / "manifest.json"
    if not manifest.is_file():
        raise ConfigError(f"{data}: the run's converted data is gone (no manifest.json); convert it again")
    if sha256_file(manifest) != lineage["data"]["manifest_sha256"]:
        raise ConfigError(
            f"{manifest}: changed since the run (sha256 differs from run.json's data.manifest_sha256): the "
            "held-out prompts may not be the run's; convert the run's input again into another folder"
        )
    return data


def heldout_losses(run_dir: Path) -> dict | None:
    """Base and adapter loss on val.jsonl: computed in training (eval.json) or, failing that, again."""
    from jobs import evaluate

    path = run_dir / "eval.json"
    if not path.is_file():
        say("held-out loss: not computed in training; loading base and adapter again")
        try:
            evaluate.evaluate(run_dir)
        except ValueError as exc:
            say(f"held-out loss skipped: {exc}")
            return None
    result = json.loads(path.read_text("utf-8"))
    return {"base_loss": result["base"]["loss"], "adapter_loss": result["adapter"]["loss"]}


def timed(opts: Options, stage: str):
    """A context manager that prints a stage's start and its wall time, and keeps it for eval/timings."""

    class _Timer:
        def __enter__(self):
            say(f"[eval] {stage} ...")
            self.t = time.monotonic()

        def __exit__(self, *exc):
            opts.timings[stage] = round(time.monotonic() - self.t, 2)
            if exc[0] is None:
                say(f"[eval] {stage}: {opts.timings[stage]:.1f} s")

    return _Timer()


def preflight(run_id: str, runs_dir: Path | str, opts: Options) -> tuple[Path, dict, dict, dict, dict]:
    """What fails before any model loads (or a local judge starts): the gates file, the run folder, the
    base's precision (the flag, else the run's config.yaml) and whether it can run here and fits the GPU.
    Returns (run_dir, lineage, config, gates, quantization)."""
    from evals import quantize, verdict

    gates = verdict.load_gates(opts.gates)
    run_dir, lineage, config = finished_run(Path(runs_dir), run_id)
    quant = quantize.choose(opts.quantize, config, str(run_dir / "config.yaml"))
    quantize.check(quant, opts.backend, opts.device)
    if opts.against:  # an unknown version, the same run, other data or another base: refused now
        from versions import ab

        side, _, _ = ab.check(_registry(), Path(runs_dir), opts.against, run_id, ab_options(opts))
        # Resolved once: NAME@production may move while this evaluation runs; the A/B is against what was
        # in production when it started, and says which version that was.
        opts.against = side.ref
    plan = memory_plan(run_dir, config, opts, quant)
    if plan is not None:
        quant = {**quant, "memory_plan": plan}
        say(f"[eval] memory plan: {plan['total_gib']:.1f} of {plan['budget_gib']:.1f} GiB ({quant['mode']})")
    return run_dir, lineage, config, gates, quant


def _registry():
    from jobs import registry

    return registry.engine()


def ab_options(opts: Options, quant: dict | None = None):
    """The A/B against production as this evaluation asks it: the same prompts and answer settings; no
    lm-eval (general ability is the evaluation's own gate, against the base)."""
    from versions import ab

    return ab.Options(
        limit=opts.limit,
        backend=opts.backend,
        device=opts.device,
        max_new_tokens=opts.max_new_tokens,
        general=False,
        seed=opts.seed,
        by="evals run",
        quantization=quant,
    )


def against_production(
    run_id: str, runs_dir: Path | str, opts: Options, settings, quant: dict
) -> dict | None:
    """ab.json of opts.against (A) vs this run (B), recorded in ab_tests like any A/B (so `promote` finds
    it); None when not asked. Without a judge there is nothing to compare: no answers are generated."""
    if not opts.against:
        return None
    if settings is None:
        return {"a": {"ref": opts.against}, "judge": {"skipped": "no judge: the A/B needs one"}}
    from versions import ab

    with timed(opts, "vs_production"):
        try:
            asked = ab_options(opts, quant)
            return ab.run_ab(_registry(), runs_dir, opts.against, run_id, asked, settings, say)
        except Exception as exc:  # noqa: BLE001 -- hours of answers, judging and lm-eval are not thrown away
            why = f"the A/B against {opts.against} failed ({type(exc).__name__}: {exc})"
            say(f"[eval] {why}; the evaluation is written without it")
            return {"a": {"ref": opts.against}, "judge": {"skipped": why}}


def gpu_gib(opts: Options) -> float | None:
    """The GPU's memory in GiB when this evaluation runs on one torch can see; None on a CPU."""
    if opts.backend != "vllm" and not str(opts.device).startswith("cuda"):
        return None
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        index = torch.device(opts.device).index if str(opts.device).startswith("cuda") else None
        return torch.cuda.get_device_properties(index or 0).total_memory / 1024**3
    except (ImportError, RuntimeError):
        return None


def memory_plan(run_dir: Path, config: dict, opts: Options, quant: dict) -> dict | None:
    """evals/memory.py's plan for the answers on this GPU (the largest step: a batch, or vLLM's engine),
    refused when over; None when no GPU memory figure or no model shape is known (not checked)."""
    from evals import generate, memory

    total = gpu_gib(opts)
    if total is None:
        return None
    try:
        from transformers import AutoConfig

        arch = memory.arch_from_hf_config(AutoConfig.from_pretrained(config["base_model"]).to_dict())
    except (OSError, ValueError, ConfigError) as exc:
        say(f"[eval] memory plan skipped: no model shape ({exc})")
        return None
    adapter = json.loads((run_dir / "output" / "adapter_config.json").read_text("utf-8"))
    modules = adapter.get("target_modules")
    plan = memory.plan(
        arch,
        quant["mode"],
        gpu_gib=total,
        backend="vllm" if opts.backend == "vllm" else "transformers",
        lora_rank=int(adapter["r"]),
        lora_modules=modules if isinstance(modules, list) else memory.PROJECTIONS,
        prompt_tokens=int(config.get("sequence_len") or 4096),  # the run's rows, prompts included, fit it
        new_tokens=opts.max_new_tokens or generate.CAP,
        sequences=generate.BATCH,
    )
    memory.refuse_unless_fits(plan, str(run_dir))
    return plan


def evaluate_run(run_id: str, runs_dir: Path | str = "runs", opts: Options | None = None) -> dict:
    """Every stage, then eval/ in place, the registry's verdict and report.html. Returns verdict.json."""
    from evals import general, generate, judge, prompts, verdict

    opts = opts or Options()
    # A bad gates file, a 4-bit plan on a CPU or a plan over the GPU fail before any model loads.
    run_dir, lineage, config, gates, quant = preflight(run_id, runs_dir, opts)
    data = data_dir_of(lineage)
    settings = judge.JudgeSettings.from_env() if opts.judge else None
    base_model, adapter = config["base_model"], run_dir / "output"

    with timed(opts, "prompts"):
        records, profile = prompts.load_heldout(data)
        chosen = prompts.select(records, opts.limit, opts.seed)
        say(f"[eval] {len(chosen)} of {len(records)} held-out targets, stratified by emotional arc")
    if not chosen:
        raise ConfigError(f"{data}: no held-out target to evaluate (val.jsonl trains nothing)")
    with timed(opts, "heldout_loss"):
        heldout = heldout_losses(run_dir)
    with timed(opts, "answers"):
        answers, generation = generate.answer(
            chosen, base_model, adapter, opts.backend, opts.max_new_tokens, opts.device, quantization=quant
        )
    with timed(opts, "judge"):
        if settings is None:
            why = "--no-judge" if not opts.judge else "JUDGE_BASE_URL is not set (see docs/evaluation.md)"
            judgements, judged = [], {"skipped": why}
            say(f"[eval] judge skipped: {why}")
        else:
            if opts.judge_ready:
                opts.judge_ready()
            judgements, judged = judge.judge_all(chosen, answers, profile, settings)
    with timed(opts, "general"):
        if opts.general:
            scores = general.score(
                base_model,
                adapter,
                opts.tasks,
                opts.general_limit,
                general_backend(opts),
                opts.device,
                max_gen_toks=opts.general_max_tokens,
                quantization=quant,
            )
        else:
            scores = {"skipped": "--no-general"}
    against = against_production(run_id, runs_dir, opts, settings, quant)
    asked = {
        "heldout": heldout,
        "judge": judged,
        "general": scores,
        "n_prompts": len(chosen),
        "n_conversations": len({prompts.conversation_of(p) for p in chosen}),
        "ab": against,
    }
    result = verdict.decide(asked, gates)
    result["run_id"] = run_id
    result["notes"] = opts.notes
    files = {
        **stage_files(chosen, answers, generation, judgements, judged, scores),
        "heldout.json": dumps(heldout or {"skipped": "no held-out loss"}),
        "timings.json": dumps(opts.timings),
        "verdict.json": dumps(result),
    }
    write_eval_dir(run_dir, files)
    record(run_id, result, judged, scores, generation)
    from jobs import report

    say(f"report: {report.write(run_dir)}")
    return result


def general_backend(opts: Options) -> str:
    # lm-eval's own back-ends: "hf" (with the PEFT adapter) beside transformers, "vllm" beside vLLM.
    return "vllm" if opts.backend == "vllm" else "hf"


def stage_files(chosen, answers, generation, judgements, judged, scores) -> dict[str, bytes]:
    """What each stage leaves, by file name: an evaluation's eval/ and an A/B's folder (versions/ab.py)."""
    return {
        "prompts.jsonl": jsonl(chosen),
        "answers.jsonl": jsonl(answers),
        "generation.json": dumps(generation),
        "judgements.jsonl": jsonl(judgements),
        "judge.json": dumps(judged),
        "general.json": dumps(scores),
    }


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def dumps(obj) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def write_eval_dir(run_dir: Path, files: dict[str, bytes]) -> Path:
    """All files into a temporary sibling, then one rename: eval/ is whole or absent (or the previous)."""
    write_folder(run_dir / EVAL_DIR, files)
    return run_dir / EVAL_DIR


def headline(judged: dict, scores: dict, generation: dict) -> dict:
    """What the registry keeps beside the verdict: the figures a person compares runs by."""
    rates = {m: v.get("tokens_per_s") for m, v in generation["models"].items()}
    out: dict = {"generation_tokens_per_s": rates}
    if not judged.get("skipped"):
        out["judge_means"] = {
            c: {m: v[m]["mean"] for m in ("base", "adapter")} for c, v in judged["criteria"].items()
        }
        pw = judged["pairwise"]
        out["win_rate"], out["win_rate_ci95"] = pw["win_rate"], pw["ci95"]
        out["judge_unscored"] = judged.get("unscored")
    if not scores.get("skipped"):
        keys = ("base", "adapter", "delta")
        out["general"] = {t: {k: r.get(k) for k in keys} for t, r in scores["tasks"].items()}
    return out


def record(run_id: str, result: dict, judged: dict, scores: dict, generation: dict) -> None:
    """The verdict on the registry row (the API's job detail and the dashboard read it there)."""
    from jobs import registry

    if registry.get_job(run_id) is None:
        say(f"registry: no row for {run_id}; the verdict is only in eval/verdict.json")
        return
    summary = {"verdict": result["verdict"], "gates": result["gates"], **headline(judged, scores, generation)}
    registry.update_job(run_id, verdict=result["verdict"], evaluation=summary)
