"""Strict checks of a rendered config: every key known to Axolotl, then Axolotl's own validator.

Axolotl silently ignores unknown keys (`lora_rr: 8` trains with the default rank), so keys are
checked against its schema first: `AxolotlInputConfig`'s fields and aliases, widened by the input
arguments of the plugins the config loads; dataset entries against `SFTDataset`; nested blocks
(fsdp_config, special_tokens) against their own models. Then `validate_config` checks types and
combinations. Importing Axolotl's schema takes 6-10 s on two cores (a render that validates: ~14 s), so
it happens here only (`jobs train` calls this in its preprocess subprocess, where Axolotl is imported
anyway), and only once per config: a success is remembered (below), so rendering a config again
imports nothing heavy.

The cache of successes: one small JSON file per key in $BRIGHTRUN_VALIDATION_CACHE, by default
$XDG_CACHE_HOME/brightrun/validated/ (~/.cache/brightrun/validated/): per user and per machine like any
cache, outside the checkout (nothing to ignore or commit; a fresh clone or worktree reuses it), and
safe to delete at any time. BRIGHTRUN_VALIDATION_CACHE=off validates every time. The key is the sha256 of
everything the outcome depends on:
  - the config exactly as validated (canonical JSON; the plugins it loads are part of it);
  - Axolotl's installed version (importlib.metadata: no import), and the name-version of every
    distribution installed beside it (torch, transformers, pydantic, flash-attn...: its validators
    consult some of them);
  - this file's source (the checks and this cache), and the source of each plugin the config names
    outside Axolotl (jobs/axolotl_plugin.py: its arguments widen the accepted keys);
  - the Python version and the visible NVIDIA GPUs (a validator skips a check without CUDA).
Only successes are stored: a config that fails runs through Axolotl again and shows its error again.
What Axolotl logged as a warning while validating it is stored with it and logged again on a hit. An entry
that cannot be read, is not JSON, or names another key or Axolotl version is a miss (and is rewritten).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import sys
import tempfile
import threading
import typing
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

from axolotl_configs.profiles import cut, shown
from brightrun.errors import ConfigError

if typing.TYPE_CHECKING:
    from pydantic import BaseModel

DATASET_KEYS = ("datasets", "test_datasets")
CACHE_ENV = "BRIGHTRUN_VALIDATION_CACHE"
CACHE_OFF = ("off", "0", "no", "false")


def _accepted(model: type[BaseModel]) -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        keys.add(name)
        for alias in (field.alias, field.validation_alias):
            if isinstance(alias, str):
                keys.add(alias)
            elif alias is not None and hasattr(alias, "choices"):
                keys.update(c for c in alias.choices if isinstance(c, str))
    return keys


def _nested_model(annotation) -> type[BaseModel] | None:
    """The pydantic model inside a field's annotation (`FSDPConfig | None` -> FSDPConfig)."""
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def input_schema(cfg: dict) -> type[BaseModel]:
    """AxolotlInputConfig as Axolotl builds it for this config: plus its plugins' arguments."""
    from axolotl.integrations.config import merge_input_args
    from axolotl.utils.config import prepare_plugins
    from axolotl.utils.dict import DictDefault

    prepare_plugins(DictDefault(cfg))
    return merge_input_args()[1]


def unknown_keys(cfg: dict) -> list[str]:
    from axolotl.utils.schemas.datasets import SFTDataset

    schema = input_schema(cfg)
    problems = []

    def check(mapping: dict, model: type[BaseModel], where: str) -> None:
        accepted = _accepted(model)
        for key, value in mapping.items():
            path = f"{where}{key}"
            if key not in accepted:
                close = difflib.get_close_matches(key, sorted(accepted), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                problems.append(f"{path}: unknown key{hint}; Axolotl would ignore it silently")
                continue
            if where == "" and key in DATASET_KEYS and isinstance(value, list):
                for i, entry in enumerate(value):
                    if isinstance(entry, dict):
                        check(entry, SFTDataset, f"{path}[{i}].")
                continue
            field = model.model_fields.get(key)
            nested = _nested_model(field.annotation) if field else None
            if nested is not None and isinstance(value, dict):
                check(value, nested, f"{path}.")

    check(cfg, schema, "")
    return problems


def axolotl_validate(cfg: dict) -> dict:
    """Axolotl's own validator; its errors become 'key: message' lines."""
    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault
    from pydantic import ValidationError

    try:
        with redirect_stdout(io.StringIO()):
            return validate_config(DictDefault(cfg))
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            loc = ".".join(str(p) for p in err["loc"]) or "(config)"
            # The input is echoed cut (shown): a message never grows with what the caller sent.
            got = f" (got {shown(err.get('input'), 80)})" if "input" in err else ""
            lines.append(
                f"{cut(loc, 80)}: {cut(err['msg'], 300)}{got}" if err["loc"] else cut(err["msg"], 300)
            )
        raise ConfigError("Axolotl rejects the config:\n  " + "\n  ".join(lines[:10])) from None
    except ValueError as exc:
        raise ConfigError(f"Axolotl rejects the config: {cut(str(exc), 500)}") from None


def check(cfg: dict) -> None:
    """Raise ConfigError unless the key check and Axolotl's validator accept cfg; a success is cached."""
    key = cache_key(cfg)
    if key is not None:
        logged = cached(key)
        if logged is not None:
            for name, level, message in logged:
                logging.getLogger(name).log(level, "%s", message)
            return
    with axolotl_warnings() as logged:
        problems = unknown_keys(cfg)
        if problems:
            raise ConfigError("unknown keys:\n  " + "\n  ".join(problems))
        axolotl_validate(cfg)
    if key is not None:
        remember(key, logged)


# ── The cache of successes (see the module's docstring) ──


def cache_dir() -> Path | None:
    """Where successes are kept; None when the cache is off or there is no home to keep it in."""
    setting = os.environ.get(CACHE_ENV, "").strip()
    if setting.lower() in CACHE_OFF:
        return None
    if setting:
        return Path(setting).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    try:
        base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    except RuntimeError:  # no home directory
        return None
    return base / "brightrun" / "validated"


class _NotJson(Exception):
    pass


def canonical(value) -> str:
    """The config as one JSON text: keys sorted, no spaces. Only what YAML's safe loader gives for a config
    (string keys; str, int, float, bool, None, lists): anything else (a date, an integer key, which JSON
    would make the string "1") makes the config uncacheable rather than equal to another."""

    def walk(node) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if not isinstance(k, str):
                    raise _NotJson
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        elif not (node is None or isinstance(node, str | int | float)):  # bool is an int
            raise _NotJson

    walk(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _sha256_file(path: str | os.PathLike | None) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None
    except OSError:
        return None


@functools.cache
def environment() -> dict:
    """What the outcome depends on besides the config, the same for a whole process (a sweep's trials)."""
    axolotl = importlib.metadata.distribution("axolotl")
    site = Path(str(axolotl.locate_file("")))
    try:
        installed = sorted(n for n in os.listdir(site) if n.endswith((".dist-info", ".egg-info")))
    except OSError:
        installed = []
    try:
        gpus = sorted(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        gpus = []
    return {
        "axolotl": axolotl.version,
        "installed": hashlib.sha256("\n".join(installed).encode()).hexdigest(),
        "validator": _sha256_file(__file__),
        "python": sys.version,
        "gpus": [gpus, os.environ.get("CUDA_VISIBLE_DEVICES")],
    }


def plugin_sources(cfg: dict) -> dict:
    """sha256 of the module of each plugin outside Axolotl's own (whose version is in the key already)."""
    sources = {}
    plugins = cfg.get("plugins") or []
    for plugin in plugins if isinstance(plugins, list) else []:
        if not isinstance(plugin, str) or plugin.startswith("axolotl.") or "." not in plugin:
            continue
        try:
            spec = importlib.util.find_spec(plugin.rsplit(".", 1)[0])
        except Exception:  # its package does not import: Axolotl cannot load the plugin either
            spec = None
        sources[plugin] = _sha256_file(spec.origin if spec is not None else None)
    return sources


def cache_key(cfg: dict) -> str | None:
    """The key of this validation, or None when it is not cached (cache off, a config JSON cannot hold
    exactly, Axolotl not installed)."""
    if cache_dir() is None:
        return None
    try:
        config = canonical(cfg)
        env = environment()
    except (_NotJson, importlib.metadata.PackageNotFoundError, RecursionError):
        return None
    whole = {"config": config, "plugins": plugin_sources(cfg), **env}
    return hashlib.sha256(json.dumps(whole, sort_keys=True).encode()).hexdigest()


def cached(key: str) -> list | None:
    """The warnings stored with a success, or None on a miss (absent, unreadable, or not this key's)."""
    folder = cache_dir()
    try:
        entry = json.loads((folder / f"{key}.json").read_text("utf-8"))
        logged = entry["warnings"]
        ok = entry["key"] == key and entry["axolotl"] == environment()["axolotl"]
        if ok and all(
            isinstance(name, str) and isinstance(level, int) and isinstance(message, str)
            for name, level, message in logged
        ):
            return logged
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        pass
    return None


def remember(key: str, logged: list) -> None:
    """Store a success atomically (a temporary file renamed over the entry); a cache that cannot be
    written is no error: the next run validates again."""
    folder = cache_dir()
    entry = {"key": key, "axolotl": environment()["axolotl"], "warnings": logged}
    tmp = None
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{key[:16]}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(entry, out)
        os.replace(tmp, folder / f"{key}.json")
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


class _Recorder(logging.Handler):
    """What Axolotl logs at WARNING and above while it validates (in this thread), recorded to be logged
    again on a hit. Printed as logging prints it without this handler: by logging's last resort (stderr,
    the message only) when no other handler would see it, else by those handlers."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.logged: list = []
        self.thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:  # another validation's, in a server's other thread
            return
        self.logged.append([record.name, record.levelno, record.getMessage()])
        logger = logging.getLogger(record.name)
        while logger is not None:
            if any(not isinstance(h, _Recorder) for h in logger.handlers):
                return
            logger = logger.parent if logger.propagate else None
        last = logging.lastResort
        if last is not None and record.levelno >= last.level:
            last.handle(record)


@contextmanager
def axolotl_warnings():
    recorder = _Recorder()
    root = logging.getLogger("axolotl")
    root.addHandler(recorder)
    try:
        yield recorder.logged
    finally:
        root.removeHandler(recorder)
