"""Preflight: before anything is started or rented, the checks that say a run cannot succeed, each in one
line with what to do (issue 26). One module, run by `jobs train` (jobs/run.py prepare), the service's
starts (a local start goes through prepare; a pod start: jobs/service/pods.py), `jobs launch`
(jobs/pod/launch.py, before the pod is created) and the pod's own start (`jobs run-config`,
jobs/pod/config.py). `jobs preflight PRESET MODEL [--launch ...]` prints them all as a table.

  hardware    a CUDA GPU when the profile needs one (4-bit weights, flash attention), as many as the
              hardware file names, each with the estimate's modelled peak (axolotl_configs/estimate.py)
  base model  a local folder, or in the Hub cache, or the Hub reachable (not HF_HUB_OFFLINE) with the
              token's access to a gated repository (huggingface_hub's auth_check: a 403 "GatedRepo")
  disk        the Hub cache's free space against the weights still to download, the run folder's against
              the checkpoints it will keep; for a launch the pod's volume size against both
  launch      the image's CUDA against the hosts RunPod offers, the private image's registry credential,
              the network volume's S3 keys, the estimate against --max-cost

A failed check raises ConfigError (exit 2, a 4xx from the service) before any run folder, row or pod.
Each check is a plain function returning a Check; nothing here writes anything.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from brightrun.errors import ConfigError

PASS, FAIL, SKIP = "pass", "fail", "skip"
GB = 1024**3  # GPU memory, as the estimate counts it
DISK_GB = 1e9  # disk and volumes, as RunPod and the Hub count them
HUB_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # pass | fail | skip
    detail: str  # one line: what was found, and for a failure what to do
    forward: str = ""  # a failure's way forward when it is another command (the refusal ends with it)


# -- what the run asks for ------------------------------------------------------------------------------


def planned_values(profiles, overrides: list[str] | None = None) -> dict:
    """The Axolotl values a render would give, before any data is read: the profiles merged as the renderer
    merges them, the overrides applied by its own parser."""
    from axolotl_configs import render

    values = render.merged_values(profiles, None, "preflight", "")
    parsed = render.parse_overrides(list(overrides or []))
    render.check_numbers(parsed)  # the renderer's own refusal of a bad number, by key
    for key, value in parsed:
        try:
            render.set_dotted(values, key, value)
        except (IndexError, AttributeError, OverflowError, TypeError, ValueError, KeyError):
            continue  # an override that breaks the structure: the render that follows refuses it by name
    return values


def gpu_features(values: dict) -> list[str]:
    """What in the config runs only on a CUDA GPU."""
    out = []
    if values.get("load_in_4bit") or values.get("load_in_8bit"):
        out.append("4-bit weights (bitsandbytes)" if values.get("load_in_4bit") else "8-bit weights")
    if str(values.get("attn_implementation") or "").startswith("flash_attention") or values.get(
        "flash_attention"
    ):
        out.append("flash attention")
    return out


def peak_gb(profiles, values: dict) -> float | None:
    """The estimate's modelled peak per GPU; None when a value it needs is not a number (lora_r=abc: the
    render and Axolotl's schema refuse that by name after preflight)."""
    from axolotl_configs import estimate

    try:
        return sum(estimate.memory(profiles.model, values, int(profiles.hardware["gpu_count"])).values())
    except (TypeError, ValueError, KeyError):
        return None


def launch_hint(profiles) -> str:
    return (
        f"train it on a pod: `just launch {profiles.preset['name']} {profiles.model['name']} "
        "--network-volume ID --max-cost USD` (README: RunPod)"
    )


# -- hardware -------------------------------------------------------------------------------------------


def visible_gpus() -> list[tuple[str, float]]:
    """(name, GB) of each CUDA GPU this process may use. A machine without NVIDIA's driver answers at once,
    without importing torch (what keeps a refusal on a laptop under a second)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "x").strip() in ("", "-1"):
        return []
    if not (Path("/dev/nvidiactl").exists() or shutil.which("nvidia-smi")):
        return []
    import torch

    if not torch.cuda.is_available():
        return []
    return [
        (torch.cuda.get_device_name(i), torch.cuda.get_device_properties(i).total_memory / GB)
        for i in range(torch.cuda.device_count())
    ]


def hardware(profiles, values: dict, gpus: list[tuple[str, float]] | None = None) -> Check:
    gpus = visible_gpus() if gpus is None else gpus
    hw, model = profiles.hardware, profiles.model["name"]
    needs = gpu_features(values)
    if not gpus:
        if needs:
            return Check(
                "hardware",
                FAIL,
                f"no CUDA GPU here: {model} needs one ({', '.join(needs)}) with "
                f"~{peak_gb(profiles, values) or 0:.0f} GB "
                f"(the modelled peak; {hw['name']} has {hw['gpu_memory_gb']} GB)",
                launch_hint(profiles),
            )
        return Check("hardware", PASS, f"CPU: {model} needs no GPU (no 4-bit weights, no flash attention)")
    wanted = int(hw["gpu_count"]) if hw["gpu_type"] != "none" else 1
    if len(gpus) < wanted:
        return Check(
            "hardware",
            FAIL,
            f"{hw['name']} trains on {wanted} GPUs; this process sees {len(gpus)} (CUDA_VISIBLE_DEVICES): "
            "pick a hardware profile with fewer GPUs (--hardware) or run where there are more",
        )
    peak, (name, smallest) = peak_gb(profiles, values), min(gpus[:wanted], key=lambda g: g[1])
    if peak is None:
        return Check(
            "hardware",
            SKIP,
            f"{wanted} × {name} ({smallest:.0f} GB); the peak is not known (a value is not a number)",
        )
    if peak > smallest:
        return Check(
            "hardware",
            FAIL,
            f"the modelled peak {peak:.1f} GB per GPU exceeds this {name}'s {smallest:.1f} GB: lower "
            "sequence_len or micro_batch_size, use 4-bit weights, or more GPUs "
            "(`just estimate` shows the parts)",
        )
    return Check("hardware", PASS, f"{wanted} × {name} ({smallest:.0f} GB) ≥ the modelled peak {peak:.1f} GB")


# -- the base model -------------------------------------------------------------------------------------


def hub_off() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def is_local(name: str) -> bool:
    """A path rather than a Hub id ("org/name"): absolute, relative with ./, or an existing folder."""
    return name.startswith(("/", "./", "../")) or Path(name).exists()


def in_cache(repo: str, cache_dir: str | Path | None = None) -> bool:
    """config.json and every weights file of the repo's default revision in the Hub cache."""
    import json

    from huggingface_hub import try_to_load_from_cache

    def cached(filename: str) -> str | None:
        found = try_to_load_from_cache(repo, filename, cache_dir=cache_dir)
        return found if isinstance(found, str) else None

    if cached("config.json") is None:
        return False
    for index_name, single in (
        ("model.safetensors.index.json", "model.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        if cached(single):
            return True
        index = cached(index_name)
        if index:
            shards = set(json.loads(Path(index).read_text("utf-8")).get("weight_map", {}).values())
            return bool(shards) and all(cached(shard) for shard in shards)
    return False


def hub_download_gb(repo: str, token: str | None) -> float | None:
    """The weights' size from the Hub's file list (safetensors, else .bin), GB; None when it does not say."""
    from huggingface_hub import HfApi

    info = HfApi().model_info(repo, files_metadata=True, token=token, timeout=HUB_TIMEOUT_S)
    files = [(s.rfilename, s.size or 0) for s in info.siblings or []]
    for suffix in (".safetensors", ".bin"):
        sizes = [size for name, size in files if name.endswith(suffix) and "/" not in name]
        if sizes and all(sizes):
            return sum(sizes) / DISK_GB
    return None


def base_model(profiles, values: dict, for_pod: bool = False) -> tuple[Check, float]:
    """The check, and the GB still to download (0 when local or cached). `for_pod`: a launch asks whether
    the pod will be able to download it (its HF_TOKEN is this environment's), not whether it is here."""
    name = str(values.get("base_model") or "")
    if is_local(name):
        if (Path(name) / "config.json").is_file():
            return Check("base model", PASS, f"a local model: {name}"), 0.0
        return Check(
            "base model", FAIL, f"{name}: no config.json there (base_model is a path that is not a model)"
        ), 0.0
    profile_gb = float(profiles.model.get("download_gb") or 0)
    if not for_pod and in_cache(name):
        return Check("base model", PASS, f"{name} is in the Hub cache"), 0.0
    page = f"https://huggingface.co/{name}"
    if hub_off():
        if for_pod:
            return Check(
                "base model",
                SKIP,
                f"the Hub is off here (HF_HUB_OFFLINE=1): the pod downloads {name} with HF_TOKEN, "
                "access unchecked",
            ), profile_gb
        return Check(
            "base model",
            FAIL,
            f"{name} is not in the Hub cache and the Hub is off (HF_HUB_OFFLINE=1, the justfile's default)",
            f"download it once: `HF_HUB_OFFLINE=0 .venv/bin/hf download {name}` (a gated repo: accept its "
            "licence "
            f"at {page} and set HF_TOKEN)",
        ), profile_gb
    import httpx
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    token = os.environ.get("HF_TOKEN") or None
    who = "HF_TOKEN's account" if token else "no HF_TOKEN (anonymous)"
    try:
        size = hub_download_gb(name, token)
        HfApi().auth_check(name, token=token)
    except GatedRepoError:
        return Check(
            "base model",
            FAIL,
            f"{name} is gated and {who} has no access: accept the licence at {page} (approval can take "
            "hours), then set HF_TOKEN to a token of that account",
        ), profile_gb
    except RepositoryNotFoundError:
        return Check("base model", FAIL, f"{name}: not on the Hub, or private to others ({who})"), profile_gb
    except (HfHubHTTPError, OSError, httpx.HTTPError) as exc:  # httpx: huggingface_hub 1.x's client
        from huggingface_hub import constants

        return Check(
            "base model",
            FAIL,
            f"the Hub ({constants.ENDPOINT}) did not answer for {name}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160]}",
        ), profile_gb
    where = "the pod downloads it" if for_pod else "downloaded at the run's start"
    gb = size if size is not None else profile_gb
    return Check("base model", PASS, f"{name}: on the Hub, {who} has access; {where} (~{gb:.1f} GB)"), gb


# -- space ----------------------------------------------------------------------------------------------


def checkpoint_gb(profiles, values: dict) -> float:
    """What the run folder keeps: each checkpoint's adapter (fp32) and optimizer state, plus the final
    adapter (estimate.lora_params; Adam's two moments in 8 bits or fp32); 0 when a value it needs is not a
    number (refused by name after preflight)."""
    try:
        return lora_checkpoints_gb(profiles, values)
    except (TypeError, ValueError, KeyError):
        return 0.0


def lora_checkpoints_gb(profiles, values: dict) -> float:
    from axolotl_configs import estimate

    n = estimate.lora_params(
        profiles.model["architecture"], int(values["lora_r"]), values["lora_target_modules"]
    )
    adam = 2 if "8bit" in str(values.get("optimizer")) else 8
    kept = int(values.get("save_total_limit") or 3)
    return (n * (4 + adam) * kept + n * 4) / DISK_GB


def free_gb(path: Path) -> tuple[Path, float]:
    """Free space where `path` is (or would be made): its nearest existing folder."""
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path, shutil.disk_usage(path).free / DISK_GB


def disk(needs: list[tuple[str, Path, float]]) -> Check:
    """needs: (what, where, GB). Needs on one filesystem add up."""
    by_device: dict[int, tuple[Path, float, list[tuple[str, float]]]] = {}
    for what, where, gb in needs:
        found, free = free_gb(where)  # asked once per place: the first place on a filesystem speaks for it
        by_device.setdefault(found.stat().st_dev, (found, free, []))[2].append((what, gb))
    shown = []
    for found, free, group in by_device.values():
        need = sum(gb for _, gb in group)
        parts = " + ".join(f"{what} {gb:.1f} GB" for what, gb in group)
        if need > free:
            return Check(
                "disk",
                FAIL,
                f"{found} has {free:.1f} GB free; the run needs {parts}: free space there "
                "or point HF_HOME / --runs-dir elsewhere",
            )
        shown.append(f"{found}: {free:.0f} GB free ≥ {parts}")
    return Check("disk", PASS, "; ".join(shown))


def train_checks(profiles, values: dict, runs_dir: str | Path) -> list[Check]:
    """What `jobs train`, a local start of the service and a pod's own start ask."""
    hw = hardware(profiles, values)
    model, download = base_model(profiles, values)
    needs = [("checkpoints", Path(runs_dir), checkpoint_gb(profiles, values))]
    if download:
        from huggingface_hub import constants

        needs.append(("the base model", Path(constants.HF_HUB_CACHE), download))
    return [hw, model, disk(needs)]


# -- launch only ----------------------------------------------------------------------------------------


def volume_size(kind: str, size_gb: float, model_gb: float, data_gb: float, keep_gb: float) -> Check:
    """The pod's volume holds the Hub cache (Axolotl's image keeps HF_HOME there), the data, the runs."""
    need = model_gb + data_gb + keep_gb
    parts = f"base model {model_gb:.1f} + data {data_gb:.2f} + checkpoints {keep_gb:.1f} GB"
    if size_gb < need:
        return Check(
            "volume",
            FAIL,
            f"{kind} is {size_gb:g} GB; the run needs {need:.1f} GB ({parts}): use a volume of at least "
            f"{int(need * 1.1) + 1} GB (RunPod: Storage → Network volumes; or --volume-gb without one)",
        )
    return Check("volume", PASS, f"{kind}: {size_gb:g} GB ≥ {need:.1f} GB ({parts})")


def image_cuda(image: str, cuda: str | None, offered: list[str]) -> Check:
    """The image's CUDA (its tag's cuNNN, else the hardware file's) against the CUDA RunPod's hosts run."""
    tagged = re.search(r"-cu(\d{2,3})(\d)\b", image.rsplit(":", 1)[-1]) if ":" in image else None
    from_tag = f"{int(tagged.group(1))}.{tagged.group(2)}" if tagged else None
    if from_tag and cuda and from_tag != cuda:
        return Check(
            "image CUDA",
            FAIL,
            f"{image} is built for CUDA {from_tag}, the hardware file says {cuda}: make them agree",
        )
    need = from_tag or cuda
    if need is None:
        return Check("image CUDA", SKIP, f"{image}: no CUDA in its tag nor in the hardware file; any host")
    hosts = [v for v in offered if tuple(map(int, v.split("."))) >= tuple(map(int, need.split(".")))]
    if not hosts:
        return Check(
            "image CUDA",
            FAIL,
            f"{image} needs CUDA ≥ {need}; RunPod's hosts offer {', '.join(offered)}: pick an image "
            "built for one of those",
        )
    return Check("image CUDA", PASS, f"CUDA ≥ {need}: hosts on {', '.join(hosts)}")


def registry_credential(
    image: str, default_image: str, registry_auth: str | None, known: list[str] | None
) -> Check:
    if registry_auth:
        if known is not None and registry_auth not in known:
            return Check(
                "registry credential",
                FAIL,
                f"--registry-auth {registry_auth}: not on this RunPod account ({', '.join(known) or 'none'})",
            )
        return Check("registry credential", PASS, f"{image} pulled with credential {registry_auth}")
    if image == default_image:
        return Check("registry credential", PASS, f"{image}: Axolotl's public image, no credential needed")
    return Check(
        "registry credential",
        SKIP,
        f"{image}: taken to be public; a private image needs --registry-auth ID (RunPod: Settings → "
        "Container "
        "Registry Auth) or RUNPOD_REGISTRY_AUTH_ID",
    )


def cost(estimate_usd: float, max_cost: float | None) -> Check:
    if max_cost is None:
        return Check(
            "max cost", SKIP, f"no --max-cost: the estimate is ${estimate_usd:.2f}, nothing caps the run"
        )
    if estimate_usd > max_cost:
        return Check(
            "max cost",
            FAIL,
            f"the estimate ${estimate_usd:.2f} exceeds --max-cost ${max_cost:.2f}: raise the cap, or train "
            "less "
            "(max_steps=, num_epochs=)",
        )
    return Check("max cost", PASS, f"the estimate ${estimate_usd:.2f} is within --max-cost ${max_cost:.2f}")


def deadline(hours: float, limit: float | None, name: str) -> Check:
    """The estimate against the job's deadline: past it the pod ends itself before the run does."""
    if limit is None:
        return Check("deadline", SKIP, "no deadline")
    if hours > limit:
        return Check(
            "deadline",
            FAIL,
            f"the estimate is {hours:.2f} h, over {name} {limit:g}: the pod would end itself before the run "
            "did; raise it or train less (num_epochs, max_steps)",
        )
    return Check("deadline", PASS, f"the estimate {hours:.2f} h is within {name} {limit:g}")


# -- the answer -----------------------------------------------------------------------------------------


def failures(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.status == FAIL]


def refusal(checks: list[Check]) -> str:
    """One line: every failed check's own line, "nothing was created" once, then the first way forward."""
    failed = failures(checks)
    forward = next((c.forward for c in failed if c.forward), "")
    said = "; ".join(f"{c.name}: {c.detail}" for c in failed)
    return f"preflight: {said} (nothing was created)" + (f"; {forward}" if forward else "")


def require(checks: list[Check]) -> None:
    if failures(checks):
        raise ConfigError(refusal(checks))


def table(checks: list[Check], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    t.add_column("check", style="bold")
    t.add_column("result")
    t.add_column("why")
    colour = {PASS: "green", FAIL: "bold red", SKIP: "yellow"}
    for c in checks:
        t.add_row(
            c.name, f"[{colour[c.status]}]{c.status}[/]", c.detail + (f"; {c.forward}" if c.forward else "")
        )
    Console(width=max(120, shutil.get_terminal_size().columns)).print(t)


def show(preset: str, model: str, hardware: str | None, overrides: list[str], runs_dir: str) -> int:
    """`jobs preflight PRESET MODEL`: what `jobs train` would check, as a table; exit 2 on a failure."""
    import sys

    from axolotl_configs.profiles import Profiles

    profiles = Profiles.load(preset, model, hardware)
    checks = train_checks(profiles, planned_values(profiles, overrides), runs_dir)
    table(checks, f"Preflight: {preset} {model} on {profiles.hardware['name']}, here")
    if failures(checks):
        print(f"error: {refusal(checks)}", file=sys.stderr)
        return 2
    return 0
