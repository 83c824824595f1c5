"""One training run, locally: convert if needed, render, preprocess, train, record (the run folder's
layout and shared rules: jobs/runfolder.py; results: jobs/results.py; cancel: jobs/cancel.py)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from axolotl_configs.profiles import Profiles
from brightrun import offline, quiet
from brightrun.errors import ConfigError
from jobs import registry, stopgrace, webhooks
from jobs.results import final_metrics, results
from jobs.runfolder import (
    CANCEL_FILE,
    PID_FILE,
    ROOT,
    Conflict,
    NotFound,
    RunError,
    check_run_id,
    last_checkpoint,
    lineage_of,
    new_run_id,
    open_run_folder,
    record_adapter,
    register,
    run_keys,
    sha256_file,
    write_json,
)
from jobs.status import Cancelled, set_status
from jobs.status import emit as emit_status

DEFAULT_INPUT = "data/demo/brightrun-demo.json"
TOKENIZER = "assets/llama3-tokenizer"


# Secrets a started run never needs. The webhook secret is decided per run: jobs/service/start.py run_env.
NOT_FOR_RUNS = (
    "JOBS_API_TOKEN",
    "JOBS_API_TOKENS",  # the named tokens (jobs/service/tokens.py)
    "MODELS_SERVER_API_KEY",
    "RUNPOD_API_KEY",
    "RUNPOD_S3_ACCESS_KEY",
    "RUNPOD_S3_SECRET_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "JUDGE_API_KEY",
)


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
    env |= quiet.child_env(env)  # two harmless torchao/torch lines stay out of the logs: brightrun/quiet.py
    return env


def axolotl_command(verb: str, config_path: Path, profiles: Profiles, *extra: str) -> list[str]:
    cmd = [str(Path(sys.executable).parent / "axolotl"), verb, str(config_path)]
    if verb == "train" and profiles.hardware["gpu_type"] == "none":
        cmd += ["--launcher", "python"]  # CPU: no accelerate subprocess (17-19 s faster, facts file)
    return cmd + list(extra)


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
    targets_per_step: int | None = None,
) -> str:
    """Everything before Axolotl: our checks (exit 2), the estimate, the run folder. No row yet.

    Axolotl's schema is checked in the preprocess subprocess (jobs/preprocess.py), where Axolotl is
    imported anyway; the registry row is created once it accepts the config (execute).
    """
    from axolotl_configs import estimate, render
    from jobs import preflight

    check_run_id(run_id)
    profiles = Profiles.load(preset, model, hardware)
    # Before the data is converted or anything is written: a run that cannot succeed here says so now.
    values = preflight.planned_values(profiles, overrides)
    preflight.require(preflight.train_checks(profiles, values, runs_dir))
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
        targets_per_step=targets_per_step,
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
        **({"targets_per_step": targets_per_step} if targets_per_step else {}),
        "lines_dropped_for_length": rendered.derived.get("lines_dropped", 0),
        "estimate": {
            "hours": sum(est.hours.values()),
            "steps": est.numbers["total_steps"],
            "cost_on_demand": est.costs["on_demand"],
            "peak_memory_gb": est.peak_gb,
        },
    }
    write_json(run_dir / "run.json", lineage_of(run_id, run_dir, data_dir, job))
    return run_id


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
        grace = stopgrace.grace()
        kill_at = []  # on a pod: when the trainer's process group is killed if it has not stopped

        def forward(signum, frame):
            interrupted.append(signum)
            child.send_signal(signal.SIGTERM)
            if grace is not None and not kill_at:
                kill_at.append(time.monotonic() + grace + stopgrace.PARENT_EXTRA_S)

        old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while child.poll() is None:
                if progress:
                    progress()
                if kill_at and time.monotonic() >= kill_at[0]:
                    # The trainer's own timer did not end it (jobs/stopgrace.py): its whole group goes, so
                    # the run is recorded interrupted before the pod's SIGKILL.
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(child.pid, signal.SIGKILL)
                    out.write(f"\nbrightrun: killed {grace + stopgrace.PARENT_EXTRA_S:g} s after SIGTERM\n")
                    child.wait()
                    break
                time.sleep(0.1 if kill_at else 0.5)
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
        if resume_from is None:
            preprocess(run_id, run_dir, lineage, config, env, db_url)
        # A resume goes straight to training: its config was checked and its data prepared by the first
        # attempt, and `axolotl train` prepares the data itself where that is gone (a new pod's disk).
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
        # An artifact store: the run's files and its adapter.zip go there now, before the completed event,
        # which then names the zip's key in the customer's bucket (jobs/pod/stored.py). A failed upload is
        # said and leaves the run completed, the event naming the adapter here. A pod that a launcher
        # follows uploads from its entrypoint once the run is completed (a restart finishes it there).
        if os.environ.get("ARTIFACT_STORE") and os.environ.get("BRIGHTRUN_FOLLOWED") != "1":
            from jobs.pod import stored

            job_id = os.environ.get("BRIGHTRUN_JOB_ID") or run_id
            try:
                record = stored.upload_run(
                    run_dir, job_id, say=lambda line: print(line, file=sys.stderr, flush=True), completed=True
                )
            except KeyboardInterrupt:  # the run is completed: a Ctrl-C now stops the upload, not the record
                record = {"folder": stored.folder(job_id), "error": "the upload was interrupted"}
                print(f"warning: {record['error']}; the adapter stays in {run_dir}/output/", file=sys.stderr)
            if record is not None:
                final |= stored.event_fields(record, fields["artifact_path"])
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
