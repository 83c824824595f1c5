"""A version's answer to chat messages, for the jobs service's "test a model" (POST .../versions/{v}/test).

Two back-ends, picked by the environment once, when the service starts:
- `openai`: MODELS_SERVER_URL (e.g. http://gpu-box:8000/v1, the vLLM of `just serve NAME@vA NAME@vB`) with
  MODELS_SERVER_API_KEY if it wants one. Each version is asked for by its served name, NAME-vN.
- `transformers` (otherwise): base + the version's adapter on this machine's CPU, in one worker process
  (concurrent.futures with spawn: torch never loads into the service, and a generation never blocks its event
  loop). The worker keeps the last two loaded models (an LRU), so a second question to a version costs only
  its generation. The adapter comes from its run folder when that holds the very adapter promoted (same
  sha256), else from the store into a cache, every sha256 checked (store.download). Nothing is downloaded
  from the Hub: a base that is not on this machine, or too big for a CPU, is refused with what to do.

Bounded: max_tokens (the request's, capped), time (timeout_s: the caller gets 504 then; the worker's
generate() stops itself at the same deadline) and concurrency (a slot per generation, held until the worker
is really done; none free: 429). Refusals are `Unanswered` with the HTTP status they are answered with.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from brightrun.offline import ALL as OFFLINE
from versions import registry, sides

MAX_TOKENS = 256  # an answer to look at, not a document: CPU generation of a 1B model is ~10 tokens/s
MAX_MESSAGES = 32
MAX_CHARS = 8000  # one message
MAX_TOTAL_CHARS = 32000  # all messages: a CPU prefill of ~8k tokens is already tens of seconds
TIMEOUT_S = 60.0
RETRY_AFTER_S = 5  # a busy slot: most CPU answers of a few dozen tokens take seconds
CPU_MAX_BYTES = 4 * 10**9  # a base over this (weights on disk) is a GPU's job: vLLM via MODELS_SERVER_URL
WEIGHTS = ("*.safetensors", "*.bin")


class Unanswered(Exception):
    """No answer, and why, with the HTTP status the service answers it with."""

    status = 502


class Refused(Unanswered):
    status = 409


class NotServed(Unanswered):
    """The model server does not serve that name (HTTP 404): another name may be served."""


class Busy(Unanswered):
    status = 429


class TimedOut(Unanswered):
    status = 504


def adapter_folder(v: registry.ModelVersion, runs: Path) -> Path:
    """The version's adapter on this machine: its run folder's output/ when it holds the adapter promoted,
    else the version from the store in the cache (versions/sides.local_copy: every sha256 checked)."""
    folder, downloaded = sides.local_copy(v, runs, say=lambda _: None)
    return folder / ("adapter" if downloaded else "output")


def local_base(base_model: str, max_bytes: int) -> str:
    """The base model as a folder on this machine (a path, or a Hub id already in the Hugging Face cache),
    small enough for a CPU. Never downloads: a service should not start fetching 140 GB on a request."""
    if Path(base_model).is_dir():
        path = Path(base_model)
    else:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

        try:
            path = Path(snapshot_download(base_model, local_files_only=True))
        except (LocalEntryNotFoundError, HFValidationError, OSError):
            raise Refused(
                f"base model {base_model} is not on this machine; the transformers back-end downloads "
                "nothing: set MODELS_SERVER_URL to a server that serves this version (`just serve`)"
            ) from None
    weights = sum(p.stat().st_size for pattern in WEIGHTS for p in path.glob(pattern))
    if weights > max_bytes:
        raise Refused(
            f"base model {base_model} ({weights / 1e9:.1f} GB) is too big to answer on CPU here "
            f"(at most {max_bytes / 1e9:.1f} GB); set MODELS_SERVER_URL to its vLLM server (`just serve`)"
        )
    return str(path)


@dataclass
class Answerer:
    server_url: str | None = None
    api_key: str | None = field(default=None, repr=False)  # never logged, never answered
    timeout_s: float = TIMEOUT_S
    concurrency: int = 1
    cpu_max_bytes: int = CPU_MAX_BYTES
    _busy: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _pool: ProcessPoolExecutor | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls) -> Answerer:
        def number(name: str, default: float, low: float, high: float) -> float:
            raw = os.environ.get(name)
            try:
                value = float(raw) if raw else default
            except ValueError:
                raise ValueError(f"{name}={raw!r}: expected a number") from None
            if not low <= value <= high:
                raise ValueError(f"{name}={raw!r}: expected {low:g} to {high:g}")
            return value

        url = os.environ.get("MODELS_SERVER_URL") or None
        return cls(
            server_url=url.rstrip("/") if url else None,
            api_key=os.environ.get("MODELS_SERVER_API_KEY") or None,
            timeout_s=number("MODELS_TEST_TIMEOUT_S", TIMEOUT_S, 1, 600),
            # A CPU worker answers one at a time; a vLLM server batches, so a few may wait on it at once.
            concurrency=int(number("MODELS_TEST_CONCURRENCY", 4 if url else 1, 1, 64)),
        )

    @property
    def backend(self) -> str:
        return "openai" if self.server_url else "transformers"

    # ---- slots: one per generation in flight, given back only when it is really over

    def _take(self) -> None:
        with self._lock:
            if self._busy >= self.concurrency:
                raise Busy(
                    f"{self._busy} answer(s) being generated already (at most {self.concurrency}); retry soon"
                )
            self._busy += 1

    def _give(self, *_) -> None:
        with self._lock:
            self._busy -= 1

    async def answer(self, v: registry.ModelVersion, runs: Path, messages: list[dict], max_tokens: int,
                     temperature: float, served: tuple[str, ...] = ()) -> dict:  # fmt: skip
        """{"answer", "tokens", "seconds", "backend", "model"}: the version's reply to messages. served: the
        server's names to ask first (a stage's, NAME-production, which hot swap keeps on the version now
        in that stage), then the version's own NAME-vN."""
        self._take()
        start = time.monotonic()
        if self.server_url:
            try:
                names = (*served, sides.version_name(v))
                for i, name in enumerate(names):
                    try:
                        result = await self._from_server(name, messages, max_tokens, temperature)
                        break
                    except NotServed:
                        if i == len(names) - 1:
                            raise
            finally:
                self._give()
        else:
            result = await self._from_worker(v, runs, messages, max_tokens, temperature)  # gives it back
        return {**result, "seconds": round(time.monotonic() - start, 3), "backend": self.backend}

    # ---- the OpenAI-compatible server

    async def _from_server(
        self, model: str, messages: list[dict], max_tokens: int, temperature: float
    ) -> dict:
        import openai

        where = "the model server (MODELS_SERVER_URL)"  # its URL may hold credentials: not repeated
        client = openai.AsyncOpenAI(
            base_url=self.server_url, api_key=self.api_key or "none", timeout=self.timeout_s, max_retries=0
        )
        try:
            async with client:
                reply = await asyncio.wait_for(
                    client.chat.completions.create(
                        model=model, messages=messages, max_tokens=max_tokens, temperature=temperature
                    ),
                    self.timeout_s,
                )
        except (TimeoutError, openai.APITimeoutError):
            raise TimedOut(f"{where} did not answer within {self.timeout_s:g} s") from None
        except openai.NotFoundError:
            raise NotServed(
                f"{where} does not serve {model}; start it with the version (`just serve`)"
            ) from None
        except (openai.AuthenticationError, openai.PermissionDeniedError):
            raise Unanswered(f"{where} refused the key (MODELS_SERVER_API_KEY)") from None
        except openai.APIStatusError as exc:
            raise Unanswered(f"{where} answered HTTP {exc.status_code}") from None
        except openai.APIError as exc:
            raise Unanswered(f"{where} could not be reached ({type(exc).__name__})") from None
        if not reply.choices:
            raise Unanswered(f"{where} answered no choices")
        usage = reply.usage.completion_tokens if reply.usage else None
        # Stripped, as the worker's answer and the evaluation's (evals/generate.py) are.
        return {"model": model, "answer": (reply.choices[0].message.content or "").strip(), "tokens": usage}

    # ---- the worker process (transformers on CPU)

    def _worker(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_offline
                )
            return self._pool

    async def _from_worker(self, v, runs: Path, messages, max_tokens: int, temperature: float) -> dict:
        deadline = time.monotonic() + self.timeout_s
        try:
            base = await asyncio.to_thread(local_base, v.base_model, self.cpu_max_bytes)
            adapter = await asyncio.to_thread(adapter_folder, v, runs)
            left = deadline - time.monotonic()
            future = self._worker().submit(
                generate, base, str(adapter), messages, max_tokens, temperature, left
            )
        except BaseException:
            self._give()
            raise
        future.add_done_callback(self._give)  # the slot stays taken while the worker still works
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future), max(0.0, left))
        except TimeoutError:
            raise TimedOut(
                f"no answer within {self.timeout_s:g} s (loading the model, or generating on CPU); "
                "ask for fewer max_tokens, or retry once the model is loaded"
            ) from None
        except BrokenProcessPool:
            with self._lock:
                self._pool = None  # the next request starts a new worker
            raise Unanswered("the generation worker died (out of memory?); retry") from None
        return {"model": sides.version_name(v), **result}  # the name it answers by on a server too; no path

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


# ---- in the worker process


def _offline() -> None:
    os.environ.update(OFFLINE)  # local folders only: a lookup on the Hub could only wait or fail


@functools.lru_cache(maxsize=2)
def _loaded(base: str, adapter: str):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evals.generate import stop_ids

    tokenizer = AutoTokenizer.from_pretrained(base)
    if not tokenizer.chat_template:
        raise Refused(f"base model {base}: its tokenizer has no chat template to render the messages with")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype="auto"), adapter)
    return model.eval(), tokenizer, stop_ids(tokenizer, base)


def generate(base: str, adapter: str, messages: list[dict], max_tokens: int, temperature: float,
             seconds: float) -> dict:  # fmt: skip
    """The adapter's answer, rendered and cut at end of turn as the evaluation does (evals/generate.py)."""
    import torch

    from evals.generate import _decoded, _rendered

    start = time.monotonic()
    model, tokenizer, stops = _loaded(base, adapter)
    ids = _rendered(tokenizer, {"messages": messages})
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=max_tokens,
            eos_token_id=stops,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0],
            # The caller's deadline, less the load: generate() stops itself, so the slot frees soon after.
            max_time=max(0.05, seconds - (time.monotonic() - start)),
            **sampling,
        )
    row = _decoded(tokenizer, out[0, len(ids) :].tolist(), stops, max_tokens)
    return {"answer": row["text"], "tokens": row["new_tokens"], "finish_reason": row["finish_reason"]}
