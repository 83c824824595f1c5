"""The data this package renders from: presets, model profiles, hardware profiles, sweeps.

Each is a small YAML file; a name that does not exist is an error that lists the names that do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from brightrun.errors import ConfigError

HERE = Path(__file__).resolve().parent
KINDS = {"preset": "presets", "model": "models", "hardware": "hardware", "sweep": "sweeps"}
# A profile is named, never pathed: no "/", no "..", nothing that leaves its folder (CLI and API alike).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def names(kind: str) -> list[str]:
    return sorted(p.stem for p in (HERE / KINDS[kind]).glob("*.yaml"))


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def shown(value, limit: int = 64) -> str:
    """A caller's value in a message: quoted, and cut, never echoed whole."""
    return cut(repr(value), limit)


def check_name(kind: str, name) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(
            f"{kind} {shown(name)}: a name is 1-64 letters, digits, '-' or '_' (not a path); "
            f"choose one of: {', '.join(names(kind))}"
        )
    return name


def load(kind: str, name: str) -> dict:
    path = HERE / KINDS[kind] / f"{check_name(kind, name)}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown {kind} {name!r}; choose one of: {', '.join(names(kind))}")
    data = yaml.safe_load(path.read_text("utf-8"))
    data["name"] = name
    return data


@dataclass
class Profiles:
    preset: dict
    model: dict
    hardware: dict

    @classmethod
    def load(cls, preset: str, model: str, hardware: str | None = None) -> Profiles:
        m = load("model", model)
        return cls(load("preset", preset), m, load("hardware", hardware or m["default_hardware"]))

    @property
    def throughput(self) -> dict:
        """Processed tokens per second per GPU for this model on this hardware, with its source."""
        figures = self.hardware.get("throughput", {})
        if self.model["name"] not in figures:
            raise ConfigError(
                f"hardware/{self.hardware['name']}.yaml has no throughput figure for model "
                f"{self.model['name']!r}"
            )
        return figures[self.model["name"]]
