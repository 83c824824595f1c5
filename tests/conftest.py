"""Shared fixtures: the real tokenizer, converted sample and demo data, built once per test session."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from brightrun import offline

# Offline and quiet: no hub, no telemetry, no wandb (brightrun/offline.py), for every process a test starts.
os.environ.update(offline.ALL | {"TRANSFORMERS_OFFLINE": "1"})

ROOT = Path(__file__).resolve().parent.parent
# The synthetic 12-conversation brightrun-v4 file, kept in the repo: nothing here reads ../shared.
SAMPLE = ROOT / "tests" / "fixtures" / "brightrun-v4-sample.json"
DEMO = ROOT / "data" / "demo" / "brightrun-demo.json"
TOKENIZER_DIR = ROOT / "assets" / "llama3-tokenizer"
TINY_MODEL_DIR = ROOT / "assets" / "tiny-llama"
# A string override with spaces, quotes and a `#` (YAML-quoted on the command line, as the README's
# key=value overrides are YAML scalars): a launched run's pod must get it unchanged in its config.
SPACED_OVERRIDE = "wandb_name='brightrun \"pod config\" # 14, it''s exact'"
SPACED_VALUE = 'brightrun "pod config" # 14, it\'s exact'


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """The converter's real command line, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "converters", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="session", autouse=True)
def validation_cache(tmp_path_factory):
    """Axolotl's validation cache (axolotl_configs/validate.py) in a folder of this run's own, for every
    process a test starts: no test reads or fills the user's, so each config meets Axolotl once per run."""
    os.environ["BRIGHTRUN_VALIDATION_CACHE"] = str(tmp_path_factory.mktemp("validated"))


@pytest.fixture(scope="session")
def assets() -> Path:
    if not (TOKENIZER_DIR / "tokenizer.json").exists() or not (TINY_MODEL_DIR / "config.json").exists():
        subprocess.run([sys.executable, str(ROOT / "assets" / "build.py")], check=True)
    return ROOT / "assets"


@pytest.fixture(scope="session")
def tokenizer(assets):
    """Llama 3's tokenizer as Axolotl loads it: transformers' AutoTokenizer (the converter counts without it)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))


def _convert(tmp_path_factory, name: str, source: Path, *extra: str) -> Path:
    out = tmp_path_factory.mktemp(name) / "data"
    result = run_cli("convert", str(source), "--out", str(out), "--quiet", *extra)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def sample_out(tmp_path_factory, assets) -> Path:
    """The sample converted with the defaults (val fraction 0.1, seed 0), tokens counted."""
    return _convert(
        tmp_path_factory, "sample", SAMPLE, "--tokenizer", str(TOKENIZER_DIR), "--sequence-len", "2048"
    )


# `just test` runs the suite on two pytest-xdist workers, one per core on CI, a test file at a time
# (`--dist loadfile`). A third worker did not pay: 926 s for 317 tests with three, 797 s for 304 with two
# (the 13 added include a ~120 s real run); each real run got that much slower sharing the cores. Again on
# 2026-12-01 with 485 tests: three workers had run 35% of them after 16 min (load average 6), where two
# had run 89% after 12.4 min and all in 18.5 min.
# A file's module fixtures (a finished run, a started service) are built once, on one worker. The session
# fixtures that build something slow or write into the repo (the preprocessed smoke data, data/converted/)
# are built once per run, by whichever worker asks first (`once`, below).
# The longest files start first: a worker takes the next file when it frees up, so one long real run left
# to the end would leave the others idle. A file's weight is the seconds of its `@pytest.mark.slow` tests
# plus the fixtures below that it builds, measured on CI's 2 cores (`--durations`).
BUILDS = {"customer_run": 200, "service": 90, "smoke_prepared": 50, "demo_converted": 30}


def pytest_collection_modifyitems(config, items):
    weight: dict[Path, float] = {}
    for item in items:
        slow = item.get_closest_marker("slow")
        weight[item.path] = weight.get(item.path, 0) + (slow.args[0] if slow else 0)
    for path in weight:
        used = {name for item in items if item.path == path for name in item.fixturenames}
        weight[path] += sum(seconds for name, seconds in BUILDS.items() if name in used)
    items.sort(key=lambda item: -weight[item.path])  # stable: a file's tests stay in their order


def once(tmp_path_factory, name: str, build) -> Path:
    """A folder that `build(folder)` fills once per test run: under xdist the first worker that asks
    builds it and the other waits for it, then reuses it (xdist's documented recipe, with a lock)."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent  # the run's folder, above each worker's own
    folder, done = shared / name, shared / f"{name}.done"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


AXOLOTL_BIN = Path(sys.executable).parent / "axolotl"


def run_axolotl(*args: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """The real `axolotl` CLI, with the venv's bin on PATH (its launcher looks for `accelerate` there)."""
    env = {**os.environ, "PATH": f"{AXOLOTL_BIN.parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [str(AXOLOTL_BIN), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="session")
def smoke_config(tmp_path_factory, sample_out) -> Path:
    """The smoke profile rendered over the converted sample: one config for preprocess and train."""
    from axolotl_configs import render

    def build(work: Path) -> None:
        result = render.render(
            "balanced",
            "smoke",
            str(sample_out),
            out_path=str(work / "config.yaml"),
            overrides=[
                f"output_dir={work / 'out'}",
                f"dataset_prepared_path={work / 'prepared'}",
                f"base_model={TINY_MODEL_DIR}",
            ],
        )
        render.write(result, work / "config.yaml")

    return once(tmp_path_factory, "smoke", build) / "config.yaml"


@pytest.fixture(scope="session")
def smoke_prepared(tmp_path_factory, smoke_config) -> Path:
    """`axolotl preprocess` once per run; training on the same config reuses the prepared dataset."""

    def build(_: Path) -> None:
        proc = run_axolotl("preprocess", str(smoke_config), cwd=ROOT)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    once(tmp_path_factory, "smoke-prepared", build)
    return smoke_config.parent / "prepared"


@pytest.fixture(scope="session")
def demo_converted(tmp_path_factory) -> Path:
    """data/converted/demo(-cpu) exactly as `just convert-demo` writes them: what the committed renders
    point at. Once per run: it writes into the repo."""

    def build(_: Path) -> None:
        just = Path(sys.executable).parent / "just"
        proc = subprocess.run(
            [str(just), "convert-demo"], cwd=ROOT, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stderr

    once(tmp_path_factory, "demo-converted", build)
    return ROOT / "data" / "converted" / "demo"


@pytest.fixture(scope="session")
def demo_out(tmp_path_factory) -> Path:
    return _convert(tmp_path_factory, "demo", DEMO)


def jobs_env(url: str | None = None) -> dict:
    env = {**os.environ, "PATH": f"{AXOLOTL_BIN.parent}{os.pathsep}{os.environ['PATH']}"}
    return env | ({"DATABASE_URL": url} if url else {})


def jobs_cli(*args: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """`python -m jobs ...` as a user runs it."""
    return module_cli("jobs", *args, env=env, timeout=timeout)


def module_cli(
    module: str, *args: str, env: dict | None = None, timeout: int = 900
) -> subprocess.CompletedProcess:
    """`python -m MODULE ...` (jobs, evals, versions) as a user runs it, in the repo root."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=jobs_env() | (env or {}),
    )


# One packed row per optimizer step for the local runs that test a run's life (signals, resume, events),
# not its batch: half the compute of the smoke profile's two-row steps (its batch is tested in
# tests/axolotl_configs/). A test's own overrides come after and win. Not for the pod tests: with these
# shorter steps the preemption test lost the preempted pod's last step twice on CI (see issue 16's note).
ONE_ROW = "gradient_accumulation_steps=1"


def smoke_job_args(runs: Path, data: Path, *overrides: str) -> list[str]:
    """`--runs-dir RUNS train balanced smoke --data DATA` on the tiny model, one row a step, plus overrides."""
    return [
        "--runs-dir",
        str(runs),
        "train",
        "balanced",
        "smoke",
        "--data",
        str(data),
        f"base_model={TINY_MODEL_DIR}",
        ONE_ROW,
        *overrides,
    ]


def start_smoke_job(
    runs: Path, url: str, data: Path, *overrides: str, env: dict | None = None, **popen
) -> subprocess.Popen:
    """A smoke training run in the background, for tests that interrupt it (`env`: added to ours)."""
    return subprocess.Popen(
        [sys.executable, "-m", "jobs", *smoke_job_args(runs, data, *overrides)],
        cwd=ROOT,
        env=jobs_env(url) | (env or {}),
        **popen,
    )


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(args: list[str], env: dict, log: Path, port: int, timeout: float = 60) -> subprocess.Popen:
    """`python ARGS` (the jobs service) in the background, returned once its /health answers 200."""
    import httpx

    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the service did not start:\n" + log.read_text()[-3000:])
        time.sleep(0.1)


def stop_process(proc: subprocess.Popen, seconds: float = 15) -> None:
    proc.terminate()
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def postgres_url() -> str:
    """The PostgreSQL that .ci/run starts; a skip locally without one, a failure in CI."""
    url = os.environ.get("TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI must provide TEST_POSTGRES_URL (.ci/run starts PostgreSQL)")
        pytest.skip("no TEST_POSTGRES_URL: run .ci/postgres.sh to start a local PostgreSQL")
    return url


@pytest.fixture
def browser() -> str:
    """Debian's Chromium (`bash .ci/chromium.sh`): its path. Without it the test is skipped, unless CI is
    set: then it fails, so CI cannot pass by not looking. Ask for it before a service: a skip starts nothing."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.environ.get("CI"):
        pytest.fail("CI is set but chromium is not installed: run `bash .ci/chromium.sh`")
    pytest.skip("chromium is not installed (bash .ci/chromium.sh)")


CUSTOMER_SECRET = "whsec-customer-7d41"


@pytest.fixture
def customer_app(tmp_path):
    """The customer's receiver over their tables (tests/customer_app.py), on loopback for this test."""
    from tests.customer_app import CustomerApp

    with CustomerApp(tmp_path, CUSTOMER_SECRET) as app:
        yield app


def no_loss(tally: dict) -> None:
    """What every run must give the customer's receiver: nothing refused, nothing lost, one history row
    per metrics event."""
    assert tally["refused"] == 0, tally
    assert tally["lost_writes"] == [], tally["lost_writes"]
    assert len(tally["history"]) == tally["metrics_events"], tally
