"""Preset × model × hardware (+ the converted data) -> one complete, validated Axolotl YAML.

Steps: load the three profiles and the data manifest; merge their `axolotl:` values; derive what
depends on the data and the hardware (batch, checkpoint interval, sequence length check); apply the
command line's key=value overrides in place; render the Jinja template with StrictUndefined; check
every key against Axolotl's schema and validate the whole config with Axolotl's own validator.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import yaml

from axolotl_configs import data as data_mod
from axolotl_configs import validate
from axolotl_configs.profiles import HERE, Profiles, shown
from brightrun.errors import ConfigError

KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")

# Values every render shares; a profile or an override may replace any of them.
BASE = {
    "chat_template": "llama3",
    "special_tokens": {"pad_token": "<|end_of_text|>"},
    "dataset_prepared_path": "outputs/prepared",
    "save_total_limit": 2,
    "logging_steps": 1,
    "seed": 42,
}
BASE_WHY = {
    "chat_template": "Meta's Llama 3 Instruct template, which vLLM serves the adapter with",
    "special_tokens": "Llama 3 has no pad token; packing pads with end-of-text, never trained",
}
# One converter output file as an Axolotl chat_template dataset, with the reason beside a key.
DATASET = {
    "ds_type": "json",
    "type": "chat_template",
    "field_messages": "messages",
    "message_field_training": "train",
    "roles_to_train": ["assistant"],
    "train_on_eos": "turn",
}
DATASET_WHY = {
    "message_field_training": "only the converter's trained targets carry labels",
    "train_on_eos": "each trained target learns its end-of-turn token, so generation stops",
}
MAX_LOST_SECONDS = 600  # an interruption may cost at most ~10 minutes of training


@dataclass
class Rendered:
    text: str
    config: dict  # the YAML as Axolotl will read it
    values: dict
    derived: dict = field(default_factory=dict)  # numbers the estimate and the report reuse
    profiles: Profiles | None = None  # what it was rendered from, so the estimate loads nothing again
    data: data_mod.DataInfo | None = None


def to_yaml(value) -> str:
    """One value as inline YAML (scalars plain, lists and maps in flow style)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip()
    return text.removesuffix("...").strip()


def dataset_block(entries: list[dict]) -> str:
    """A datasets list, one key a line, every key the entry holds (an override included)."""
    lines = []
    for entry in entries:
        for i, (key, value) in enumerate(entry.items()):
            why = DATASET_WHY.get(key)
            lines.append(
                f"  {'- ' if i == 0 else '  '}{key}: {to_yaml(value)}" + (f"  # {why}" if why else "")
            )
    return "\n".join(lines)


def plain_yaml(key: str, raw: str) -> None:
    """An override value is one YAML value, never a document: no control characters (a newline would
    break the config's header line), no anchors, aliases or tags (aliases nested a few deep expand to
    gigabytes; tags construct objects)."""
    if any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in raw):
        raise ConfigError(f"override {key}: control characters (a newline, say) are not allowed in a value")
    try:
        tokens = list(yaml.scan(raw))
    except yaml.YAMLError:
        return  # not YAML at all: taken as a plain string below
    if any(isinstance(t, yaml.AliasToken | yaml.AnchorToken | yaml.TagToken) for t in tokens):
        raise ConfigError(f"override {key}: YAML anchors, aliases and tags (&, *, !) are not allowed")


def parse_overrides(items: list[str]) -> list[tuple[str, object]]:
    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {shown(item)}: expected key=value (e.g. learning_rate=1e-4)")
        if len(key) > 128 or not KEY.fullmatch(key):
            raise ConfigError(
                f"override {shown(key)}: a key is letters, digits and _, dotted (datasets.0.path)"
            )
        plain_yaml(key, raw)
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw  # not YAML: a plain string, which validation then judges
        # YAML 1.1 reads 1e-4 as a string; a learning rate written that way means the number.
        if isinstance(value, str):
            try:
                value = float(value) if any(c in value for c in "eE.") else value
            except ValueError:
                pass
        out.append((key, value))
    return out


# Keys the derivation, the estimate and preflight compute with: a wrong type here must be bad input, not a
# traceback.
WHOLE_NUMBER_KEYS = ("sequence_len", "micro_batch_size", "gradient_accumulation_steps", "max_steps", "lora_r")


def check_numbers(parsed: list[tuple[str, object]]) -> None:
    for key, value in parsed:
        number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if key in WHOLE_NUMBER_KEYS and not (number and value == int(value) and 1 <= value <= 2**31 - 1):
            raise ConfigError(f"override {key}={shown(value)}: expected a whole number >= 1 (at most 2^31-1)")
        if key == "num_epochs" and not (number and value > 0):
            raise ConfigError(f"override {key}={shown(value)}: expected a number > 0")
        if key == "lora_target_modules" and not (
            isinstance(value, list) and value and all(isinstance(m, str) for m in value)
        ):
            raise ConfigError(
                f"override {key}={shown(value)}: expected a list of module names, e.g. [q_proj,v_proj]"
            )


def set_dotted(target: dict, key: str, value) -> None:
    parts = key.split(".")
    node = target
    for i, part in enumerate(parts[:-1]):
        nxt = (
            node[int(part)]
            if isinstance(node, list) and part.isdigit()
            else node.get(part)
            if isinstance(node, dict)
            else None
        )
        if nxt is None:
            nxt = {}
            if isinstance(node, dict):
                node[part] = nxt
            else:
                raise ConfigError(f"override {key}: {'.'.join(parts[: i + 1])} is not a mapping")
        node = nxt
    last = parts[-1]
    if isinstance(node, list) and last.isdigit():
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"override {key}: {'.'.join(parts[:-1])} is not a mapping")


def get_dotted(source, key: str):
    node = source
    for part in key.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def derive(
    p: Profiles,
    info: data_mod.DataInfo,
    v: dict,
    allow_drop: bool = False,
    targets_per_step: int | None = None,
) -> tuple[dict, dict]:
    """The values that follow from data and hardware, each with the reason written beside it."""
    why = BASE_WHY | p.model.get("why", {})
    seq = int(v["sequence_len"])
    dropped = sum(n > seq for n in info.train_lengths or [])
    if info.longest_line is not None and info.longest_line > seq and not allow_drop:
        raise ConfigError(
            f"sequence_len {seq} is shorter than the longest converted line ({info.longest_line} tokens in "
            f"{info.dir}); Axolotl would drop it. Raise it: "
            f"sequence_len={2 ** math.ceil(math.log2(info.longest_line))} "
            f"(or accept the loss with --allow-drop)"
        )
    why["sequence_len"] = (
        f"--allow-drop: {dropped} train line(s) longer than this are dropped (counted in run.json)"
        if dropped
        else f"the longest converted line is {info.longest_line} tokens, so no line is dropped"
        if info.longest_line is not None
        else "the manifest has no token counts (convert with --tokenizer to check that every line fits)"
    )
    why["excess_length_strategy"] = (
        f"--allow-drop: Axolotl drops the {dropped} line(s) that do not fit; counted in run.json"
        if dropped
        else "a line that does not fit is an error, never silently dropped"
    )
    gpus = int(p.hardware["gpu_count"])
    rows_per_micro_step = int(v["micro_batch_size"]) * gpus
    rows = data_mod.rows_per_epoch(info, seq, bool(v.get("sample_packing")))
    targets_per_row = info.train_targets / rows
    # The customer's `batch_size` (pairs per optimizer step, their app's own step count) when a request
    # gives one (jobs/service/customer.py), else the preset's.
    want = targets_per_step or p.preset["targets_per_step"]
    accum = max(1, round(want / (rows_per_micro_step * targets_per_row)))
    if v.get("gradient_accumulation_steps"):  # set on the command line: the numbers follow it
        accum = int(v["gradient_accumulation_steps"])
    steps_per_epoch = math.ceil(rows / (rows_per_micro_step * accum))
    per_step = rows_per_micro_step * accum * targets_per_row
    source = f"batch_size {want} (the request's" if targets_per_step else f"the seed's {want}"
    why["gradient_accumulation_steps"] = (
        f"{source} trained targets per step: a {seq}-token row holds ~{targets_per_row:.1f} here "
        f"({'measured' if info.has_tokens else 'assumed'}), so ~{per_step:.0f} per step, "
        f"{steps_per_epoch} steps per epoch"
    )
    tput = p.throughput
    tokens_per_step = seq * rows_per_micro_step * accum
    seconds_per_step = tokens_per_step / (tput["tokens_per_s"] * gpus)
    total_steps = math.ceil(steps_per_epoch * float(v["num_epochs"]))  # as Trainer counts a fraction
    if v.get("max_steps"):
        total_steps = min(total_steps, int(v["max_steps"]))
    save_steps = max(1, min(total_steps, math.floor(MAX_LOST_SECONDS / seconds_per_step)))
    why["save_steps"] = (
        f"at most ~10 min lost to an interruption: ~{seconds_per_step:.1f} s per step at "
        f"{tput['tokens_per_s']} tokens/s per GPU (hardware/{p.hardware['name']}.yaml, estimated)"
    )
    derived = {
        "excess_length_strategy": "drop" if dropped else "raise",
        "gradient_accumulation_steps": accum,
        "save_steps": save_steps,
        "eval_steps": save_steps,
    }
    numbers = {
        "rows_per_epoch": rows,
        "targets_per_row": targets_per_row,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "tokens_per_step": tokens_per_step,
        "seconds_per_step": seconds_per_step,
        "lines_dropped": dropped,
    }
    return derived, why | {"_numbers": numbers}


def run_name(p: Profiles) -> str:
    default = p.hardware["name"] == p.model["default_hardware"]
    return f"{p.preset['name']}-{p.model['name']}" + ("" if default else f"-{p.hardware['name']}")


def merged_values(p: Profiles, info: data_mod.DataInfo, out_name: str, data_at: str) -> dict:
    v = copy.deepcopy(BASE)
    v |= (
        copy.deepcopy(p.model["axolotl"])
        | copy.deepcopy(p.preset["axolotl"])
        | copy.deepcopy(p.hardware.get("axolotl") or {})
    )
    v["datasets"] = [{"path": f"{data_at}/train.jsonl", **DATASET}]
    v["test_datasets"] = [{"path": f"{data_at}/val.jsonl", "split": "train", **DATASET}]
    v["output_dir"] = f"outputs/{out_name}"
    return v


def overrides_note(parsed: list[tuple[str, object]]) -> str:
    if not parsed:
        return ""
    return "# Overrides: " + " ".join(f"{k}={to_yaml(val)}" for k, val in parsed) + "\n"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,  # an {% include %} line leaves no blank line behind
        autoescape=False,
    )
    env.filters["y"] = to_yaml
    env.filters["datasets"] = dataset_block
    return env


def render(
    preset: str,
    model: str,
    data_dir: str,
    hardware: str | None = None,
    overrides: list[str] | None = None,
    out_path: str = "config.yaml",
    check: bool = True,
    allow_drop: bool = False,
    data_at: str | None = None,
    targets_per_step: int | None = None,
) -> Rendered:
    """`data_at`: where the trainer finds data_dir, when not at the same path (a pod's volume, for
    `jobs launch`): the config's dataset paths and its header name it; the data is read here."""
    p = Profiles.load(preset, model, hardware)
    info = data_mod.read(data_dir)
    parsed = parse_overrides(overrides or [])
    check_numbers(parsed)
    try:
        return render_parsed(
            p, info, parsed, preset, model, out_path, check, allow_drop, data_at, targets_per_step
        )
    except (IndexError, AttributeError, OverflowError, TypeError, ValueError, KeyError) as exc:
        if not parsed:
            raise  # no override to blame: a bug of ours, with its traceback
        # An override that breaks the structure (datasets.5.path past the list, datasets.0=5): bad input.
        keys = ", ".join(shown(k, 40) for k, _ in parsed)
        raise ConfigError(
            f"the overrides ({keys}) cannot be rendered: {type(exc).__name__}: {shown(str(exc), 160)}"
        ) from None


def render_parsed(
    p: Profiles,
    info: data_mod.DataInfo,
    parsed: list[tuple[str, object]],
    preset: str,
    model: str,
    out_path: str,
    check: bool,
    allow_drop: bool,
    data_at: str | None = None,
    targets_per_step: int | None = None,
) -> Rendered:
    name = run_name(p)
    data_at = data_at.rstrip("/") if data_at else info.dir

    # Overrides apply before deriving, so that e.g. sequence_len=8192 re-derives the batch.
    v = merged_values(p, info, name, data_at)
    for key, value in parsed:
        set_dotted(v, key, value)
    derived, why = derive(p, info, v, allow_drop, targets_per_step)
    for key, value in derived.items():
        v.setdefault(key, value)
    for key, value in parsed:  # an explicit override beats a derived value
        set_dotted(v, key, value)
        if key in why:
            why[key] = "set on the command line (see the header)"
    numbers = why.pop("_numbers")

    context = {
        "name": name,
        "preset": preset,
        "model": model,
        "hardware": p.hardware["name"],
        "hw": p.hardware,
        "out_path": out_path,
        "data_dir": data_at,
        "v": v,
        "why": why,
        "launcher_hint": "   (add --launcher python on CPU)" if p.hardware["gpu_type"] == "none" else "",
        "manifest_note": f" (sha256 {info.manifest_sha256[:12]})",
        "overrides_note": overrides_note(parsed),
        "eval_template": "eval-heldout.yaml.j2" if info.val_lines else "eval-none.yaml.j2",
        "kernels_template": p.model["kernels_template"],
        "distributed_template": p.hardware["distributed_template"],
        "extra_overrides": "",
    }
    env = environment()
    template = env.get_template("axolotl.yaml.j2")
    text = template.render(context)
    config = yaml.safe_load(text)
    # An override of a key the template does not write goes in a last section of its own.
    extra = {k: v[k.split(".")[0]] for k, _ in parsed if k.split(".")[0] not in config}
    if extra:
        context["extra_overrides"] = "\n# ── Overrides with no place above ──\n" + yaml.safe_dump(
            extra, sort_keys=False, default_flow_style=False, width=10**6
        )
        text = template.render(context)
        config = yaml.safe_load(text)
    for key, value in parsed:
        try:
            landed = get_dotted(config, key)
        except (KeyError, IndexError, TypeError):
            landed = object()
        if landed != value:
            raise ConfigError(f"override {key}: did not land in the rendered config (template bug)")
    if check:
        validate.check(copy.deepcopy(config))
    return Rendered(text=text, config=config, values=v, derived=numbers, profiles=p, data=info)


def write(rendered: Rendered, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(rendered.text, "utf-8")
    tmp.replace(out)


GOLDEN_DIR = HERE / "rendered"


def golden_path(preset: str, model: str) -> str:
    return f"axolotl_configs/rendered/{preset}-{model}.yaml"


def golden_data(model: str, default: str) -> str:
    """The data a model's committed renders point at: its own when its tokenizer counts differently."""
    from axolotl_configs.profiles import load

    return load("model", model).get("golden_data", default)


def regenerate_goldens(data_dir: str) -> list[str]:
    """Every preset × model on its default hardware, as committed (`just configs-regen`)."""
    from axolotl_configs.profiles import names

    written = []
    for preset in names("preset"):
        for model in names("model"):
            out = golden_path(preset, model)
            write(render(preset, model, golden_data(model, data_dir), out_path=out), HERE.parent / out)
            written.append(out)
    return written
