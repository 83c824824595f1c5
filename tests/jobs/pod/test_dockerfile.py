"""The GPU image, offline (no Docker daemon): Dockerfile, .dockerignore and docker/entrypoint.sh.

The base tag's axolotl version is pyproject.toml's pin; hadolint and shellcheck (pinned dev dependencies,
binaries from PyPI wheels) pass; the build's own Python steps run against this venv; the entrypoint,
run for real with BRIGHTRUN_DRY_RUN=1, prints the command a fresh run (the config `jobs launch` rendered,
run as it is) and a resume need, which the real `python -m jobs` parser accepts, and never a secret.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import ROOT

from axolotl_configs.cli import parse_with_overrides
from jobs.__main__ import parser as jobs_parser
from jobs.pod import lockfile

DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = ROOT / "pyproject.toml"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
BIN = Path(sys.executable).parent
SECRETS = ("HF_TOKEN", "TRAINING_WEBHOOK_SECRET", "RUNPOD_API_KEY", "JOBS_API_TOKEN", "WANDB_API_KEY")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, backslash continuations joined."""
    out, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        keyword, _, args = pending.strip().partition(" ")
        out.append((keyword.upper(), args.strip()))
        pending = ""
    return out


def dockerfile() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text("utf-8"))


def pinned(name: str, pyproject_text: str | None = None) -> str:
    text = pyproject_text if pyproject_text is not None else PYPROJECT.read_text("utf-8")
    deps = tomllib.loads(text)["project"]["dependencies"]
    [version] = [d.split("==", 1)[1] for d in deps if d.split("==", 1)[0] == name]
    return version


def base_image() -> tuple[str, str]:
    [image] = [args for kw, args in dockerfile() if kw == "FROM"]
    repo, _, tag = image.partition(":")
    return repo, tag


# --- the base image ------------------------------------------------------------------------------------


def check_tag_matches_pin(dockerfile_text: str, pyproject_text: str) -> None:
    [image] = [args for kw, args in instructions(dockerfile_text) if kw == "FROM"]
    repo, _, tag = image.partition(":")
    assert repo == "axolotlai/axolotl-cloud"
    # Axolotl's release tags (.github/workflows/main.yml): {version} or {version}-py{py}-cu{cuda}-{torch}
    m = re.fullmatch(r"(\d+\.\d+\.\d+)(?:-py(\d+\.\d+)-cu(\d+)-(\d+\.\d+\.\d+))?", tag)
    assert m, f"not a release tag of Axolotl's: {tag!r}"
    assert m.group(1) == pinned("axolotl", pyproject_text), (
        "the base image's axolotl and pyproject.toml's pin differ"
    )
    if m.group(4):  # the image's torch must be one axolotl 0.19.0 accepts (>=2.11,<=2.13)
        assert (2, 11) <= tuple(int(x) for x in m.group(4).split(".")[:2]) <= (2, 13)


def test_base_image_is_axolotls_cloud_image_for_our_pinned_axolotl():
    check_tag_matches_pin(DOCKERFILE.read_text("utf-8"), PYPROJECT.read_text("utf-8"))


def test_hardware_files_name_the_images_cuda():
    """`cuda:` beside `image:` in each GPU hardware file is the image's (its tag's cuNNN: Axolotl's build
    matrix, .github/workflows/main.yml, cuda 130 = CUDA 13.0.0), so the launcher asks RunPod for hosts that
    can run it (allowedCudaVersions, issue 16). The default image, Axolotl's own (our code installed from
    the volume), is also the Dockerfile's base, so `--image` of ours needs the same hosts."""
    import yaml

    from jobs.pod import runpod

    tag = re.search(r"^FROM axolotlai/axolotl-cloud:\S*-cu(\d+)(\d)-", DOCKERFILE.read_text("utf-8"), re.M)
    image_cuda = f"{tag.group(1)}.{tag.group(2)}"
    for path in sorted((ROOT / "axolotl_configs" / "hardware").glob("*.yaml")):
        hw = yaml.safe_load(path.read_text("utf-8"))
        if hw["gpu_type"] != "none":
            assert hw["image"] == base_image()[0] + ":" + base_image()[1], path
            own = re.fullmatch(r"axolotlai/axolotl-cloud:\S*-cu(\d+)(\d)-\S+", hw["image"])
            assert hw["cuda"] == image_cuda == f"{own.group(1)}.{own.group(2)}", path
            assert runpod.cuda_at_least(hw["cuda"]) == [image_cuda]  # 13.0 is the newest RunPod lists


def test_tag_check_fails_when_either_side_changes_alone():
    """The check above is no tautology: a bumped pin or a bumped tag alone breaks it."""
    docker, pyproject = DOCKERFILE.read_text("utf-8"), PYPROJECT.read_text("utf-8")
    version = pinned("axolotl")
    assert f"axolotl-cloud:{version}" in docker and f'"axolotl=={version}"' in pyproject
    with pytest.raises(AssertionError, match="pin differ"):
        check_tag_matches_pin(docker, pyproject.replace(f'"axolotl=={version}"', '"axolotl==0.20.0"'))
    with pytest.raises(AssertionError, match="pin differ"):
        check_tag_matches_pin(docker.replace(f"axolotl-cloud:{version}", "axolotl-cloud:0.18.0"), pyproject)


def test_build_pin_check_runs_and_rejects_another_axolotl(tmp_path):
    """The Dockerfile's first RUN (the pin check) is plain Python: run it against this venv, whose
    axolotl is the pinned one, then against a pyproject.toml that pins another version."""
    runs = [args for kw, args in dockerfile() if kw == "RUN"]
    check = runs[0]
    assert "m.version('axolotl')" in check and "&&" not in check
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    ok = subprocess.run(["bash", "-c", check], cwd=ROOT, env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert f"axolotl {pinned('axolotl')}" in ok.stdout
    version = pinned("axolotl")
    other = PYPROJECT.read_text("utf-8").replace(f'"axolotl=={version}"', '"axolotl==0.0.1"')
    (tmp_path / "pyproject.toml").write_text(other)
    bad = subprocess.run(["bash", "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert bad.returncode != 0
    assert f"the base image has axolotl {version}, pyproject.toml pins 0.0.1" in bad.stderr
    # A dev build of the pinned release (Axolotl's image has carried 0.16.0.dev0 at v0.16.0) passes.
    dev = PYPROJECT.read_text("utf-8").replace(f'"axolotl=={version}"', f'"axolotl=={version}.dev0"')
    (tmp_path / "pyproject.toml").write_text(dev)
    ok = subprocess.run(["bash", "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and f"axolotl {version} (pinned {version}.dev0)" in ok.stdout, ok.stderr


def test_build_installs_the_locked_extra_and_holds_torch_and_axolotl():
    """The image gets what the pod bundle gets: jobs/pod/extra-requirements.txt (derived from uv.lock),
    with no resolution of its own, so torch and axolotl stay the image's."""
    steps = dockerfile()
    copied = [args for kw, args in steps if kw == "COPY" and "extra-requirements.txt" in args]
    assert copied == ["jobs/pod/extra-requirements.txt /tmp/extra-requirements.txt"]
    install = [args for kw, args in steps if kw == "RUN" and "uv pip install" in args]
    assert len(install) == 1 and "--no-deps --requirement /tmp/extra-requirements.txt" in install[0]
    assert "torch" not in install[0] and "axolotl" not in install[0]
    lock = {p["name"]: p["version"] for p in tomllib.loads((ROOT / "uv.lock").read_text())["package"]}
    assert re.search(rf"\bpip=={re.escape(lock['pip'])}\b", install[0])  # the lock's pip, not the newest
    listed = lockfile.read()
    assert not any(r.startswith(("torch==", "axolotl==")) for r in listed) and len(listed) > 10


# --- lint ----------------------------------------------------------------------------------------------


def tool(name: str) -> str:
    path = BIN / name
    assert path.is_file(), f"{name} missing: install the dev dependencies (pip install -e '.[dev]')"
    return str(path)


def test_hadolint_passes():
    proc = subprocess.run(
        [tool("hadolint"), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_what_it_should(tmp_path):
    """The linter is live: an unpinned `latest` base and a secret in ENV fail it."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM axolotlai/axolotl-cloud:latest\nENV HF_TOKEN=hf_x\n")
    proc = subprocess.run([tool("hadolint"), "--no-color", str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout and "DL3064" in proc.stdout


def test_dockerfile_conventions():
    ins = dockerfile()
    keywords = [kw for kw, _ in ins]
    _, tag = base_image()
    assert "latest" not in tag
    for kw, args in ins:
        if kw in ("ENV", "ARG"):
            assert not any(s in args for s in SECRETS), f"a secret name in {kw} {args}"
        if kw == "RUN" and "pip install" in args and "uv pip install" not in args:
            assert "--no-cache-dir" in args, args
        if kw == "RUN" and "uv pip install" in args:
            assert "--no-cache" in args, args
    # Axolotl's entrypoint stays (sshd, Jupyter, CUDA paths, then `exec "$@"`); ours is its CMD.
    entrypoint = json.loads(dict(ins)["ENTRYPOINT"])
    cmd = json.loads(dict(ins)["CMD"])
    assert entrypoint == ["/root/cloud-entrypoint.sh"]
    workdir = dict(ins)["WORKDIR"]
    assert not workdir.startswith("/workspace")  # the image's own venv and source live there
    assert cmd == [f"{workdir}/docker/entrypoint.sh"]
    assert "COPY --chmod=0755 docker/entrypoint.sh docker/entrypoint.sh" in [
        f"COPY {a}" for k, a in ins if k == "COPY"
    ]
    assert keywords.index("ENTRYPOINT") > max(i for i, k in enumerate(keywords) if k == "RUN")


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parents wins."""

    def match(pattern: str, candidate: str) -> bool:
        pat, parts = pattern.split("/"), candidate.split("/")
        if pat[0] == "**":
            return any(match("/".join(pat[1:]), "/".join(parts[i:])) for i in range(len(parts)))
        return len(pat) == len(parts) and all(
            fnmatch.fnmatchcase(c, p) for p, c in zip(pat, parts, strict=True)
        )

    parents = ["/".join(path.split("/")[: i + 1]) for i in range(path.count("/") + 1)]
    result = False
    for raw in patterns:
        negate, pattern = raw.startswith("!"), raw.lstrip("!").rstrip("/")
        if any(match(pattern, p) for p in parents):
            result = not negate
    return result


def test_dockerignore_lets_in_exactly_what_is_copied():
    lines = (ROOT / ".dockerignore").read_text("utf-8").splitlines()
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    copied = []
    for kw, args in dockerfile():
        if kw == "COPY":
            words = [w for w in args.split() if not w.startswith("--")]
            copied += words[:-1]
    assert copied
    for source in copied:
        source = source.rstrip("/")
        files = (
            [source]
            if (ROOT / source).is_file()
            else [str(p.relative_to(ROOT)) for p in (ROOT / source).rglob("*.py")]
        )
        assert files, source
        for f in files:
            assert not ignored(f, patterns), f"COPY {source}: {f} is left out by .dockerignore"
    for kept_out in (
        ".venv/bin/python",
        "runs/registry.db",
        "assets/tiny-llama/config.json",
        "data/demo/x.json",
        "jobs/__pycache__/run.cpython-311.pyc",
        "tests/jobs/test_jobs.py",
        ".git/config",
    ):
        assert ignored(kept_out, patterns), kept_out


# --- the entrypoint ------------------------------------------------------------------------------------


def test_entrypoint_is_strict_bash_without_tracing():
    text = ENTRYPOINT.read_text("utf-8")
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    code = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    assert not re.search(r"set\s+-\w*x|xtrace|BASH_XTRACEFD", code)
    assert os.access(ENTRYPOINT, os.X_OK)
    syntax = subprocess.run(["bash", "-n", str(ENTRYPOINT)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


def test_shellcheck_passes():
    proc = subprocess.run([tool("shellcheck"), str(ENTRYPOINT)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


HF = "hf_do_not_print_me_8c1f"
WEBHOOK_SECRET = "whsec_do_not_print_me_41aa"


def config_path(volume: Path, run_id: str = "run-1") -> Path:
    """Where `jobs launch` puts a run's rendered config on the volume (jobs/pod/config.py)."""
    return volume / "configs" / run_id / "config.yaml"


def entrypoint(volume: Path, **env: str) -> subprocess.CompletedProcess:
    base = {
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",  # the image's python: it asks jobs.runfolder
        "BRIGHTRUN_VOLUME": str(volume),
        "BRIGHTRUN_DRY_RUN": "1",
        "BRIGHTRUN_CONFIG": str(config_path(volume)),
        "BRIGHTRUN_RUN_ID": "run-1",
        "HF_TOKEN": HF,
        "TRAINING_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "WEBHOOK_URL": "http://127.0.0.1:9/hooks",
    }
    base.update(env)
    proc = subprocess.run([str(ENTRYPOINT)], env=base, capture_output=True, text=True, timeout=30)
    for secret in (HF, WEBHOOK_SECRET):
        assert secret not in proc.stdout + proc.stderr
    return proc


def dry_run(volume: Path, **env: str) -> list[str]:
    proc = entrypoint(volume, **env)
    assert proc.returncode == 0, proc.stderr
    [line] = proc.stdout.splitlines()
    return shlex.split(line)


def accepted_by_jobs_cli(argv: list[str]):
    assert argv[:3] == ["python", "-m", "jobs"]
    try:
        return parse_with_overrides(jobs_parser(), argv[3:])
    except SystemExit as exc:  # argparse's error exit
        pytest.fail(f"python -m jobs rejects {shlex.join(argv[3:])} (exit {exc.code})")


def make_run(volume: Path, run_id: str, checkpoint: str | None) -> Path:
    run_dir = volume / "runs" / run_id
    (run_dir / "output").mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"run_id": run_id}))
    if checkpoint:
        (run_dir / "output" / checkpoint).mkdir()
        (run_dir / "output" / checkpoint / "trainer_state.json").write_text("{}")
    return run_dir


def test_fresh_run_command(tmp_path):
    """The rendered config, run as it is; what used to configure the pod (preset, model, data, overrides
    as variables) is no longer read: all of it is in the config."""
    argv = dry_run(
        tmp_path,
        BRIGHTRUN_HARDWARE="cpu",
        BRIGHTRUN_PRESET="aggressive",
        BRIGHTRUN_OVERRIDES="learning_rate=1e-4 max_steps=2",
    )
    runs, config = str(tmp_path / "runs"), str(config_path(tmp_path))
    assert argv == [
        "python", "-m", "jobs", "--runs-dir", runs, "run-config", config, "--run-id", "run-1",
        "--hardware", "cpu",
    ]  # fmt: skip
    args = accepted_by_jobs_cli(argv)
    assert (args.command, args.config, args.run_id, args.hardware) == ("run-config", config, "run-1", "cpu")


def test_minimal_fresh_run_command(tmp_path):
    argv = dry_run(tmp_path)
    assert argv[3:] == ["--runs-dir", str(tmp_path / "runs"), "run-config", str(config_path(tmp_path)),
                        "--run-id", "run-1"]  # fmt: skip
    accepted_by_jobs_cli(argv)


def test_resume_when_the_run_has_a_checkpoint_on_the_volume(tmp_path):
    make_run(tmp_path, "20261125-101010-balanced-8b-abcd", "checkpoint-40")
    argv = dry_run(
        tmp_path,
        BRIGHTRUN_RUN_ID="20261125-101010-balanced-8b-abcd",
        BRIGHTRUN_CONFIG=str(config_path(tmp_path, "20261125-101010-balanced-8b-abcd")),
        BRIGHTRUN_HARDWARE="cpu",
    )
    assert argv == ["python", "-m", "jobs", "--runs-dir", str(tmp_path / "runs"), "resume",
                    "20261125-101010-balanced-8b-abcd"]  # fmt: skip
    assert accepted_by_jobs_cli(argv).run == "20261125-101010-balanced-8b-abcd"


@pytest.mark.parametrize("checkpoint", [None, "checkpoint-best", "tmp-checkpoint-3"])
def test_no_usable_checkpoint_means_train_under_that_id(tmp_path, checkpoint):
    make_run(tmp_path, "run-7", checkpoint)
    config = str(config_path(tmp_path, "run-7"))
    argv = dry_run(tmp_path, BRIGHTRUN_RUN_ID="run-7", BRIGHTRUN_CONFIG=config)
    assert argv[5:] == ["run-config", config, "--run-id", "run-7"]


def test_a_checkpoint_without_run_json_is_no_run(tmp_path):
    run_dir = make_run(tmp_path, "run-8", "checkpoint-3")
    (run_dir / "run.json").unlink()
    assert dry_run(tmp_path, BRIGHTRUN_RUN_ID="run-8")[5] == "run-config"


def test_fixed_run_id_is_accepted_by_jobs_cli(tmp_path):
    argv = dry_run(tmp_path, BRIGHTRUN_RUN_ID="run-9")
    assert accepted_by_jobs_cli(argv).run_id == "run-9"


def test_paths_with_spaces_survive(tmp_path):
    volume = tmp_path / "my volume"
    config = volume / "my configs" / "run 1" / "config.yaml"
    argv = dry_run(volume, BRIGHTRUN_CONFIG=str(config))
    assert argv[4] == str(volume / "runs") and argv[6] == str(config)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BRIGHTRUN_CONFIG": ""}, "BRIGHTRUN_CONFIG is not set"),
        ({"BRIGHTRUN_RUN_ID": ""}, "BRIGHTRUN_RUN_ID is not set"),
    ],
)
def test_bad_settings_exit_2_with_the_name(tmp_path, env, message):
    proc = entrypoint(tmp_path, **env)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert message in proc.stderr
