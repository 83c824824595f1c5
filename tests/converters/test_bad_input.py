"""Every kind of bad input: exit code 2, one clear message naming the file and the field, no output."""

from __future__ import annotations

import copy
import json

import pytest
from conftest import SAMPLE, run_cli

BASE = json.loads(SAMPLE.read_text("utf-8"))


def edited(change):
    data = copy.deepcopy(BASE)
    change(data)
    return json.dumps(data, indent=2, ensure_ascii=False).encode("utf-8")


def pair(data, c, p):
    return data["conversations"][c]["training_pairs"][p]


CASES = {
    "empty": (b"", ["the file is empty"]),
    "whitespace_only": (b"  \n\n", ["the file is empty"]),
    "truncated": (
        json.dumps(BASE, indent=2).encode()[:4000],
        ["truncated JSON (the file ends mid-document): Unterminated string starting at line 73, column 28"],
    ),
    "not_json": (
        b'{"training_file_metadata": {,}}',
        ["invalid JSON: Expecting property name enclosed in double quotes at line 1, column 29"],
    ),
    "not_utf8": ('{"a": "caf\u00e9"}'.encode("latin-1"), ["not UTF-8", "byte 0xe9 at offset 10"]),
    "top_level_list": (b"[1, 2]", ["(top level): got a list, expected an object"]),
    "wrong_format_spec": (
        edited(lambda d: d["training_file_metadata"].update(format_spec="brightrun-lora-v3")),
        ["training_file_metadata.format_spec: got 'brightrun-lora-v3'"],
    ),
    "missing_top_level_keys": (
        edited(lambda d: (d.pop("conversations"), d.pop("consultant_profile"))),
        ["conversations: missing, expected a list of conversations", "consultant_profile: missing"],
    ),
    "metadata_not_an_object": (
        b'{"training_file_metadata": "x"}',
        [
            "training_file_metadata: got a string 'x', expected an object",
            "consultant_profile: missing, expected an object",
        ],
    ),
    "training_pairs_not_a_list": (
        edited(lambda d: d["conversations"][1].update(training_pairs="oops")),
        ["conversations[1].training_pairs: got a string 'oops', expected a list of training pairs"],
    ),
    "missing_required_field": (
        edited(lambda d: pair(d, 3, 2).pop("current_user_input")),
        ["conversations[3].training_pairs[2].current_user_input: missing, expected a string"],
    ),
    "mistyped_field": (
        edited(lambda d: pair(d, 2, 0).update(turn_number="1")),
        ["conversations[2].training_pairs[0].turn_number: got a string '1', expected an integer"],
    ),
    "mistyped_target": (
        edited(lambda d: pair(d, 2, 1).update(target_response=5)),
        ["conversations[2].training_pairs[1].target_response: got an integer 5, expected a string or null"],
    ),
    "unknown_role": (
        edited(lambda d: pair(d, 2, 1)["conversation_history"][0].update(role="system")),
        [
            "conversations[2].training_pairs[1].conversation_history[0].role: got 'system', "
            'expected "user" or "assistant"'
        ],
    ),
    "duplicate_pair_id": (
        edited(lambda d: pair(d, 5, 1).update(id=pair(d, 5, 0)["id"])),
        [
            "conversations[5].training_pairs[1].id: duplicate id 'conv-0007-0005-t1', "
            "first used at conversations[5].training_pairs[0].id"
        ],
    ),
    "duplicate_conversation_id": (
        edited(
            lambda d: d["conversations"][6]["conversation_metadata"].update(conversation_id="conv-0007-0000")
        ),
        ["conversations[6].conversation_metadata.conversation_id: duplicate id 'conv-0007-0000'"],
    ),
    "turns_out_of_order": (
        edited(lambda d: pair(d, 7, 2).update(turn_number=1)),
        [
            "conversations[7].training_pairs[2].turn_number: 1 after turn 2, expected turns in increasing order"
        ],
    ),
    "quality_out_of_range": (
        edited(lambda d: pair(d, 4, 0)["training_metadata"].update(quality_score=7)),
        [
            "conversations[4].training_pairs[0].training_metadata.quality_score: got 7, expected a number from 1 to 5"
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_named_and_writes_nothing(tmp_path, name):
    content, expected = CASES[name]
    src = tmp_path / f"{name}.json"
    src.write_bytes(content)
    out = tmp_path / "out"
    result = run_cli("convert", str(src), "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{name}.json" in result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == [src.name]  # no temp folder left behind either


def test_all_problems_reported_not_only_the_first(tmp_path):
    def many(d):
        for c in range(8):
            pair(d, c, 0).pop("system_prompt")
        d["conversations"][9]["training_pairs"] = "oops"

    src = tmp_path / "many.json"
    src.write_bytes(edited(many))
    result = run_cli("convert", str(src), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.count("system_prompt: missing, expected a string") == 8
    assert "conversations[9].training_pairs: got a string" in result.stderr


def test_more_than_twenty_problems_are_capped(tmp_path):
    def many(d):
        for c in range(12):
            for p in d["conversations"][c]["training_pairs"]:
                p.pop("id")

    src = tmp_path / "many.json"
    src.write_bytes(edited(many))
    result = run_cli("convert", str(src), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "63 problem(s)" in result.stderr
    assert result.stderr.count("id: missing") == 20
    assert "... and 43 more problem(s) in many.json" in result.stderr


def test_failed_conversion_leaves_previous_output_untouched(tmp_path, sample_out):
    out = tmp_path / "out"
    assert run_cli("convert", str(SAMPLE), "--out", str(out), "--quiet").returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"{")
    assert run_cli("convert", str(bad), "--out", str(out)).returncode == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_missing_file_and_bad_usage(tmp_path):
    result = run_cli("convert", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "nope.json: file not found" in result.stderr
    result = run_cli("convert", str(SAMPLE), "--out", str(tmp_path / "o"), "--val-fraction", "1.5")
    assert result.returncode == 2 and "--val-fraction" in result.stderr
    result = run_cli("convert", str(SAMPLE), "--out", str(tmp_path / "o"), "--sequence-len", "512")
    assert result.returncode == 2 and "--sequence-len needs --tokenizer" in result.stderr
    assert not (tmp_path / "o").exists()


def test_metadata_mismatch_is_a_warning_not_an_error(tmp_path):
    src = tmp_path / "mismatch.json"
    src.write_bytes(edited(lambda d: d["training_file_metadata"].update(total_training_pairs=64)))
    out = tmp_path / "out"
    result = run_cli("convert", str(src), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "total_training_pairs: says 64, the file holds 63" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metadata_mismatches"] == [
        "training_file_metadata.total_training_pairs: says 64, the file holds 63"
    ]


def test_out_folder_that_is_not_a_conversion_is_never_replaced(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    result = run_cli("convert", str(SAMPLE), "--out", str(precious))
    assert result.returncode == 2
    assert "not a converter output; refusing to replace it" in result.stderr
    assert [p.name for p in precious.iterdir()] == ["notes.txt"]
