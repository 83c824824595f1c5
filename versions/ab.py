"""A/B between two versions (or runs) of a model: `just ab NAME@vA NAME@vB` (`python -m versions ab A B`).

Both adapters answer the same held-out prompts (evals/prompts.py, the same stratified sample), greedily, on
one base in memory (evals/generate.py with two sides); the evaluation's judge (evals/judge.py, no second
judge) grades each answer and compares A with B in both orders; lm-eval scores both on the same general
tasks (evals/general.py). The win rate is B's over A (win 1, tie 0.5, loss 0) with the seeded bootstrap
95% interval (evals/stats.py), as the evaluation's win rate is the adapter's over the base.

Refused before any model loads, writing nothing (exit 2): an unknown version or run, the same run or the
same adapter twice, runs trained on other data (another conversion: their held-out prompts and losses
are not the same test), adapters on different base models (one base is loaded for both).

The files (prompts, answers, generation, judgements, judge, general, ab.json) go to runs/ab/<id>/, written
whole (brightrun/files.write_folder); then the row in ab_tests (migration 0006) that `just model NAME` and
GET /api/models/{name} list under each version.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from brightrun.files import write_folder
from jobs.registry import TrainingJob, now
from jobs.runfolder import sha256_file
from versions import abtests, registry, sides

AB_DIR = "ab"  # under the runs folder: runs/ab/<id>/
NAMES = ("A", "B")


@dataclass
class Options:
    limit: int = 40
    backend: str = "transformers"
    device: str = "cpu"
    max_new_tokens: int | None = None
    general: bool = True
    tasks: list[str] | None = None
    general_limit: int | None = None
    general_max_tokens: int | None = None
    data: Path | None = None  # the converted data folder, when neither run folder is here to name it
    seed: int = 0
    by: str = "unknown"
    # The base's precision (evals/quantize.py choose()): an evaluation's --against passes its own; else
    # `quantize` (none | 4bit), and without it as B's run trained (a QLoRA 70B's base in 4-bit, as `evals
    # run` does), decided once B's files are here and before any model loads.
    quantization: dict | None = None
    quantize: str | None = None


def check(engine: Engine, runs_dir: Path, ref_a: str, ref_b: str, opts: Options):
    """(side A, side B, the converted data folder): every refusal is here, before anything is loaded or
    written. A VersionError names the ref it is about."""
    if ref_a == ref_b:
        raise registry.VersionError(f"{ref_a} twice: an A/B compares two different versions or runs")
    a, b = sides.lookup(engine, runs_dir, ref_a), sides.lookup(engine, runs_dir, ref_b)
    if a.run_id == b.run_id:
        raise registry.VersionError(f"{ref_a} and {ref_b} are the same run ({a.run_id}): nothing to compare")
    if a.adapter_sha256 == b.adapter_sha256:
        raise registry.VersionError(
            f"{ref_a} and {ref_b} hold the same adapter (sha256 {a.adapter_sha256[:12]}): nothing to compare"
        )
    for side in (a, b):
        if side.data_sha256 is None:
            raise registry.VersionError(f"{side.ref}: its training data is not recorded (no data sha256)")
    if a.data_sha256 != b.data_sha256:
        raise registry.VersionError(
            f"{ref_a} was trained on data {a.data_sha256[:12]} and {ref_b} on data {b.data_sha256[:12]}: "
            "an A/B needs the same conversion (the same held-out prompts and val.jsonl); "
            "compare versions trained on the same converted data"
        )
    if a.base_model != b.base_model:
        raise registry.VersionError(
            f"{ref_a} is on base {a.base_model} and {ref_b} on {b.base_model}: the A/B loads one base "
            "model for both adapters"
        )
    with Session(engine) as s:
        for side in (a, b):
            if s.get(TrainingJob, side.run_id) is None:
                raise registry.NotFound(f"{side.ref}: run {side.run_id} is not in the registry")
    if opts.quantize is not None:  # asked: refused now if it cannot run here (unasked: once B's files are in)
        from evals import quantize

        quantize.check(quantize.choose(opts.quantize, None), opts.backend, opts.device)
    return a, b, data_folder(a, b, opts.data, runs_dir)


def data_folder(a: sides.Side, b: sides.Side, given: Path | None, runs_dir: Path) -> Path:
    """The converted data both trained on: --data, else the folder a run's run.json names (a version's
    too, when its run folder is here), checked by its manifest's sha256 against the recorded one."""
    want = a.data_sha256
    if given is not None:
        manifest = Path(given) / "manifest.json"
        if not manifest.is_file() or sha256_file(manifest) != want:
            raise registry.VersionError(
                f"--data {given}: not the converted data {a.ref} and {b.ref} were trained on "
                f"(its manifest.json sha256 must be {want})"
            )
        return Path(given)
    for side in (a, b):
        lineage = side.lineage
        if not lineage and side.version is not None:
            run_json = Path(runs_dir) / side.run_id / "run.json"
            lineage = json.loads(run_json.read_text("utf-8")) if run_json.is_file() else {}
        folder = (lineage.get("data") or {}).get("dir")
        if folder and (Path(folder) / "manifest.json").is_file():
            if sha256_file(Path(folder) / "manifest.json") == want:
                return Path(folder)
    raise registry.VersionError(
        f"the held-out prompts: the converted data {a.ref} and {b.ref} were trained on is not here (or was "
        f"converted again since); pass --data DIR, the folder whose manifest.json has sha256 {want}"
    )


def heldout_loss(side: sides.Side) -> tuple[float | None, str]:
    """The adapter's loss on val.jsonl as its own evaluation or training recorded it, and where from. Both
    sides trained on the same conversion (checked), so the two losses are on the same val.jsonl."""
    evaluation = side.folder / "eval" / "heldout.json"
    if evaluation.is_file():
        loss = json.loads(evaluation.read_text("utf-8")).get("adapter_loss")
        if loss is not None:
            return loss, "eval/heldout.json"
    training = side.folder / "eval.json"
    if training.is_file():
        return json.loads(training.read_text("utf-8"))["adapter"]["loss"], "eval.json (training)"
    for gate in ((side.version.scores if side.version else None) or {}).get("gates") or []:
        if gate.get("gate") == "heldout_loss" and gate.get("adapter") is not None:
            return gate["adapter"], "the version's recorded evaluation"
    return None, "not recorded (evaluate the run: `just eval RUN`)"


def describe(side: sides.Side) -> dict:
    loss, source = heldout_loss(side)
    v = side.version
    return {
        "ref": side.ref,
        "run_id": side.run_id,
        "version_id": v.id if v else None,
        "model": v.model_name if v else None,
        "version": v.version if v else None,
        "adapter_sha256": side.adapter_sha256,
        "base_model": side.base_model,
        "files": "store (cache)" if side.downloaded else "run folder",
        "heldout_loss": loss,
        "heldout_loss_from": source,
    }


def new_id() -> str:
    return f"{now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def run_ab(
    engine: Engine, runs_dir: Path | str, ref_a: str, ref_b: str, opts: Options, settings, say=print
) -> dict:
    """The whole A/B; settings: the judge's (evals.judge.JudgeSettings) or None (judge skipped).
    Returns ab.json."""
    from evals import general, generate, judge, prompts, quantize
    from evals.run import dumps, stage_files

    runs_dir = Path(runs_dir)
    a, b, data = check(engine, runs_dir, ref_a, ref_b, opts)
    timings, started = {}, time.monotonic()

    def lap(stage: str) -> None:
        nonlocal started
        timings[stage] = round(time.monotonic() - started, 2)
        say(f"[ab] {stage}: {timings[stage]:.1f} s")
        started = time.monotonic()

    records, profile = prompts.load_heldout(data)
    chosen = prompts.select(records, opts.limit, opts.seed)
    for side in (a, b):
        sides.materialize(side, runs_dir, say=say)
    if opts.quantization is None:
        opts.quantization = quantize.choose(opts.quantize, b.config(), f"{b.ref}'s config.yaml")
    quantize.check(opts.quantization, opts.backend, opts.device)  # a plan that cannot run here: exit 2
    lap("prompts and files")
    pair = {"A": a.adapter_dir, "B": b.adapter_dir}
    say(f"[ab] {len(chosen)} held-out prompts; answers of {a.ref} (A) and {b.ref} (B) on {a.base_model}")
    answers, generation = generate.answer(
        chosen,
        a.base_model,
        a.adapter_dir,
        opts.backend,
        opts.max_new_tokens,
        opts.device,
        sides=pair,
        quantization=opts.quantization,
    )
    lap("answers")
    if settings is None:
        judgements, judged = [], {"skipped": "JUDGE_BASE_URL is not set (see docs/evaluation.md)"}
        say("[ab] judge skipped: JUDGE_BASE_URL is not set")
    else:
        say(f"[ab] judge {settings.model}: both answers graded, A vs B in both orders")
        judgements, judged = judge.judge_all(
            chosen, answers, profile, settings, models=NAMES, references=False
        )
    lap("judge")
    if opts.general:
        say("[ab] general ability (lm-eval)")
        scores = general.score(
            a.base_model,
            a.adapter_dir,
            opts.tasks,
            opts.general_limit,
            "vllm" if opts.backend == "vllm" else "hf",
            opts.device,
            max_gen_toks=opts.general_max_tokens,
            sides=pair,
            quantization=opts.quantization,
        )
    else:
        scores = {"skipped": "--no-general"}
    lap("general")
    pairwise = {} if judged.get("skipped") else judged["pairwise"]
    result = {
        "id": new_id(),
        "a": describe(a),
        "b": describe(b),
        "data_sha256": a.data_sha256,
        "n_prompts": len(chosen),
        "seed": opts.seed,
        "judge": judged.get("judge") or {"skipped": judged.get("skipped")},
        "win_rate": pairwise.get("win_rate"),  # B over A
        "ci95": pairwise.get("ci95"),
        "pairwise": pairwise or None,
        "criteria": None if judged.get("skipped") else judged["criteria"],
        "general": None if scores.get("skipped") else scores["tasks"],
        "timings_s": timings,
        "created_by": opts.by,
        "created_at": now().isoformat(timespec="seconds") + "Z",
    }
    files = {**stage_files(chosen, answers, generation, judgements, judged, scores), "ab.json": dumps(result)}
    folder = runs_dir / AB_DIR / result["id"]
    folder.parent.mkdir(parents=True, exist_ok=True)
    write_folder(folder, files)
    abtests.record(engine, result, str(folder))
    return result


def report(result: dict) -> list[str]:
    """The lines `python -m versions ab` prints."""
    a, b = result["a"], result["b"]
    lines = [f"A/B {result['id']}: {a['ref']} (A) vs {b['ref']} (B), {result['n_prompts']} held-out prompts"]
    pw = result.get("pairwise")
    if pw is None:
        lines.append(f"  judge: skipped ({result['judge'].get('skipped')})")
    elif result["win_rate"] is None:
        lines.append(f"  judge: no pair scored ({pw['unscored']} unscored): no win rate")
    else:
        lo, hi = result["ci95"]
        lines.append(
            f"  judge: B over A win rate {result['win_rate']:.2f} [{lo:.2f}, {hi:.2f}] over "
            f"{pw.get('n_conversations', '?')} conversation(s) (each order one judgement: B {pw['B_wins']}, "
            f"A {pw['A_wins']}, ties {pw['ties']}, unscored {pw['unscored']}; same verdict both orders "
            f"{pw.get('position_consistency')}, first-position rate {pw['first_position_rate']})"
        )
    loss = lambda s: f"{s['heldout_loss']:.4f}" if s["heldout_loss"] is not None else "-"  # noqa: E731
    sources = f"A: {a['heldout_loss_from']}; B: {b['heldout_loss_from']}"
    lines.append(f"  held-out loss: A {loss(a)}  B {loss(b)}  ({sources})")
    for task, row in (result.get("general") or {}).items():
        paired = row.get("paired") or {}
        ci = (
            " [{:+.1f}, {:+.1f}] paired over {} items".format(*paired["ci95"], paired["n"])
            if paired.get("ci95")
            else ""
        )
        lines.append(f"  general {task}: A {row['A']}  B {row['B']}  delta {row['delta']:+}{ci} points")
    return lines
