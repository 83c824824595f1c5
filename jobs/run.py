"""One training run, locally: convert if needed, render, preprocess, train, record.

Layout of runs/<run-id>/:
  config.yaml          the exact Axolotl config that runs (rendered, comments and all)
  data-manifest.json   the converter's manifest of the data it trained on
  env.json             git sha, Python and package versions
  run.json             lineage (input sha256 -> data -> config -> adapter) and attempts
  logs/                preprocess.log, train.log
  metrics.jsonl        every logged step, written from inside training (jobs/axolotl_plugin.py)
  output/              Axolotl's output_dir: checkpoint-N/ and the final PEFT adapter
  events.jsonl         status events for WEBHOOK_URL (jobs/webhooks.py), when it is set
  launcher.pid         while a launcher runs it (`jobs cancel` / DELETE signal it)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from axolotl_configs.profiles import Profiles
from brightrun import offline
from brightrun.errors import ConfigError
from jobs import registry, webhooks
from jobs.status import Cancelled, set_status
from jobs.status import emit as emit_status

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INPUT = "data/demo/brightrun-demo.json"
TOKENIZER = "assets/llama3-tokenizer"
PLUGIN = "jobs.axolotl_plugin.RegistryPlugin"
PACKAGES = ("torch", "axolotl", "transformers", "peft", "trl", "accelerate", "datasets", "bitsandbytes")


class RunError(Exception):
    """A failure while running (exit code 1), recorded on the run."""


class NotFound(ConfigError):
    """No such run (the API answers 404)."""


class Conflict(ConfigError):
    """The run is in a state that does not allow this (the API answers 409)."""


RUN_ID = re.compile(r"(?!\.{1,2}$)[0-9A-Za-z._-]{1,64}")  # a folder name: not . or ..


def check_run_id(run_id: str | None) -> None:
    """--run-id names a folder (here, and on a pod's volume): refuse anything else before any work."""
    if run_id is not None and not RUN_ID.fullmatch(run_id):
        raise ConfigError(f"--run-id {run_id!r}: 1-64 characters of 0-9 A-Z a-z . _ - (a folder name)")


# Secrets a started run never needs. The webhook secret is decided per run: jobs/service/start.py run_env.
NOT_FOR_RUNS = (
    "JOBS_API_TOKEN",
    "RUNPOD_API_KEY",
    "RUNPOD_S3_ACCESS_KEY",
    "RUNPOD_S3_SECRET_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "JUDGE_API_KEY",
)


CANCEL_FILE = "cancel-requested"
PID_FILE = "launcher.pid"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ensure_converted(input_file: str, data_dir: str | None) -> str:
    """The converter's output for input_file, converting only when it is missing or stale."""
    src = Path(input_file)
    if not src.is_file():
        raise ConfigError(f"{input_file}: input file not found")
    data_dir = data_dir or f"data/converted/{src.stem}"
    manifest = Path(data_dir) / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text())["input"]["sha256"] == sha256_file(src):
        return data_dir
    from converters import convert, load

    print(f"converting {input_file} -> {data_dir}/", file=sys.stderr)
    try:
        convert.convert(src, data_dir, convert.Options(tokenizer=TOKENIZER))
    except load.InputError as exc:
        raise ConfigError(str(exc)) from None
    return data_dir


def environment_record() -> dict:
    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
    return {
        "git_sha": git.stdout.strip() or None,
        "git_dirty": bool(dirty.stdout.strip()),
        "python": sys.version.split()[0],
        "packages": {name: version(name) for name in PACKAGES},
    }


def child_env(config: dict, db_url: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in NOT_FOR_RUNS}
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"  # the launcher looks for `accelerate` there
    env["DATABASE_URL"] = db_url
    env |= offline.TELEMETRY
    if Path(config["base_model"]).exists():  # a local model needs no hub
        env |= offline.HUB
    if not env.get("WANDB_API_KEY"):
        env |= offline.WANDB
    return env


def axolotl_command(verb: str, config_path: Path, profiles: Profiles, *extra: str) -> list[str]:
    cmd = [str(Path(sys.executable).parent / "axolotl"), verb, str(config_path)]
    if verb == "train" and profiles.hardware["gpu_type"] == "none":
        cmd += ["--launcher", "python"]  # CPU: no accelerate subprocess (17-19 s faster, facts file)
    return cmd + list(extra)


def new_run_id(preset: str, model: str) -> str:
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{preset}-{model}-{secrets.token_hex(2)}"


def prepare(
    preset: str,
    model: str,
    input_file: str = DEFAULT_INPUT,
    data_dir: str | None = None,
    hardware: str | None = None,
    overrides: list[str] | None = None,
    allow_drop: bool = False,
    runs_dir: str = "runs",
    db_url: str | None = None,
    heldout_eval: bool = True,
    run_id: str | None = None,
) -> str:
    """Everything before Axolotl: our checks (exit 2), the estimate, the run folder. No row yet.

    Axolotl's schema is checked in the preprocess subprocess (jobs/preprocess.py), where Axolotl is
    imported anyway; the registry row is created once it accepts the config (execute).
    """
    from axolotl_configs import estimate, render

    check_run_id(run_id)
    profiles = Profiles.load(preset, model, hardware)
    data_dir = ensure_converted(input_file, data_dir) if not data_dir else data_dir
    run_id = run_id or new_run_id(preset, model)
    run_dir = Path(runs_dir) / run_id
    if run_dir.exists():
        raise ConfigError(f"{run_dir} exists: `jobs resume {run_id}` continues it; pick another --run-id")
    rendered = render.render(
        preset,
        model,
        data_dir,
        hardware,
        list(overrides or []) + run_keys(profiles, run_id, str(run_dir), heldout_eval),
        out_path=str(run_dir / "config.yaml"),
        check=False,
        allow_drop=allow_drop,
    )
    est = estimate.estimate(preset, model, data_dir, hardware, rendered=rendered)
    estimate.show(est)

    open_run_folder(run_dir, data_dir)
    render.write(rendered, run_dir / "config.yaml")
    job = {
        "preset": preset,
        "model": model,
        "hardware": profiles.hardware["name"],
        "overrides": list(overrides or []),
        "lines_dropped_for_length": rendered.derived.get("lines_dropped", 0),
        "estimate": {
            "hours": sum(est.hours.values()),
            "cost_on_demand": est.costs["on_demand"],
            "peak_memory_gb": est.peak_gb,
        },
    }
    write_json(run_dir / "run.json", lineage_of(run_id, run_dir, data_dir, job))
    return run_id


def run_keys(profiles: Profiles, run_id: str, run_dir: str, heldout_eval: bool = True) -> list[str]:
    """The overrides that make a config a tracked run's: its output in the run folder, our plugin, and the
    run's id and folder for the plugin. `jobs launch` adds the same ones, with the pod's run folder."""
    plugins = list(profiles.model["axolotl"].get("plugins") or []) + [PLUGIN]
    keys = [
        f"output_dir={run_dir}/output",
        f"plugins=[{', '.join(plugins)}]",
        f"brightrun_run_id={run_id}",
        f"brightrun_run_dir={run_dir}",
    ]
    if not heldout_eval:
        keys.append("brightrun_heldout_eval=false")
    return keys


def open_run_folder(run_dir: Path, data_dir: str) -> None:
    """A new run folder: logs/, the data's manifest, the software it runs with (config.yaml goes next)."""
    (run_dir / "logs").mkdir(parents=True)
    shutil.copyfile(Path(data_dir) / "manifest.json", run_dir / "data-manifest.json")
    (run_dir / "env.json").write_text(json.dumps(environment_record(), indent=2) + "\n")


def lineage_of(run_id: str, run_dir: Path, data_dir: str, job: dict) -> dict:
    """run.json of a new run folder, its config.yaml written: input sha256 -> data -> config; `job` holds
    what it was rendered from (preset, model, hardware, overrides) and the estimate."""
    manifest_path = Path(data_dir) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    return {
        "run_id": run_id,
        **{key: job[key] for key in ("preset", "model", "hardware", "overrides")},
        "input": {"path": manifest["input"]["path"], "sha256": manifest["input"]["sha256"]},
        "data": {
            "dir": data_dir,
            "manifest_sha256": sha256_file(manifest_path),
            "files": {k: v["sha256"] for k, v in manifest["outputs"].items()},
        },
        "config": {"path": str(run_dir / "config.yaml"), "sha256": sha256_file(run_dir / "config.yaml")},
        "lines_dropped_for_length": job["lines_dropped_for_length"],
        "estimate": job["estimate"],
        "adapter": None,
        "attempts": [],
    }


HYPERPARAMETERS = (
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "learning_rate",
    "num_epochs",
    "micro_batch_size",
    "gradient_accumulation_steps",
    "sequence_len",
    "lr_scheduler",
    "warmup_ratio",
)


def register(run_id: str, run_dir: Path, lineage: dict, config: dict, db_url: str | None, **fields) -> None:
    """The run's registry row, created when Axolotl has accepted its config; its `queued` event."""
    hyperparameters = {k: config.get(k) for k in HYPERPARAMETERS}
    with registry.session(db_url) as s:
        s.add(
            registry.TrainingJob(
                id=run_id,
                preset=lineage["preset"],
                model=lineage["model"],
                hardware=lineage["hardware"],
                hyperparameters=hyperparameters,
                metrics={},
                estimated_cost=lineage["estimate"]["cost_on_demand"],
                log_path=str(run_dir / "logs"),
                **fields,
            )
        )
        s.commit()
    job = {k: lineage[k] for k in ("preset", "model", "hardware")}
    job |= {"estimated_cost": lineage["estimate"]["cost_on_demand"], "hyperparameters": hyperparameters}
    emit_status(run_dir, registry.get_job(run_id, db_url), "queued", job=job)


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", "utf-8")
    tmp.replace(path)


def preprocess(
    run_id: str, run_dir: Path, lineage: dict, config: dict, env: dict, db_url: str | None
) -> None:
    """Our strict check, then `axolotl preprocess`, in one subprocess (jobs/preprocess.py).

    A config Axolotl rejects is bad input: the run folder goes and no row is left (ConfigError,
    exit 2). Anything else that ends preprocessing early (a crash, a signal) is recorded on the row.
    """
    from jobs.preprocess import CHECK_FILE

    check_file = run_dir / CHECK_FILE
    check_file.unlink(missing_ok=True)
    pending = registry.get_job(run_id, db_url) is None

    def checked() -> dict | None:
        return json.loads(check_file.read_text("utf-8")) if check_file.is_file() else None

    def create_row() -> None:
        nonlocal pending
        register(run_id, run_dir, lineage, config, db_url, status="preprocessing", started_at=registry.now())
        emit_status(run_dir, registry.get_job(run_id, db_url), "preprocessing")
        pending = False
        print(f"run {run_id}: {run_dir}/ (config accepted; preprocessing)", file=sys.stderr)

    def on_poll() -> None:
        if pending and (checked() or {}).get("ok"):
            create_row()

    cmd = [sys.executable, "-m", "jobs.preprocess", str(run_dir / "config.yaml")]
    log = run_dir / "logs" / "preprocess.log"
    try:
        rc = run_logged(cmd, log, env, progress=on_poll)
    except KeyboardInterrupt:
        if pending:
            create_row()
        raise
    if pending:
        result = checked()
        if result is not None and not result["ok"]:
            shutil.rmtree(run_dir)
            raise ConfigError(f"{result['error']}\n(checked against Axolotl's schema; no run created)")
        create_row()  # it failed before its check finished: keep the run and its log
    if rc != 0:
        raise RunError(f"axolotl preprocess exited {rc}; see {log}")


def run_logged(cmd: list[str], log: Path, env: dict, progress=None) -> int:
    """A child process in its own session (a terminal's Ctrl-C reaches only us); we forward SIGTERM."""
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        child = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        interrupted = []

        def forward(signum, frame):
            interrupted.append(signum)
            child.send_signal(signal.SIGTERM)

        old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while child.poll() is None:
                if progress:
                    progress()
                time.sleep(0.5)
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
        if progress:
            progress()
        if interrupted:
            raise KeyboardInterrupt
        return child.returncode


def execute(
    run_id: str,
    runs_dir: str = "runs",
    db_url: str | None = None,
    resume_from: str | None = None,
    evaluate: bool = True,
) -> int:
    """Preprocess and train (or resume); record status, artifact, cost. Returns the exit code."""
    from jobs import progress as progress_mod

    run_dir = Path(runs_dir) / run_id
    lineage = json.loads((run_dir / "run.json").read_text())
    profiles = Profiles.load(lineage["preset"], lineage["model"], lineage["hardware"])
    config_path = run_dir / "config.yaml"
    import yaml

    config = yaml.safe_load(config_path.read_text())
    env = child_env(config, registry.database_url(db_url))
    started = time.time()
    attempt = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "resume_from": resume_from}
    (run_dir / "eval.json").unlink(missing_ok=True)  # an earlier attempt's numbers are not this one's
    webhooks.resend_pending(run_dir)  # what an earlier attempt could not deliver goes first
    (run_dir / PID_FILE).write_text(str(os.getpid()))
    job = registry.get_job(run_id, db_url)
    if job is not None:  # a resume or a service run; a CLI run gets its row once Axolotl accepts it
        # A resume's first event clears the stop's error text on the customer's row too.
        try:
            set_status(
                run_dir,
                run_id,
                "preprocessing",
                db_url,
                event={"error_message": None},
                started_at=job.started_at or registry.now(),
                completed_at=None,
                error_message=None,
            )
        except Cancelled:
            (run_dir / PID_FILE).unlink(missing_ok=True)
            print(f"run {run_id}: cancelled before it started", file=sys.stderr)
            return 130
    try:
        preprocess(run_id, run_dir, lineage, config, env, db_url)
        extra = ("--resume-from-checkpoint", resume_from) if resume_from else ()
        bar = progress_mod.Bar(run_id, db_url)
        with bar:
            rc = run_logged(
                axolotl_command("train", config_path, profiles, *extra),
                run_dir / "logs" / "train.log",
                env,
                progress=bar.refresh,
            )
        if rc != 0:
            raise RunError(f"axolotl train exited {rc}; see {run_dir}/logs/train.log")
        status, error = "completed", None
    except KeyboardInterrupt:
        status, error = (
            ("cancelled", "cancelled on request (the last checkpoint is kept)")
            if (run_dir / CANCEL_FILE).exists()
            else (
                "interrupted",
                f"stopped by a signal; `just resume {run_id}` goes on from the last checkpoint",
            )
        )
    except RunError as exc:
        status, error = "failed", str(exc)
    finally:
        (run_dir / PID_FILE).unlink(missing_ok=True)
    hours = (time.time() - started) / 3600
    gpus = profiles.hardware["gpu_count"] if profiles.hardware["gpu_type"] != "none" else 0
    price = profiles.hardware["price_per_hour"]["on_demand"]
    job = registry.get_job(run_id, db_url)
    fields = {
        "status": status,
        "error_message": error,
        "completed_at": registry.now(),
        "gpu_hours": (job.gpu_hours or 0) + hours * gpus,
        "actual_cost": (job.actual_cost or 0) + hours * gpus * price,
    }
    attempt |= {"ended": datetime.now(UTC).isoformat(timespec="seconds"), "status": status, "hours": hours}
    lineage["attempts"].append(attempt)
    if status == "completed":
        record_adapter(run_id, run_dir, lineage, config, db_url)
        fields["artifact_path"] = str(run_dir / "output")
    write_json(run_dir / "run.json", lineage)
    fields.pop("status")
    final = {"metrics": final_metrics(run_dir, registry.get_job(run_id, db_url))}
    if status == "completed":
        final["lora_artifact_path"] = fields["artifact_path"]
    # On a pod that a launcher follows, an interruption is the launcher's to resolve (relaunch or give up).
    final["relaunch"] = status == "interrupted" and os.environ.get("BRIGHTRUN_FOLLOWED") == "1"
    try:
        set_status(run_dir, run_id, status, db_url, event=final, **fields)
    except Cancelled:  # cancelled while it ran: that stays the outcome (the costs are still recorded)
        registry.update_job(run_id, db_url, gpu_hours=fields["gpu_hours"], actual_cost=fields["actual_cost"])
        status = "cancelled"
    print(f"run {run_id}: {status}" + (f" ({error})" if error else ""), file=sys.stderr)
    if status == "completed":
        return results(run_id, runs_dir, db_url) if evaluate else 0
    return {"interrupted": 130, "cancelled": 130}.get(status, 1)


def final_metrics(run_dir: Path, job) -> dict:
    """The last logged numbers, and the held-out losses when training computed them (eval.json)."""
    numbers = {k: v for k, v in (job.metrics or {}).items() if isinstance(v, int | float)}
    if (run_dir / "eval.json").is_file():
        result = json.loads((run_dir / "eval.json").read_text())
        numbers |= {
            "heldout_base_loss": result["base"]["loss"],
            "heldout_adapter_loss": result["adapter"]["loss"],
            "heldout_adapter_perplexity": result["adapter"]["perplexity"],
        }
    return numbers


def results(run_id: str, runs_dir: str = "runs", db_url: str | None = None, recompute: bool = False) -> int:
    """Held-out base vs adapter, samples, report.html (also `just eval RUN`)."""
    from jobs import evaluate, report

    run_dir = Path(runs_dir) / run_id
    if registry.get_job(run_id, db_url) is None or not (run_dir / "output" / "adapter_config.json").is_file():
        raise ConfigError(f"no finished run {run_id!r} with an adapter (see `just runs`)")
    try:
        # Written inside training when this attempt completed (jobs/axolotl_plugin.py); else load again.
        fresh = (run_dir / "eval.json").is_file() and not recompute
        result = json.loads((run_dir / "eval.json").read_text()) if fresh else evaluate.evaluate(run_dir)
    except ValueError as exc:
        print(f"eval skipped: {exc}", file=sys.stderr)
        result = None
    if result:
        b, a = result["base"], result["adapter"]
        with registry.session(db_url) as s:
            artifact = (
                s.query(registry.ModelArtifact).filter_by(job_id=run_id, artifact_type="adapter").first()
            )
            if artifact is not None:
                artifact.validation_loss, artifact.perplexity = a["loss"], a["perplexity"]
            job = s.get(registry.TrainingJob, run_id)
            job.metrics = {
                **(job.metrics or {}),
                "heldout_base_loss": b["loss"],
                "heldout_adapter_loss": a["loss"],
                "heldout_adapter_perplexity": a["perplexity"],
            }
            s.commit()
        print(
            f"held-out loss: base {b['loss']:.4f} (ppl {b['perplexity']:.2f}) -> adapter {a['loss']:.4f} "
            f"(ppl {a['perplexity']:.2f})",
            file=sys.stderr,
        )
        show_sample(result)
    out = report.write(run_dir, db_url)
    print(f"report: {out}", file=sys.stderr)
    return 0


def show_sample(result: dict) -> None:
    """The before/after a person came for: both losses and one held-out answer from each model."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title="Held-out results", title_justify="left", show_lines=True)
    t.add_column("")
    t.add_column("base model")
    t.add_column("with the adapter")
    b, a = result["base"], result["adapter"]
    t.add_row("loss", f"{b['loss']:.4f}", f"{a['loss']:.4f}")
    t.add_row("perplexity", f"{b['perplexity']:.2f}", f"{a['perplexity']:.2f}")
    if result["samples"]:
        s = result["samples"][0]
        t.add_row(f"client: {s['prompt']}", s["base"], s["adapter"])
    Console().print(t)


def record_adapter(run_id: str, run_dir: Path, lineage: dict, config: dict, db_url: str | None) -> None:
    out = run_dir / "output"
    weights = out / "adapter_model.safetensors"
    if not weights.is_file():
        raise RunError(f"{weights}: training finished without an adapter")
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    digest = sha256_file(weights)
    lineage["adapter"] = {"path": str(weights), "sha256": digest, "bytes": weights.stat().st_size}
    registry.add_artifact(
        run_id,
        db_url,
        artifact_type="adapter",
        storage_path=str(out),
        size_bytes=weights.stat().st_size,
        sha256=digest,
        base_model=config["base_model"],
        lora_config={k: adapter_cfg.get(k) for k in ("r", "lora_alpha", "lora_dropout", "target_modules")},
    )


def last_checkpoint(run_dir: Path) -> Path | None:
    found = [
        (int(p.name.split("-")[1]), p)
        for p in (run_dir / "output").glob("checkpoint-*")
        if (p / "trainer_state.json").is_file() and p.name.split("-")[1].isdigit()
    ]
    return max(found)[1] if found else None


def resume(run_id: str, runs_dir: str = "runs", db_url: str | None = None) -> int:
    run_dir = Path(runs_dir) / run_id
    job = registry.get_job(run_id, db_url)
    if job is None or not (run_dir / "run.json").is_file():
        raise NotFound(f"no run {run_id!r} (see `just runs`)")
    if job.status in ("completed", "cancelled"):
        raise Conflict(f"run {run_id} is {job.status}; start a new run")
    checkpoint = last_checkpoint(run_dir)
    if checkpoint is None:
        raise ConfigError(f"run {run_id} has no checkpoint to resume from; start a new run")
    registry.update_job(run_id, db_url, retry_count=job.retry_count + 1)
    print(f"resuming {run_id} from {checkpoint.name}", file=sys.stderr)
    return execute(run_id, runs_dir, db_url, resume_from=str(checkpoint))


def launcher_alive(run_dir: Path) -> int | None:
    """The pid of the launcher running this run, if one is alive."""
    try:
        pid = int((run_dir / PID_FILE).read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    return pid


def cancel(run_id: str, runs_dir: str = "runs", db_url: str | None = None) -> str:
    """Stop a run for good: its launcher gets SIGTERM (the trainer saves and stops) and marks it
    cancelled; a run with no live launcher (queued, interrupted) is marked cancelled here."""
    run_dir = Path(runs_dir) / run_id
    job = registry.get_job(run_id, db_url)
    if job is None:
        raise NotFound(f"no run {run_id!r} (see `just runs`)")
    if job.status in registry.TERMINAL:
        raise Conflict(f"run {run_id} is already {job.status}")
    if job.pod_id:  # a RunPod run: its pod is what must stop (and stop billing), not a local process
        from jobs import launch

        return launch.cancel(run_id, runs_dir, db_url)
    if not (run_dir / "run.json").is_file():
        raise Conflict(
            f"run {run_id} is known here only from its webhook events: it runs elsewhere, and nothing "
            "here can stop it; cancel it where it runs (`jobs cancel` there, or the pod's launcher)"
        )
    if run_dir.is_dir():
        (run_dir / CANCEL_FILE).touch()
        pid = launcher_alive(run_dir)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            return "cancelling"
    set_status(
        run_dir,
        run_id,
        "cancelled",
        db_url,
        error_message="cancelled on request",
        completed_at=registry.now(),
    )
    return "cancelled"


def yaml_load(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text("utf-8"))
