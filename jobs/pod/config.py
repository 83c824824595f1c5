"""The config a pod trains: rendered once, by `jobs launch` on the launcher's side, with the pod's paths;
run as it is by the pod (`python -m jobs run-config`, docker/entrypoint.sh's BRIGHTRUN_CONFIG).

On the volume, configs/RUN/ holds
  config.yaml  the Axolotl config: the data at the pod's datasets/NAME, and the keys every tracked run
               gets (jobs/runfolder.py run_keys: output_dir, our plugin, brightrun_run_id and
               brightrun_run_dir) with the pod's runs/RUN. The launcher's runs/RUN/config.yaml is the
               same file; run.json records its sha256.
  job.json     what it was rendered from (preset, model, hardware, overrides, data, estimate) and that
               sha256: the pod's lineage, and its check that the file is the one the launcher recorded.
Not in runs/RUN/ itself: that folder is the pod's run, made by the pod as a local run makes its own; one
there before the pod starts would read as a run that began (the launcher's relaunch and `jobs resume`
both ask that question of it).

The pod copies config.yaml byte for byte into its runs/RUN/ and trains it through jobs/run.py's execute,
so the sha256 in the launcher's run.json names the file Axolotl was given.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from axolotl_configs.profiles import Profiles
from brightrun.errors import ConfigError
from jobs import runfolder

CONFIG = "config.yaml"
JOB_FILE = "job.json"
JOB_KEYS = (
    "preset",
    "model",
    "hardware",
    "overrides",
    "data",
    "config_sha256",
    "lines_dropped_for_length",
    "estimate",
)


def folder(vrun: str) -> str:
    """Where the config of volume run `vrun` goes on the volume (a key under its root)."""
    return f"configs/{vrun}"


def pod_path(pod_volume: str, vrun: str) -> str:
    """The same file as the pod sees it: BRIGHTRUN_CONFIG."""
    return f"{pod_volume}/{folder(vrun)}/{CONFIG}"


# -- the launcher's side ---------------------------------------------------------------------------------


def render(
    preset: str,
    model: str,
    data_dir: str,
    hardware: str,
    overrides: list[str],
    allow_drop: bool,
    pod_volume: str,
    pod_data: str,
    vrun: str,
    targets_per_step: int | None = None,
):
    """The config of volume run `vrun`, read from the data here, naming the pod's paths. Our keys and
    numbers are checked here; Axolotl's own check runs on the pod (jobs/preprocess.py), as for a local run."""
    from axolotl_configs import render as render_mod

    run_dir = f"{pod_volume}/runs/{vrun}"
    keys = runfolder.run_keys(Profiles.load(preset, model, hardware), vrun, run_dir)
    return render_mod.render(
        preset,
        model,
        data_dir,
        hardware,
        list(overrides) + keys,
        out_path=f"{run_dir}/{CONFIG}",
        check=False,
        allow_drop=allow_drop,
        targets_per_step=targets_per_step,
        data_at=pod_data,
    )


def job_of(lineage: dict, sha: str) -> dict:
    """job.json: what the pod's lineage takes from the launcher's, the data at the pod's path."""
    return {
        "job_id": lineage["run_id"],
        **{key: lineage[key] for key in ("preset", "model", "hardware", "overrides")},
        "data": {"dir": lineage["data"]["pod_dir"], "manifest_sha256": lineage["data"]["manifest_sha256"]},
        "config_sha256": sha,
        "lines_dropped_for_length": lineage["lines_dropped_for_length"],
        "estimate": lineage["estimate"],
    }


def publish(volume, rendered, config: Path, lineage: dict, vrun: str) -> str:
    """The rendered config onto the volume (configs/VRUN/, with its job.json), then here as `config`:
    the local file changes only once the pod's copy is there. Returns its sha256."""
    staged = config.with_name(f".{vrun}.{config.name}")
    staged.write_text(rendered.text, "utf-8")
    try:
        sha = runfolder.sha256_file(staged)
        with tempfile.TemporaryDirectory() as tmp:
            job = Path(tmp) / JOB_FILE
            job.write_text(json.dumps(job_of(lineage, sha), indent=2) + "\n", "utf-8")
            volume.put(staged, f"{folder(vrun)}/{CONFIG}")
            volume.put(job, f"{folder(vrun)}/{JOB_FILE}")
        staged.replace(config)
    finally:
        staged.unlink(missing_ok=True)
    return sha


# -- the pod's side ----------------------------------------------------------------------------------------


def read_job(config: Path) -> dict:
    """The job.json beside a rendered config, its keys checked: a bad one is bad input, not a KeyError."""
    path = config.with_name(JOB_FILE)
    if not path.is_file():
        raise ConfigError(
            f"{path}: missing. A config run as it is comes with the job.json `jobs launch` writes beside it "
            "(preset, model, hardware, overrides, data, estimate, the config's sha256)"
        )
    try:
        job = json.loads(path.read_text("utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{path}: not JSON ({exc})") from None
    job = job if isinstance(job, dict) else {}
    data = job.get("data") if isinstance(job.get("data"), dict) else {}
    missing = [key for key in JOB_KEYS if key not in job]
    missing += [f"data.{key}" for key in ("dir", "manifest_sha256") if key not in data]
    if missing:
        raise ConfigError(f"{path}: missing {', '.join(missing)} (what `jobs launch` writes)")
    return job


def check_run_folder(src: Path, config: dict, run_id: str, run_dir: Path) -> None:
    """The config names its run folder (the plugin's keys, output_dir): it must be this one, or the
    checkpoints and metrics would land where `jobs resume` and the launcher never look."""
    wrong = []
    if config.get("brightrun_run_id") != run_id:
        wrong.append(f"brightrun_run_id: {config.get('brightrun_run_id')!r}, expected {run_id!r}")
    for key, want in (("brightrun_run_dir", run_dir), ("output_dir", run_dir / "output")):
        found = config.get(key)
        if not isinstance(found, str) or os.path.abspath(found) != os.path.abspath(want):
            wrong.append(f"{key}: {found!r}, expected {str(want)!r}")
    if wrong:
        raise ConfigError(f"{src} was rendered for another run folder ({'; '.join(wrong)})")


def prepare(
    config_path: str, runs_dir: str = "runs", run_id: str | None = None, hardware: str | None = None
) -> str:
    """The run folder of a rendered config: nothing is rendered here. The file is copied byte for byte;
    job.json gives the lineage. `hardware` names this machine when it is not the one the config was
    rendered for (the fake pod of tests/test_launch.py is this CPU): it decides how Axolotl is launched
    and what the run counts as cost, never a byte of the config. Returns the run id (the config's own)."""
    src = Path(config_path)
    if not src.is_file():
        raise ConfigError(
            f"{src}: no such config (`jobs launch` puts it on the volume: configs/RUN/config.yaml)"
        )
    job = read_job(src)
    sha = runfolder.sha256_file(src)
    if sha != job["config_sha256"]:
        raise ConfigError(
            f"{src}: sha256 {sha} is not the {job['config_sha256']} that `jobs launch` rendered "
            f"({src.with_name(JOB_FILE)}); launch again rather than edit it"
        )
    config = runfolder.yaml_load(src)
    config = config if isinstance(config, dict) else {}
    run_id = run_id or config.get("brightrun_run_id")
    if not isinstance(run_id, str):
        raise ConfigError(f"{src}: brightrun_run_id {run_id!r}: not the config of a tracked run")
    runfolder.check_run_id(run_id)
    run_dir = Path(runs_dir) / run_id
    check_run_folder(src, config, run_id, run_dir)
    if run_dir.exists():
        raise ConfigError(f"{run_dir} exists: `jobs resume {run_id}` continues it")
    data_dir = str(job["data"]["dir"])
    manifest = Path(data_dir) / "manifest.json"
    if not manifest.is_file() or runfolder.sha256_file(manifest) != job["data"]["manifest_sha256"]:
        raise ConfigError(
            f"{manifest}: not the data the config was rendered for (manifest sha256 "
            f"{job['data']['manifest_sha256']}); is the volume mounted where the launcher said?"
        )
    profiles = Profiles.load(job["preset"], job["model"], hardware or job["hardware"])
    from jobs import preflight

    # This machine, as the pod finds it (its GPUs, the Hub from here, its volume's free space). Run by
    # hand, a refusal leaves the volume as it was; see refused() for a pod its launcher follows.
    checks = preflight.train_checks(profiles, config, runs_dir)
    followed = os.environ.get("BRIGHTRUN_FOLLOWED") == "1"
    if not followed:
        preflight.require(checks)
    runfolder.open_run_folder(run_dir, data_dir)
    shutil.copyfile(src, run_dir / CONFIG)
    lineage = runfolder.lineage_of(run_id, run_dir, data_dir, {**job, "hardware": profiles.hardware["name"]})
    if profiles.hardware["name"] != job["hardware"]:
        lineage["rendered_for_hardware"] = job["hardware"]
    runfolder.write_json(run_dir / "run.json", lineage)
    if preflight.failures(checks):
        refused(run_id, run_dir, lineage, config, preflight.refusal(checks))
    return run_id


def refused(run_id: str, run_dir: Path, lineage: dict, config: dict, reason: str) -> None:
    """A pod its launcher follows, refused by preflight: the pod exists already, so the refusal is the
    run's end, recorded where the launcher reads it (the volume's registry, the run's events). The launcher
    then ends the run failed with this reason and terminates the pod; without it RunPod would restart a
    container that refuses again, and bill, until the cost cap (docker/entrypoint.sh: a restarted
    container on a finished run exits at once)."""
    from jobs import registry
    from jobs.status import set_status

    runfolder.register(run_id, run_dir, lineage, config, None, status="queued")
    set_status(run_dir, run_id, "failed", None, error_message=reason, completed_at=registry.now())
    raise ConfigError(reason)


def render_again(lineage: dict, run_dir: Path, volume, vrun: str) -> str:
    """The config of a fresh volume run (its run folder is in it), from what launch() rendered the first
    from; it becomes the run's config.yaml here, as it is the one the adapter will come from."""
    info = lineage["launch"]
    rendered = render(
        lineage["preset"],
        lineage["model"],
        lineage["data"]["dir"],
        lineage["hardware"],
        lineage["overrides"],
        info.get("allow_drop", False),
        info["env"]["BRIGHTRUN_VOLUME"],
        lineage["data"]["pod_dir"],
        vrun,
        lineage.get("targets_per_step"),
    )
    return publish(volume, rendered, run_dir / "config.yaml", lineage, vrun)
