"""A judge on this machine: `transformers serve` (an OpenAI-compatible server that ships with the
transformers we already install) with a local model, for `just demo` and for trying the judge path offline.

A 135M-parameter judge checks the mechanism (real HTTP, real prompts and answers, parsing, retries,
unscored counts), not the quality: its scores mean little, and it often cannot write the JSON asked for.
A real evaluation points JUDGE_BASE_URL at a capable instruct model (docs/evaluation.md).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from brightrun.errors import ConfigError
from brightrun.offline import ALL as OFFLINE

WARNING = (
    "the judge is {model} on this machine: so small a judge checks the mechanism, not the quality; "
    "point JUDGE_BASE_URL at a capable model for a verdict that means something"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(model_dir: Path | None, port: int) -> list[str]:
    exe = shutil.which("transformers", path=str(Path(sys.executable).parent)) or "transformers"
    pinned = [str(model_dir)] if model_dir else []
    return [exe, "serve", *pinned, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]


@contextmanager
def started_server(model_dir: Path | None, log: Path, timeout_s: float = 120, cwd: Path | None = None):
    """`transformers serve` on a free loopback port, offline; yields (its base URL, `ready`) at once and
    stops it after. `ready()` blocks until /health answers, so a caller can load other things meanwhile.
    model_dir: the one model it serves; None: whichever a request names (a folder name is found relative
    to cwd, as a vLLM serves adapters by their names)."""
    port = free_port()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            serve_command(model_dir, port),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **OFFLINE},
            cwd=cwd,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"

    def ready() -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise ConfigError(
                    f"transformers serve exited with {proc.returncode} before answering; see {log}"
                )
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise ConfigError(f"transformers serve did not answer within {timeout_s:.0f} s; see {log}")
            time.sleep(0.5)

    try:
        yield base + "/v1", ready
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def transformers_server(model_dir: Path | None, log: Path, timeout_s: float = 120, cwd: Path | None = None):
    """started_server, yielding its base URL once it answers."""
    with started_server(model_dir, log, timeout_s, cwd) as (url, ready):
        ready()
        yield url


@contextmanager
def local_judge(model_dir: Path | str, log: Path, timeout_s: float = 120):
    """Start the judge's server; yield the judge settings' environment and `ready` at once (evals/run.py
    calls it when the judge stage begins: the server loads while the answers are generated); stop it after."""
    model_dir = Path(model_dir).resolve()
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"{model_dir}: not a local model folder (no config.json) for the local judge")
    with started_server(model_dir, log, timeout_s) as (base, ready):
        # transformers serve names a local model by its path; it needs no key, the client wants one.
        # It answers one request at a time (no continuous batching on CPU): more than one in flight only
        # queues them into the client's timeout (measured: 3 of 12 judgements timed out at concurrency 4).
        # The 135M model's whole JSON answers took 12 (pairwise) to 48 (pointwise) tokens in four demo runs'
        # 56 attempts; the rest ran on to the cap repeating itself. 96 tokens keeps twice the longest whole
        # answer and cuts each runaway call's ~7.5 s at 160 to ~4.5 s (~21 tokens/s here); one retry, not two.
        pace = {"JUDGE_CONCURRENCY": "1", "JUDGE_MAX_TOKENS": "96", "JUDGE_TIMEOUT_S": "300"}
        pace["JUDGE_PARSE_RETRIES"] = "1"
        env = {
            "JUDGE_BASE_URL": base,
            "JUDGE_MODEL": str(model_dir),
            "JUDGE_API_KEY": "local",
            **{k: os.environ.get(k, v) for k, v in pace.items()},
        }
        yield env, ready
