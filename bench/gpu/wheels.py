"""The wheels the GPU machine needs to run real `axolotl preprocess` / `axolotl train`, and fetching them.

The GPU machine has no network. Its image already holds torch, transformers, accelerate and ~200 other
distributions (GPU_IMAGE below); Axolotl and what it imports travel as wheels in the ignored folder
`.whl/` (carried with the working tree, 64 MiB per call in all), installed there with
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl && export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH

Usage (here, in the repo's venv; needs PyPI, not the GPU):
  .venv/bin/python bench/gpu/wheels.py download [--budget-mib 48]  # wheels.txt -> .whl/, sizes, budget
  .venv/bin/python bench/gpu/wheels.py compute [--trace T.json] [--download]   # -> bench/gpu/wheels.txt
  .venv/bin/python bench/gpu/wheels.py trace [--out T.json]      # which distributions Axolotl imports
and on the GPU machine, after the install: python3 bench/gpu/wheels.py check   # versions actually there

Method:
  trace     runs Axolotl on CPU (needs `just assets convert-demo`; ~5 minutes on 2 cores) on the smoke
            profile (preprocess, then train) and on a QLoRA + Liger + paged 8-bit Adam variant of it (which
            gets past model loading, patching and optimizer set-up, then stops at the first Triton kernel:
            there is no GPU here), with a sitecustomize hook that records every loaded module's file at
            exit, in every process; each file is mapped to the distribution whose RECORD lists it.
  compute   carry = (imported + EXTRAS) - NEVER - OPTIONAL - (on the GPU image at a compatible version).
            Compatible: a distribution Axolotl pins exactly (==) is carried at the pin unless the image's
            known version equals it (or it is in KEEP_GPU); an unpinned one on the image is not carried
            (a range pin is checked against the image's version where that is known).
  download  `pip download --no-deps --only-binary=:all:` for CPython 3.12 manylinux x86_64 (a pure-Python
            wheel built from the sdist where PyPI has no wheel), adds bench/gpu/vendor/*.whl, strips from
            the wheels what the GPU run never loads (SLIM), prints each wheel's size and the total, fails
            if the total exceeds --budget-mib, and lists requirements of the carried wheels that neither
            the carried set nor the image's list satisfies.
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from brightrun import offline  # noqa: E402 -- the repo root is on the path only now

WHEELS_TXT = ROOT / "bench" / "gpu" / "wheels.txt"
WHL_DIR = ROOT / ".whl"
# Wheels PyPI does not have, built here and committed; copied into .whl/ with the rest. Now one:
#   cut_cross_entropy-25.5.2-py3-none-any.whl  Axolotl's fork of Apple's Cut Cross Entropy, which
#   axolotl.integrations.cut_cross_entropy requires (it checks for the fork's AXOLOTL_CCE_FORK) and which
#   only GitHub serves (github.com/axolotl-ai-cloud/ml-cross-entropy, snapshot at 5f0c7a7, 2026-06-26;
#   Axolotl 0.19.0 names 4dfa522). Built by `pip wheel --no-deps -w bench/gpu/vendor <checkout>`:
#   pure Python and Triton, Apple's licence kept in its dist-info.
VENDOR_DIR = ROOT / "bench" / "gpu" / "vendor"
PY_VERSION = "3.12"
# The image is Ubuntu 24.04 (Python 3.12.3, glibc 2.39): any manylinux_2_N with N <= 39 loads there.
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in range(39, 16, -1)] + [
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]
# Markers of the GPU machine's Python, for the requirements of the carried wheels.
GPU_MARKERS = {
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "extra": "",
}

# The GPU image 'cuda' (nvidia-h100-x1, nvidia-h200), as the workplace listed it on 2026-11-17: name ->
# version where a session saw it (pip list, 2026-11), else None (there, version unknown).
_GPU_NAMES = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt
jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities
linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba
numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx
onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client
propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions
pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl
tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop
wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
"""
_GPU_SEEN = {
    "accelerate": "1.15.0",
    "huggingface-hub": "1.33.0",
    "numpy": "2.5.2",
    "safetensors": "0.8.0",
    "sentencepiece": "0.2.2",
    "tokenizers": "0.23.2",
    "torch": "2.11.0",
    "transformers": "5.17.0",
    "triton": "3.6.0",
}
GPU_IMAGE: dict[str, str | None] = {name: _GPU_SEEN.get(name) for name in _GPU_NAMES.split()}

# Never carried: the image's own CUDA stack (a wheel of these would not match its driver and CUDA 13).
NEVER = ("torch", "triton", "pytorch-triton", "nvidia-*", "cuda-*")

# What the GPU run imports that the CPU trace cannot see (kept even if a later trace misses them).
EXTRAS = {
    "bitsandbytes": "QLoRA 4-bit NF4 layers and paged 8-bit Adam; its CUDA 13.0 library loads on the GPU",
    "liger-kernel": "LigerPlugin (70b-qlora, 8b): fused RoPE, RMSNorm, SwiGLU Triton kernels",
    "peft": "LoRA adapters; on the GPU also peft.tuners.lora.bnb (in the same wheel)",
}

# Imported on CPU here only because they are installed: each importer falls back without them.
OPTIONAL = {
    "brotli": "httpx: optional br decoder",
    "zstandard": "httpx: optional zstd decoder (Axolotl pins it; nothing on the train path needs it)",
    "h2": "httpcore: optional HTTP/2",
    "hpack": "h2's",
    "hyperframe": "h2's",
    "chardet": "requests: falls back to charset-normalizer (on the image)",
    "defusedxml": "Pillow: optional safe XMP parsing",
    "cffi": "numba: optional cffi function support",
    "pycparser": "cffi's",
    "pytz": "pandas 2 here; the image's pandas is 3 (it has no pytz, which pandas 2 requires)",
}

# Pinned exactly by Axolotl, but the image's version is used instead (nothing carried). Empty: the
# budget holds with every pin carried (see the README's section on the trade-off).
KEEP_GPU: dict[str, str] = {}

# Files the GPU run never loads, stripped from the downloaded wheels (RECORD rewritten to match).
SLIM = {
    "bitsandbytes": (
        ["bitsandbytes/libbitsandbytes_*.so"],
        ["bitsandbytes/libbitsandbytes_cpu.so", "bitsandbytes/libbitsandbytes_cuda130.so"],
        "keep the CPU and CUDA 13.0 libraries (torch 2.11.0+cu130 there); drop ROCm, XPU, other CUDAs",
    ),
    "wandb": (
        ["wandb/bin/*"],
        [],
        "drop the wandb-core service binaries: started by wandb.init only (WANDB_DISABLED, no wandb_project)",
    ),
    "mistral-common": (
        ["mistral_common/data/*"],
        [],
        "drop the bundled Mistral tokenizer files: loaded for Mistral models only",
    ),
    "pycountry": (
        ["pycountry/locales/*"],
        [],
        "drop the gettext translations of country names: only the JSON databases are read",
    ),
}


def norm(name: str) -> str:
    return canonicalize_name(name)


def never(name: str) -> bool:
    return any(fnmatch.fnmatch(norm(name), pattern) for pattern in NEVER)


# ── trace ─────────────────────────────────────────────────────────────────────────────────────────

HOOK = """
import atexit, os, sys

def _brightrun_dump(*_):
    try:
        with open(os.path.join(os.environ["WHEELS_TRACE_DIR"], f"{os.getpid()}.txt"), "w") as out:
            for name, module in list(sys.modules.items()):
                out.write(f"{name}\\t{getattr(module, '__file__', None) or ''}\\n")
    except Exception:
        pass

atexit.register(_brightrun_dump)
_brightrun_exit = os._exit

def _exit(code):
    _brightrun_dump()
    _brightrun_exit(code)

os._exit = _exit
"""


def _runs(work: Path) -> list[tuple[str, list[str], bool]]:
    """(label, command, must succeed) for the smoke config and its QLoRA + Liger variant."""
    import yaml

    for need, how in (("assets/tiny-llama", "just assets"), ("data/converted/demo", "just convert-demo")):
        if not (ROOT / need).exists():
            sys.exit(f"trace: {need} is missing: run `{how}` first")
    cfg = work / "smoke.yaml"
    render = [sys.executable, "-m", "axolotl_configs", "render", "balanced", "smoke"]
    render += ["--data", "data/converted/demo", "max_steps=2", f"output_dir={work / 'out'}"]
    render += [f"dataset_prepared_path={work / 'prepared'}", "--out", str(cfg)]
    subprocess.run(render, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    qlora = yaml.safe_load(cfg.read_text())
    qlora.update(
        adapter="qlora",
        load_in_4bit=True,
        optimizer="paged_adamw_8bit",
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        plugins=["axolotl.integrations.liger.LigerPlugin"],
        liger_rope=True,
        liger_rms_norm=True,
        liger_glu_activation=True,
        liger_fused_linear_cross_entropy=False,
        lora_mlp_kernel=True,
        lora_qkv_kernel=True,
        lora_o_kernel=True,
        output_dir=str(work / "out-qlora"),
    )
    cfg_q = work / "smoke-qlora-liger.yaml"
    cfg_q.write_text(yaml.safe_dump(qlora, sort_keys=False))
    axolotl = str(Path(sys.executable).parent / "axolotl")
    return [
        ("preprocess", [axolotl, "preprocess", str(cfg)], True),
        ("train", [axolotl, "train", str(cfg), "--launcher", "python"], True),
        # Stops at the first Triton kernel on CPU ("0 active drivers"): everything before it is imported.
        ("train-qlora-liger", [axolotl, "train", str(cfg_q), "--launcher", "python"], False),
    ]


def _file_index() -> dict[str, tuple[str, str]]:
    index: dict[str, tuple[str, str]] = {}
    for dist in md.distributions():
        name = dist.metadata["Name"]
        for f in dist.files or []:
            index[os.path.normpath(str(dist.locate_file(f)))] = (norm(name), dist.version)
    return index


def _module_rank(module: str) -> tuple:
    """The module that names a distribution best: a top-level one, not __main__."""
    return module.startswith("_"), module.count("."), len(module), module


def trace() -> dict:
    """{distribution: {"version", "module" (first seen), "runs"}} of everything Axolotl imported."""
    found: dict[str, dict] = {}
    index = _file_index()
    own = norm("brightrun-lora")
    with tempfile.TemporaryDirectory(prefix="wheels-trace-") as tmp:
        work = Path(tmp)
        hook = work / "hook"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(HOOK)
        for label, cmd, must in _runs(work):
            mods = work / f"mods-{label}"
            mods.mkdir()
            env = os.environ | {
                "PYTHONPATH": str(hook),
                "WHEELS_TRACE_DIR": str(mods),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                **offline.ALL,
                "WANDB_MODE": "disabled",
            }
            print(f"trace: {label}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
            log = work / f"{label}.log"
            with log.open("w") as out:
                rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
            if rc and must:
                sys.exit(f"trace: {label} failed (rc {rc}):\n" + log.read_text()[-4000:])
            print(f"trace: {label}: rc {rc}, {len(list(mods.iterdir()))} processes", file=sys.stderr)
            for dump in mods.iterdir():
                for line in dump.read_text().splitlines():
                    module, _, path = line.partition("\t")
                    hit = index.get(os.path.normpath(path)) if path else None
                    if hit is None or hit[0] == own:
                        continue
                    entry = found.setdefault(hit[0], {"version": hit[1], "module": module, "runs": []})
                    entry["module"] = min(entry["module"], module, key=_module_rank)
                    if label not in entry["runs"]:
                        entry["runs"].append(label)
    return dict(sorted(found.items()))


# ── compute ───────────────────────────────────────────────────────────────────────────────────────


def axolotl_pins() -> dict[str, SpecifierSet]:
    pins = {}
    for line in md.requires("axolotl") or []:
        req = Requirement(line)
        if req.marker and not req.marker.evaluate(GPU_MARKERS):
            continue  # extras (flash-attn, deepspeed, ...) and other platforms
        pins[norm(req.name)] = req.specifier
    return pins


def exact_pin(spec: SpecifierSet | None) -> str | None:
    for s in spec or []:
        if s.operator == "==" and "*" not in s.version:
            return s.version
    return None


def compute(traced: dict) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """(carried [(name, version, why)], not carried [(name, why)])."""
    pins = axolotl_pins()
    wanted = {name: f"imported ({info['module']})" for name, info in traced.items()}
    for name, why in EXTRAS.items():
        wanted.setdefault(norm(name), why)
    carry, skip = [], []
    for name, why in sorted(wanted.items()):
        here = md.version(name)
        spec = pins.get(name)
        pin = exact_pin(spec)
        on_gpu = name in GPU_IMAGE
        gpu = GPU_IMAGE.get(name)
        if never(name):
            skip.append((name, f"the GPU image's own ({gpu or 'version unknown'})"))
        elif name in OPTIONAL:
            skip.append((name, f"optional import: {OPTIONAL[name]}"))
        elif not on_gpu:
            carry.append((name, here, f"not on the GPU image; {why}"))
        elif pin and name in KEEP_GPU:
            skip.append((name, f"Axolotl pins =={pin}; the image's {gpu or '?'} kept: {KEEP_GPU[name]}"))
        elif pin and gpu != pin:
            if here != pin:
                sys.exit(f"compute: axolotl pins {name}=={pin} but this venv has {here}")
            carry.append((name, pin, f"Axolotl pins =={pin}; the image has {gpu or 'an unknown version'}"))
        elif spec and gpu and not spec.contains(gpu, prereleases=True):
            carry.append((name, here, f"Axolotl needs {spec}; the image has {gpu}"))
        else:
            pinned = f"; Axolotl needs {spec}" if spec else ""
            skip.append((name, f"on the GPU image ({gpu or 'version unknown'}){pinned}"))
    return carry, skip


def write_wheels_txt(carry: list[tuple[str, str, str]], skip: list[tuple[str, str]], traced: dict) -> None:
    today = datetime.date.today().isoformat()
    py, ax = sys.version.split()[0], md.version("axolotl")
    lines = [
        "# Wheels that bench/gpu carries to the GPU machine in .whl/ (installed there with",
        "# `pip install --no-deps --target /tmp/site`). Made by",
        f"# `.venv/bin/python bench/gpu/wheels.py compute` on {today} (Python {py}, axolotl",
        f"# {ax}): the {len(traced)} distributions that `axolotl preprocess` and `axolotl train`",
        "# imported in a CPU trace (smoke LoRA; smoke QLoRA + Liger + paged 8-bit Adam), plus the GPU-only",
        "# extras, less the GPU image's own CUDA stack (torch, triton, nvidia-*, cuda-*), less optional",
        "# imports, less what the image has at a compatible version.",
        "# Fetch with `.venv/bin/python bench/gpu/wheels.py download`: it also adds bench/gpu/vendor/*.whl",
        "# and strips files the run never loads from bitsandbytes, wandb, mistral-common, pycountry (SLIM).",
        "",
    ]
    width = max(len(f"{n}=={v}") for n, v, _ in carry)
    lines += [f"{n + '==' + v:<{width}}  # {why}" for n, v, why in carry]
    lines += ["", "# Imported but not carried:"]
    lines += [f"#   {n}: {why}" for n, why in skip]
    WHEELS_TXT.write_text("\n".join(lines) + "\n")


def read_wheels_txt() -> list[tuple[str, str]]:
    out = []
    for line in WHEELS_TXT.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            out.append((norm(name), version))
    return out


# ── download ──────────────────────────────────────────────────────────────────────────────────────


def _wheel_dist(path: Path) -> tuple[str, str]:
    name, version = path.name.split("-")[:2]
    return norm(name), version


def slim(path: Path) -> int:
    """Strip SLIM's files from one wheel in place; returns the bytes saved."""
    rule = SLIM.get(_wheel_dist(path)[0])
    if not rule:
        return 0
    drop, keep, _ = rule
    before = path.stat().st_size
    tmp = path.with_suffix(".slim")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        names = src.namelist()
        gone = {
            n
            for n in names
            if any(fnmatch.fnmatch(n, p) for p in drop) and not any(fnmatch.fnmatch(n, p) for p in keep)
        }
        for info in src.infolist():
            if info.filename in gone:
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                rows = [r for r in data.decode().splitlines() if r.split(",", 1)[0] not in gone]
                data = ("\n".join(rows) + "\n").encode()
            dst.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    tmp.replace(path)
    return before - path.stat().st_size


def _pip(cmd: list[str], show_failure: bool = True) -> int:
    """Run pip quietly: its output only when it fails, less the notes about local index folders."""
    run = subprocess.run([sys.executable, "-m", "pip", *cmd], capture_output=True, text=True)
    if run.returncode and show_failure:
        noise = "WARNING: Location 'file:"
        print("\n".join(x for x in (run.stdout + run.stderr).splitlines() if not x.startswith(noise)))
    return run.returncode


def fetch(wanted: list[tuple[str, str]], dest: Path, python: str = PY_VERSION) -> None:
    """Binary wheels for CPython `python` on manylinux x86_64; a pure-Python wheel built here from the
    sdist where the project publishes none (axolotl-contribs-lgpl)."""
    cmd = ["download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", python]
    cmd += ["--implementation", "cp"]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    cmd += ["-d", str(dest)]
    if not _pip(cmd + [f"{n}=={v}" for n, v in wanted], show_failure=False):
        return
    failed = []
    for n, v in wanted:
        if not list(dest.glob(f"{n.replace('-', '_')}-{v}-*.whl")) and _pip(cmd + [f"{n}=={v}"], False):
            failed.append((n, v))
    for n, v in failed:
        print(f"download: no wheel of {n}=={v}: building one from its sdist", file=sys.stderr)
        with tempfile.TemporaryDirectory(dir=dest) as build:
            if _pip(["wheel", "-q", "--no-deps", "--no-binary", n, "-w", build, f"{n}=={v}"]):
                sys.exit(f"download: FAILED, no wheel and no sdist build for {n}=={v}")
            (built,) = Path(build).glob("*.whl")
            if not built.name.endswith(("-py3-none-any.whl", "-py2.py3-none-any.whl")):
                sys.exit(f"download: FAILED, {n}=={v} built as {built.name}, not pure Python")
            shutil.move(str(built), dest / built.name)


def download(budget_mib: float) -> None:
    wanted = read_wheels_txt()
    WHL_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wheels-", dir=ROOT) as tmp:
        fetch(wanted, Path(tmp))
        for vendored in VENDOR_DIR.glob("*.whl"):
            shutil.copy(vendored, tmp)
        got = sorted(Path(tmp).glob("*.whl"))
        names = [_wheel_dist(p)[0] for p in got]
        missing = {n for n, _ in wanted} - set(names)  # and no vendored wheel twice
        if missing or len(names) != len(set(names)):
            sys.exit(f"download: FAILED, expected one wheel of each; missing {missing}, got {names}")
        saved = {p.name: slim(p) for p in got}
        for old in WHL_DIR.glob("*.whl"):  # one version of each: two stop the whole install there
            old.unlink()
        for p in got:
            shutil.move(str(p), WHL_DIR / p.name)
    wheels = sorted(WHL_DIR.glob("*.whl"), key=lambda p: -p.stat().st_size)
    total = sum(p.stat().st_size for p in wheels)
    for p in wheels:
        note = f"  (slimmed, -{saved[p.name] / 2**20:.1f} MiB)" if saved.get(p.name) else ""
        print(f"{p.stat().st_size / 2**20:8.2f} MiB  {p.name}{note}")
    print(f"{total / 2**20:8.2f} MiB  total, {len(wheels)} wheels in {WHL_DIR.relative_to(ROOT)}/")
    check_wheels(wheels)
    if total > budget_mib * 2**20:
        sys.exit(
            f"download: OVER BUDGET: {total / 2**20:.1f} MiB of wheels > --budget-mib {budget_mib:g} "
            "(the working tree and carried folders share 64 MiB per call)"
        )


def _requirements(lines: list[str]) -> list[Requirement]:
    reqs = [Requirement(x) for x in lines]
    return [r for r in reqs if not r.marker or r.marker.evaluate(GPU_MARKERS)]


def report(requires: dict[str, list[Requirement]], have) -> None:
    """Print the requirements that `have(name) -> (version or None, where) or None` does not meet."""
    conflicts, missing = [], {}
    for dist, reqs in sorted(requires.items()):
        for req in reqs:
            name = norm(req.name)
            found = have(name)
            if found is None:
                if name not in OPTIONAL:
                    missing.setdefault(dist, []).append(name)
            elif found[0] and req.specifier and not req.specifier.contains(found[0], prereleases=True):
                conflicts.append(f"  {dist} requires {req}; {found[1]} has {found[0]}")
    if conflicts:
        print("check: version conflicts (pip would refuse; most only matter if the code checks):")
        print("\n".join(conflicts))
    if missing:
        print("check: required but absent (fine unless the run imports them: the CPU trace did not):")
        for dist, names in missing.items():
            print(f"  {dist}: {', '.join(names)}")


def check_wheels(wheels: list[Path]) -> None:
    """The carried wheels' requirements against the carried set and the GPU image's list."""
    carried = {_wheel_dist(p)[0]: _wheel_dist(p)[1] for p in wheels}
    requires = {}
    for p in wheels:
        with zipfile.ZipFile(p) as z:
            meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            text = z.read(meta).decode()
        requires[_wheel_dist(p)[0]] = _requirements(re.findall(r"^Requires-Dist: (.+)$", text, flags=re.M))

    def have(name: str):
        if name in carried:
            return carried[name], "carried"
        if name in GPU_IMAGE:
            return GPU_IMAGE[name], "the image"
        return None

    report(requires, have)


def check_installed(site: Path) -> None:
    """On the GPU machine, after the install (PYTHONPATH=/tmp/site): the requirements of what is in
    `site` against what this Python now imports, with the versions the image really has."""
    requires = {}
    for dist in md.distributions(path=[str(site)]):
        requires[norm(dist.metadata["Name"])] = _requirements(dist.requires or [])

    def have(name: str):
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            return None
        where = "/tmp/site" if str(site) in str(dist.locate_file("")) else "the image"
        return dist.version, where

    report(requires, have)
    for name in ("torch", "triton", "transformers", "accelerate", "huggingface-hub", "tokenizers", "peft"):
        found = have(norm(name))
        print(f"check: {name} " + (f"{found[0]} ({found[1]})" if found else "absent"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_trace = sub.add_parser("trace", help="run Axolotl on CPU and print the distributions it imports")
    p_trace.add_argument("--out", type=Path, help="also write them as JSON here")
    p_compute = sub.add_parser("compute", help="trace (or --trace), then write bench/gpu/wheels.txt")
    p_compute.add_argument("--trace", type=Path, help="a `trace --out` JSON instead of tracing again")
    p_compute.add_argument("--download", action="store_true", help="then fetch them (as `download`)")
    p_compute.add_argument(
        "--keep-gpu",
        default="",
        help="comma-separated pinned names to take at the image's version instead (adds to KEEP_GPU), "
        "e.g. transformers,tokenizers,huggingface-hub,accelerate: -15.7 MiB, Axolotl's pins not honoured",
    )
    p_download = sub.add_parser("download", help="fetch bench/gpu/wheels.txt into .whl/")
    for p in (p_compute, p_download):
        p.add_argument("--budget-mib", type=float, default=48, help="fail above this total (default 48)")
    p_check = sub.add_parser("check", help="on the GPU machine, after the install: requirements vs versions")
    p_check.add_argument("--site", type=Path, default=Path("/tmp/site"), help="the --target (/tmp/site)")
    args = parser.parse_args(argv)

    if args.command == "trace":
        traced = trace()
        for name, info in traced.items():
            print(f"{name}=={info['version']}  {info['module']}  [{', '.join(info['runs'])}]")
        if args.out:
            args.out.write_text(json.dumps(traced, indent=1) + "\n")
    elif args.command == "compute":
        traced = json.loads(args.trace.read_text()) if args.trace else trace()
        for name in filter(None, args.keep_gpu.split(",")):
            KEEP_GPU[norm(name)] = "chosen with --keep-gpu"
        carry, skip = compute(traced)
        write_wheels_txt(carry, skip, traced)
        print(WHEELS_TXT.read_text())
        if args.download:
            download(args.budget_mib)
    elif args.command == "check":
        check_installed(args.site)
    else:
        download(args.budget_mib)


if __name__ == "__main__":
    main()
