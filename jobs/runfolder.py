"""A run folder, as local and pod runs share it: its id, its lineage, its registry row, its adapter record,
its newest complete checkpoint, and who runs it. One rule each; jobs/run.py (local runs), jobs/pod/ (RunPod)
and docker/entrypoint.sh (`python -m jobs.runfolder checkpoint DIR`) use them.

runs/<run-id>/:
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
import subprocess
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from axolotl_configs.profiles import Profiles
from brightrun.errors import ConfigError
from jobs import registry
from jobs.status import emit as emit_status

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "jobs.axolotl_plugin.RegistryPlugin"
PACKAGES = ("torch", "axolotl", "transformers", "peft", "trl", "accelerate", "datasets", "bitsandbytes")
CANCEL_FILE = "cancel-requested"
PID_FILE = "launcher.pid"


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


def new_run_id(preset: str, model: str) -> str:
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{preset}-{model}-{secrets.token_hex(2)}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", "utf-8")
    tmp.replace(path)


def yaml_load(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text("utf-8"))


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


def lineage_of(
    run_id: str, run_dir: Path, data_dir: str, job: dict, config_sha256: str | None = None
) -> dict:
    """run.json of a new run folder: input sha256 -> data -> config; `job` holds what it was rendered from
    (preset, model, hardware, overrides) and the estimate. The config's sha256 is its config.yaml's, unless
    given (a launcher records it once the pod's copy is on the volume)."""
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
        "config": {
            "path": str(run_dir / "config.yaml"),
            "sha256": config_sha256 if config_sha256 is not None else sha256_file(run_dir / "config.yaml"),
        },
        "lines_dropped_for_length": job["lines_dropped_for_length"],
        # The customer's batch_size as the renderer used it (a relaunch renders again: jobs/pod/config.py).
        **({"targets_per_step": job["targets_per_step"]} if job.get("targets_per_step") else {}),
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


# A checkpoint counts once Trainer has written its state: output/checkpoint-N/trainer_state.json. A folder
# without it is a save cut short (a kill -9 mid-write) and is never resumed from. The same rule for a run
# folder here (last_checkpoint) and on a pod's volume (jobs/pod/volume.py, checkpoint_step).
CHECKPOINT = re.compile(r"checkpoint-(\d+)")
COMPLETE = "trainer_state.json"


def newest_complete(names: Iterable[str], exists: Callable[[str], bool]) -> int | None:
    """The step of the newest complete checkpoint among output/'s folder names; `exists` answers for a
    path relative to output/."""
    steps = sorted((int(m.group(1)) for n in names if (m := CHECKPOINT.fullmatch(n))), reverse=True)
    return next((step for step in steps if exists(f"checkpoint-{step}/{COMPLETE}")), None)


def last_checkpoint(run_dir: Path) -> Path | None:
    out = run_dir / "output"
    names = [p.name for p in out.iterdir() if p.is_dir()] if out.is_dir() else []
    step = newest_complete(names, lambda rel: (out / rel).is_file())
    return None if step is None else out / f"checkpoint-{step}"


def launcher_alive(run_dir: Path) -> int | None:
    """The pid of the launcher running this run, if one is alive."""
    try:
        pid = int((run_dir / PID_FILE).read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    return pid


def main(argv: list[str]) -> int:
    """`python -m jobs.runfolder checkpoint DIR`: the newest complete checkpoint's path (exit 0), or
    nothing (exit 1). `python -m jobs.runfolder finished DIR`: exit 0 when the registry (DATABASE_URL)
    says the run is over (completed, failed, cancelled), else 1. docker/entrypoint.sh asks these rather
    than re-implementing the rules in bash."""
    if len(argv) != 2 or argv[0] not in ("checkpoint", "finished"):
        print("usage: python -m jobs.runfolder checkpoint|finished RUN_DIR", file=sys.stderr)
        return 2
    if argv[0] == "finished":
        job = registry.get_job(Path(argv[1]).name)
        return 0 if job is not None and job.status in registry.TERMINAL else 1
    found = last_checkpoint(Path(argv[1]))
    if found is None:
        return 1
    print(found)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


# What a version takes from a run folder (versions/promote.py; the pod's own upload, jobs/pod/stored.py):
# written here, below both, so neither imports the other.
ADAPTER = ("adapter_model.safetensors", "adapter_config.json")
# What a PEFT adapter folder may hold beside it for a loader (Axolotl saves the tokenizer with the adapter).
TOKENIZER = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "chat_template.jinja",
    "added_tokens.json",
)
RUN_FILES = ("config.yaml", "data-manifest.json", "report.html")


def version_files(run_dir: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """(name in the version, local file) for the adapter (and tokenizer) under adapter/, the config, the
    data manifest, the evaluation and the report as the run folder has them; and the names of the required
    ones missing (the adapter's two files, config.yaml). Links are not followed: what goes up is the run
    folder's own files."""
    out = run_dir / "output"
    missing = [n for n in ADAPTER if not plain_file(out / n)]
    missing += [n for n in ("config.yaml",) if not plain_file(run_dir / n)]
    files = [(f"adapter/{n}", out / n) for n in (*ADAPTER, *TOKENIZER) if plain_file(out / n)]
    files += [(n, run_dir / n) for n in RUN_FILES if plain_file(run_dir / n)]
    evals = run_dir / "eval"
    if evals.is_dir() and not evals.is_symlink():
        files += [
            (f"eval/{p.relative_to(evals).as_posix()}", p) for p in sorted(evals.rglob("*")) if plain_file(p)
        ]
    return files, missing


def plain_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()
