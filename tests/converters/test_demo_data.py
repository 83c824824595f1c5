"""The repo's demo file: deterministic, committed as generated, and carrying the real files' mess."""

from __future__ import annotations

import json

import ftfy
from conftest import DEMO, run_cli

from converters import demo_data


def test_committed_demo_file_is_what_the_generator_writes(tmp_path):
    out = tmp_path / "demo.json"
    assert run_cli("demo", "--out", str(out)).returncode == 0
    assert out.read_bytes() == DEMO.read_bytes()


def test_generator_is_deterministic_and_seeded():
    assert demo_data.generate(12, seed=1) == demo_data.generate(12, seed=1)
    assert demo_data.generate(12, seed=1) != demo_data.generate(12, seed=2)


def test_demo_file_has_the_mess_real_files_have():
    raw = DEMO.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # byte-order mark
    data = json.loads(raw.decode("utf-8-sig"))
    pairs = [p for c in data["conversations"] for p in c["training_pairs"]]
    assert 24 <= len(data["conversations"]) <= 48
    assert sum(p["target_response"] is None and p["turn_number"] == 1 for p in pairs) >= 2
    assert any(p["target_response"] is not None and not p["target_response"].strip() for p in pairs)
    strings = [p["target_response"] or "" for p in pairs] + [p["current_user_input"] for p in pairs]
    broken = [s for s in strings if ftfy.fix_encoding(s) != s]
    assert broken and all("â€" in s or "Ã" in s for s in broken)
    assert (
        any("’" in s for s in strings) and any("—" in s for s in strings) and any("“" in s for s in strings)
    )
    # An edited conversation: some pair's history differs from the chain of earlier pairs.
    edited = 0
    for conv in data["conversations"]:
        ps = conv["training_pairs"]
        for prev, cur in zip(ps, ps[1:], strict=False):
            chain = prev["conversation_history"] + [{"role": "user", "content": prev["current_user_input"]}]
            if cur["conversation_history"][: len(chain)] != chain:
                edited += 1
    assert edited >= 2


def test_committed_cpu_demo_file_is_what_the_recipe_generates(tmp_path):
    out = tmp_path / "demo-cpu.json"
    assert run_cli("demo", "--out", str(out), "--conversations", "24", "--max-turns", "3").returncode == 0
    assert out.read_bytes() == (DEMO.parent / "brightrun-demo-cpu.json").read_bytes()
    data = json.loads(out.read_bytes().decode("utf-8-sig"))
    assert max(len(c["training_pairs"]) for c in data["conversations"]) == 3
