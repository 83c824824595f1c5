"""Strict checks of a rendered config: every key known to Axolotl, then Axolotl's own validator.

Axolotl silently ignores unknown keys (`lora_rr: 8` trains with the default rank), so keys are
checked against its schema first: `AxolotlInputConfig`'s fields and aliases, widened by the input
arguments of the plugins the config loads; dataset entries against `SFTDataset`; nested blocks
(fsdp_config, special_tokens) against their own models. Then `validate_config` checks types and
combinations. Importing Axolotl's schema takes 6-10 s on two cores, so it happens here only
(`jobs train` calls this in its preprocess subprocess, where Axolotl is imported anyway).
"""

from __future__ import annotations

import difflib
import io
import logging
import typing
from contextlib import redirect_stdout

from pydantic import BaseModel, ValidationError

from axolotl_configs.profiles import cut, shown
from brightrun.errors import ConfigError

DATASET_KEYS = ("datasets", "test_datasets")


# torchao and torch log harmless warnings when Axolotl is imported on a CPU machine (missing CUDA
# extensions, enum registration); a person rendering a config should see only what concerns them.
def quiet_third_party_logs() -> None:
    for name in ("torchao", "torch.utils._pytree", "bitsandbytes"):
        logging.getLogger(name).setLevel(logging.ERROR)


quiet_third_party_logs()


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


def check(cfg: dict) -> dict:
    problems = unknown_keys(cfg)
    if problems:
        raise ConfigError("unknown keys:\n  " + "\n  ".join(problems))
    return axolotl_validate(cfg)
