"""Sweeps in Axolotl's own format: a YAML of lists (a cartesian product) plus a `_:` list of settings
that go together. Axolotl's `generate_sweep_configs` expands it (same trials, same seeded shuffle as
`axolotl train --sweep`); each trial is then rendered as overrides, so its derived values and comments
stay right, validated, and written as a runnable file DIR/sweepNNNN.yaml, with DIR/sweep.json listing
what each trial changes.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import sys
from contextlib import redirect_stdout
from pathlib import Path

import yaml

from axolotl_configs import render as render_mod
from axolotl_configs.profiles import HERE, Profiles, check_name
from brightrun.errors import ConfigError


def locate(sweep: Path | str) -> Path:
    """A sweep by name (axolotl_configs/sweeps/NAME.yaml) or, on the command line, the user's own file
    (a regular file: a pipe or a device is refused, not read)."""
    text = str(sweep)
    if "/" not in text and not text.endswith((".yaml", ".yml")):
        return HERE / "sweeps" / f"{check_name('sweep', text)}.yaml"
    path = Path(sweep)
    if path.exists() and not path.is_file():
        raise ConfigError(f"{path}: not a regular file, expected a sweep YAML")
    return path


def trials(sweep_file: Path) -> list[dict]:
    sweep_file = locate(sweep_file)
    try:
        spec = yaml.safe_load(sweep_file.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{sweep_file}: sweep file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{sweep_file}: not YAML: {exc}") from None
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(f"{sweep_file}: expected a mapping of key: [values] (and optionally _: [{{...}}])")
    for key, values in spec.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{sweep_file}: {key}: expected a non-empty list of values")
        if key == "_" and not all(isinstance(x, dict) for x in values):
            raise ConfigError(f"{sweep_file}: _: expected a list of mappings (settings that go together)")
    with redirect_stdout(io.StringIO()):  # it prints every combination
        return axolotl_sweeps().generate_sweep_configs({}, spec)


def axolotl_sweeps():
    """Axolotl's axolotl/cli/utils/sweeps.py (standard library only), loaded from its file without the
    packages above it: importing axolotl.cli.utils runs their __init__ files, which import torch and
    transformers (~6 s), and a sweep whose trials are all validated already (validate.py's cache) needs
    nothing else of Axolotl. Imported the usual way where that file is not found or does not load alone."""
    name = "axolotl.cli.utils.sweeps"
    if name in sys.modules:
        return sys.modules[name]
    try:
        top = importlib.util.find_spec("axolotl")  # finds, does not import
        path = Path(top.submodule_search_locations[0]) / "cli" / "utils" / "sweeps.py"
        spec = importlib.util.spec_from_file_location("brightrun_axolotl_sweeps", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.generate_sweep_configs  # noqa: B018 -- the function is there
        return module
    except Exception:  # any other layout: the usual import, slower but the same function
        return importlib.import_module(name)


def expand(
    preset: str, model: str, sweep_file: Path, out_dir: Path, data_dir: str, hardware: str | None = None
) -> list[Path]:
    combos = trials(sweep_file)
    base = render_mod.run_name(Profiles.load(preset, model, hardware))
    rendered = []
    for i, combo in enumerate(combos, start=1):
        name = f"sweep{i:04d}"
        overrides = [
            f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
            for k, v in combo.items()
        ]
        out = out_dir / f"{name}.yaml"
        overrides.append(f"output_dir=outputs/{base}/{name}")  # trials must not share a folder
        try:
            result = render_mod.render(preset, model, data_dir, hardware, overrides, out_path=str(out))
        except ConfigError as exc:
            raise ConfigError(f"{sweep_file}: trial {i} {combo}: {exc}") from None
        rendered.append((out, result, combo))
    # Nothing is written unless every trial rendered and validated.
    for out, result, _ in rendered:
        render_mod.write(result, out)
    index = [{"file": out.name, "overrides": combo} for out, _, combo in rendered]
    (out_dir / "sweep.json").write_text(json.dumps(index, indent=2) + "\n", "utf-8")
    return [out for out, _, _ in rendered]
