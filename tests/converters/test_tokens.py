"""Token counts with the real Llama 3 tokenizer: merged lines vs one line per pair."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT, SAMPLE, TOKENIZER_DIR, run_cli

from converters import demo_data


def convert_with_tokens(tmp_path, source, *extra):
    out = tmp_path / "out"
    result = run_cli(
        "convert",
        str(source),
        "--out",
        str(out),
        "--tokenizer",
        str(TOKENIZER_DIR),
        "--val-fraction",
        "0",
        *extra,
    )
    assert result.returncode == 0, result.stderr
    return json.loads((out / "manifest.json").read_text()), result.stdout


def test_sample_ratio_to_naive_expansion(tmp_path, assets):
    manifest, stdout = convert_with_tokens(tmp_path, SAMPLE, "--sequence-len", "4096")
    tokens = manifest["tokens"]
    assert tokens["ratio_to_naive"] <= 0.30, tokens["ratio_to_naive"]
    assert tokens["tokens"] == sum(tokens["per_split"]["train"]["line_lengths"])
    assert tokens["longest_line"]["tokens"] == max(tokens["per_split"]["train"]["line_lengths"])
    assert tokens["lines_over_sequence_len"] == 0
    assert "ratio merged / naive" in stdout


def test_generated_242_conversation_file_ratio(tmp_path, assets):
    src = tmp_path / "b242.json"
    demo_data.write(src, n_conversations=242)
    manifest, _ = convert_with_tokens(tmp_path, src)
    assert manifest["counts"]["conversations"] == 242
    assert manifest["tokens"]["ratio_to_naive"] <= 0.27, manifest["tokens"]["ratio_to_naive"]


def test_lines_over_sequence_len_warn_loudly(tmp_path, assets):
    manifest, stdout = convert_with_tokens(tmp_path, SAMPLE, "--sequence-len", "1000")
    over = [n for n in manifest["tokens"]["per_split"]["train"]["line_lengths"] if n > 1000]
    assert manifest["tokens"]["lines_over_sequence_len"] == len(over) > 0
    assert "WARNING: lines would be dropped" in stdout
    assert f"{len(over)} line(s) are longer than sequence_len 1000" in stdout


def test_counting_imports_neither_torch_nor_transformers(tmp_path, assets):
    """AutoTokenizer's import (torch, sklearn, the generation utilities: ~5 s) was most of the converter's
    run time; its counts come from tokenizers and jinja2 now (converters/tokens.py)."""
    out = tmp_path / "out"
    code = (
        "import runpy, sys\n"
        "sys.argv = ['converters', *sys.argv[1:]]\n"
        "try:\n"
        "    runpy.run_module('converters', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "heavy = [m for m in ('torch', 'transformers', 'sklearn') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    args = ["convert", str(SAMPLE), "--out", str(out), "--tokenizer", str(TOKENIZER_DIR), "--quiet"]
    result = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tokens"]["tokens"] > 0
    assert manifest["tokens"]["tokenizer"]["class"] == "TokenizersBackend"
