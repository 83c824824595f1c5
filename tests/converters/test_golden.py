"""Fixture in, golden out: the sample's conversion is committed under tests/golden/sample/.

A change to the converter that alters any output byte fails here until the golden files are
regenerated on purpose (`just golden-regen`) and the diff is reviewed.
"""

from __future__ import annotations

import json
import os

import pytest
from conftest import ROOT

GOLDEN = ROOT / "tests" / "golden" / "sample"
FILES = ("train.jsonl", "val.jsonl", "heldout.jsonl", "manifest.json")


def normalised_manifest(text: str) -> dict:
    manifest = json.loads(text)
    # Where the checkout lies is not part of the result.
    manifest["input"]["path"] = "<sample>"
    manifest["tokens"]["tokenizer"]["path"] = "<tokenizer>"
    return manifest


def test_sample_matches_golden(sample_out):
    if os.environ.get("REGEN_GOLDEN"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name in FILES[:3]:
            (GOLDEN / name).write_bytes((sample_out / name).read_bytes())
        manifest = normalised_manifest((sample_out / "manifest.json").read_text("utf-8"))
        (GOLDEN / "manifest.json").write_text(
            json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", "utf-8"
        )
        pytest.skip("golden files regenerated")
    for name in FILES[:3]:
        assert (sample_out / name).read_bytes() == (GOLDEN / name).read_bytes(), f"{name} differs from golden"
    assert normalised_manifest((sample_out / "manifest.json").read_text("utf-8")) == json.loads(
        (GOLDEN / "manifest.json").read_text("utf-8")
    )


def test_golden_is_not_empty():
    train = (GOLDEN / "train.jsonl").read_text("utf-8").splitlines()
    assert len(train) == 12
    assert all(json.loads(line)["messages"] for line in train)
