"""POST /api/training/jobs: what a holder of the API token may start, and nothing more.

A token is not a shell. Through the API:
- preset, model and hardware are names (axolotl_configs/profiles.py checks them, as for the CLI);
- `input` (a brightrun-v4 file) and `data` (a converted folder) are paths relative to the service's
  data folder, resolved inside it (links included), never anywhere else on the server;
- overrides are an allow-list of training hyperparameters, typed and bounded: nothing that names a
  path, a URL, a hub repo, remote code, a plugin or a launcher (the CLI, a person on their own machine,
  keeps Axolotl's whole key set);
- an input file is converted into converted/sha256-<content hash>/ in the data folder, so two files
  with one name never share a folder, and a request that is refused leaves nothing behind;
- the started run gets a minimal environment: no API token, no cloud keys, and the webhook secret only
  when it sends webhooks (per-run key when WEBHOOK_RUN_KEYS=required; jobs/webhooks.py).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from axolotl_configs.profiles import Profiles, shown
from brightrun.errors import ConfigError
from jobs import registry, runfolder, webhooks
from jobs import run as run_mod

# key: (type, lowest, highest); bounds are what a training run can sensibly take, not Axolotl's limits.
NUMBERS: dict[str, tuple[type, float, float]] = {
    "learning_rate": (float, 1e-8, 1.0),
    "num_epochs": (float, 0.01, 100),
    "max_steps": (int, 1, 1_000_000),
    "lora_r": (int, 1, 1024),
    "lora_alpha": (float, 1, 4096),
    "lora_dropout": (float, 0.0, 0.9),
    "micro_batch_size": (int, 1, 1024),
    "gradient_accumulation_steps": (int, 1, 4096),
    "warmup_ratio": (float, 0.0, 0.5),
    "warmup_steps": (int, 0, 100_000),
    "weight_decay": (float, 0.0, 1.0),
    "max_grad_norm": (float, 0.0, 100.0),
    "sequence_len": (int, 128, 131_072),  # and at most what the data was measured for (below)
    "save_steps": (int, 1, 1_000_000),
    "eval_steps": (int, 1, 1_000_000),
    "logging_steps": (int, 1, 1_000_000),
    "seed": (int, 0, 2**31 - 1),
}
# The customer's `batch_size` (jobs/service/customer.py): trained pairs per optimizer step, which the
# renderer turns into gradient_accumulation_steps for the packed data (axolotl_configs/render.py derive).
BATCH_SIZE = (int, 1, 4096)
CHOICES = {"lr_scheduler": ("cosine", "linear", "constant", "constant_with_warmup")}
ALLOWED = sorted([*NUMBERS, *CHOICES])
MAX_OVERRIDES = 32
SEQUENCE_LEN = 4096
NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def check_overrides(items: list[str], data_dir: Path | None = None) -> list[str]:
    """The allow-list: each item key=value with a known key and a value of its type within bounds.
    Returns them written back plainly (what render parses again, with no YAML left to interpret)."""
    if len(items) > MAX_OVERRIDES:
        raise ConfigError(f"overrides: at most {MAX_OVERRIDES}")
    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or key not in NUMBERS and key not in CHOICES:
            raise ConfigError(
                f"override {shown(key if sep else item)}: not allowed through the API "
                f"(allowed: {', '.join(ALLOWED)}; the command line takes any Axolotl key)"
            )
        raw = raw.strip()
        if key in CHOICES:
            if raw not in CHOICES[key]:
                raise ConfigError(f"override {key}: one of {', '.join(CHOICES[key])}")
            out.append(f"{key}={raw}")
            continue
        value = check_number(key, raw, *NUMBERS[key])
        if key == "sequence_len" and data_dir is not None:
            measured = data_sequence_len(data_dir)
            if measured and value > measured:
                raise ConfigError(f"override sequence_len: the data was measured for at most {measured}")
        out.append(f"{key}={value!r}")
    return out


def check_number(key: str, raw: str, kind: type, low: float, high: float) -> int | float:
    """One bounded number of the allow-list, from its text: the value, or a ConfigError naming `key`."""
    if len(raw) > 32 or not NUMBER.fullmatch(raw):
        raise ConfigError(f"override {key}: expected a number, got {shown(raw, 32)}")
    value = float(raw)
    if not math.isfinite(value) or not low <= value <= high:
        raise ConfigError(f"override {key}: expected {low:g} to {high:g}, got {shown(raw, 32)}")
    if kind is int and value != int(value):
        raise ConfigError(f"override {key}: expected a whole number, got {shown(raw, 32)}")
    return int(value) if kind is int else value


def data_sequence_len(data_dir: Path) -> int | None:
    try:
        return int(json.loads((data_dir / "manifest.json").read_text())["options"]["sequence_len"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def inside(root: Path, field: str, value: str | None) -> Path | None:
    """A request's path, relative to the data folder and resolved inside it; never anything else."""
    if value is None:
        return None
    if not value or len(value) > 256 or "\x00" in value or value.startswith(("/", "~", "\\")):
        raise ConfigError(
            f"{field}: a path relative to the service's data folder (e.g. demo/brightrun-demo.json)"
        )
    path = (root / value).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ConfigError(f"{field}: a path relative to the service's data folder, inside it")
    return path


def resolve(root: Path, input_file: str | None, data: str | None) -> tuple[Path | None, Path | None]:
    input_path, data_dir = inside(root, "input", input_file), inside(root, "data", data)
    if input_path is not None and not input_path.is_file():
        raise ConfigError(f"input {shown(input_file)}: no such file in the service's data folder")
    if data_dir is not None and not (data_dir / "manifest.json").is_file():
        raise ConfigError(f"data {shown(data)}: no converted folder (with manifest.json) there")
    return input_path, data_dir


def convert(root: Path, input_path: Path) -> tuple[Path, bool]:
    """converted/sha256-<16 hex>/ for this content: (folder, whether this request made it)."""
    from converters import convert as convert_mod
    from converters import load

    out = root / "converted" / f"sha256-{runfolder.sha256_file(input_path)[:16]}"
    if (out / "manifest.json").is_file():
        return out, False
    try:
        # Measured for 4,096-token rows (Llama 3's packing length in our presets): an API run's
        # sequence_len may not exceed what the data was measured for (check_overrides).
        options = convert_mod.Options(tokenizer=run_mod.TOKENIZER, sequence_len=SEQUENCE_LEN)
        convert_mod.convert(input_path, out, options)
    except load.InputError as exc:
        raise ConfigError(str(exc).replace(str(root) + "/", "")) from None
    return out, True


def run_env(run_id: str, db_url: str) -> dict:
    """What a started run's process gets: our environment less what it must not hold."""
    env = {k: v for k, v in os.environ.items() if k not in run_mod.NOT_FOR_RUNS}
    env["DATABASE_URL"] = db_url
    secret = env.pop("TRAINING_WEBHOOK_SECRET", None)
    if env.get("WEBHOOK_URL") and secret:
        env["TRAINING_WEBHOOK_SECRET"] = (
            webhooks.run_key(secret, run_id) if webhooks.run_keys_required() else secret
        )
    return env


def start_run(
    preset: str,
    model: str,
    input_file: str | None = None,
    data: str | None = None,
    hardware: str | None = None,
    overrides: list[str] | None = None,
    runs_dir: str = "runs",
    db_url: str | None = None,
    heldout_eval: bool = True,
    data_root: str | Path = "data",
    run_id: str | None = None,
    targets_per_step: int | None = None,
    launch: bool = True,
) -> str:
    """Checked here (a long-lived process imports Axolotl once), registered as queued, then launched
    as `python -m jobs execute RUN` in its own session (`launch=False`: the caller starts it later,
    jobs/service/queue.py). `run_id`: the caller's (the customer's job id), else a new one.
    Nothing stays written for a refused request."""
    from axolotl_configs import validate

    root = Path(data_root).resolve()
    runs_dir = str(Path(runs_dir).resolve())  # the launcher runs from the repo root
    Profiles.load(preset, model, hardware)  # names first: nothing is read or written for a bad one
    check_overrides(list(overrides or []))  # and the overrides, before any conversion is paid for
    if not input_file and not data:
        input_file = str(Path(run_mod.DEFAULT_INPUT).relative_to("data"))
    input_path, data_dir = resolve(root, input_file, data)
    made = []  # what this request wrote into the data folder, deepest last
    wanted, run_id = run_id, None
    try:
        if data_dir is None:
            parent = root / "converted"
            if not parent.exists():
                made.append(parent)
            data_dir, created = convert(root, input_path)
            if created:
                made.append(data_dir)
        checked = check_overrides(list(overrides or []), data_dir)  # again, with the data's bounds
        run_id = run_mod.prepare(
            preset,
            model,
            str(input_path or run_mod.DEFAULT_INPUT),
            str(data_dir),
            hardware,
            checked,
            runs_dir=runs_dir,
            db_url=db_url,
            heldout_eval=heldout_eval,
            run_id=wanted,
            targets_per_step=targets_per_step,
        )
        run_dir = Path(runs_dir) / run_id
        config = runfolder.yaml_load(run_dir / "config.yaml")
        validate.check(dict(config))
    except BaseException:
        if run_id is not None:
            shutil.rmtree(Path(runs_dir) / run_id, ignore_errors=True)
        for path in reversed(made):
            shutil.rmtree(path, ignore_errors=True)
        raise
    lineage = json.loads((run_dir / "run.json").read_text())
    steps = lineage["estimate"].get("steps")
    runfolder.register(run_id, run_dir, lineage, config, db_url, status="queued", total_steps=steps)
    if not launch:
        return run_id
    argv = [sys.executable, "-m", "jobs", "--runs-dir", runs_dir, "execute", run_id]
    spawn(
        argv + ([] if heldout_eval else ["--no-eval"]),
        run_dir / "logs" / "launcher.log",
        run_env(run_id, registry.database_url(db_url)),
    )
    return run_id


def spawn(argv: list[str], log_path: Path, env: dict) -> subprocess.Popen:
    """A process of the service's (a run, a pod's launcher or follower), its output appended to log_path,
    in its own session: it outlives a restart of the service."""
    with log_path.open("a") as log:
        return subprocess.Popen(
            argv,
            cwd=runfolder.ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
