"""evals/prompts.py: the converter's sidecar read back, and the stratified, deterministic sample."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from conftest import DEMO, SAMPLE

from brightrun.errors import ConfigError
from converters.convert import Options, convert
from evals.prompts import load_heldout, select


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    # Half of the 36 demo conversations held out: all seven arcs are in val.
    out = tmp_path_factory.mktemp("demo") / "data"
    convert(DEMO, out, Options(val_fraction=0.5))
    return out


def test_load_heldout_reads_the_sidecar_and_profile(tmp_path):
    manifest = convert(SAMPLE, tmp_path / "data")
    records, profile = load_heldout(tmp_path / "data")
    assert profile == json.loads(SAMPLE.read_text("utf-8"))["consultant_profile"]
    assert len(records) == manifest["counts"]["per_split"]["val"]["trained_targets"] == 8
    assert {r["conversation_id"] for r in records} == set(manifest["val_conversation_ids"])
    assert all(r["messages"][0]["role"] == "system" and r["messages"][-1]["role"] == "user" for r in records)


def test_an_old_or_edited_conversion_is_refused_with_its_file(tmp_path):
    data = tmp_path / "data"
    convert(SAMPLE, data)
    sidecar = data / "heldout.jsonl"
    sidecar.write_text(sidecar.read_text("utf-8").replace("Elena", "Elene"), "utf-8")
    with pytest.raises(
        ConfigError, match=r"heldout.jsonl: its sha256 differs from the one in .*manifest.json"
    ):
        load_heldout(data)
    # A conversion from before the sidecar: no heldout.jsonl, no consultant_profile in the manifest.
    manifest = json.loads((data / "manifest.json").read_text("utf-8"))
    del manifest["outputs"]["heldout.jsonl"], manifest["consultant_profile"]
    (data / "manifest.json").write_text(json.dumps(manifest), "utf-8")
    sidecar.unlink()
    with pytest.raises(
        ConfigError, match=r"manifest.json: written by a converter without the held-out sidecar; convert"
    ):
        load_heldout(data)
    with pytest.raises(ConfigError, match=r"nowhere.manifest.json: not a converter manifest"):
        load_heldout(tmp_path / "nowhere")


def fake(arc: str, conv: int, turn: int) -> dict:
    return {"pair_id": f"{arc}-{conv}-t{turn}", "conversation_id": f"{arc}-{conv}", "emotional_arc_key": arc}


# Arc a: 2 conversations of 5 targets; arc b: one of 3; arc c: one of 1.
RECORDS = (
    [fake("a", c, t) for c in (1, 2) for t in range(1, 6)]
    + [fake("b", 1, t) for t in (1, 2, 3)]
    + [fake("c", 1, 1)]
)


def test_select_covers_every_arc_and_spreads_over_conversations():
    picked = select(RECORDS, n=5)
    assert len(picked) == 5 and all(p["id"] == p["pair_id"] for p in picked)
    assert Counter(p["emotional_arc_key"] for p in picked) == {"a": 2, "b": 2, "c": 1}
    assert {p["conversation_id"] for p in picked if p["emotional_arc_key"] == "a"} == {"a-1", "a-2"}
    assert len({p["id"] for p in select(RECORDS, n=100)}) == len(RECORDS)


def test_select_is_deterministic_and_ignores_file_order():
    first = [p["id"] for p in select(RECORDS, n=6, seed=0)]
    assert [p["id"] for p in select(list(reversed(RECORDS)), n=6, seed=0)] == first
    assert any([p["id"] for p in select(RECORDS, n=6, seed=s)] != first for s in (1, 2, 3))
    with pytest.raises(ConfigError, match="at least 1"):
        select(RECORDS, n=0)


def test_select_on_the_demo_file_takes_one_target_per_arc_first(demo_data):
    records, _ = load_heldout(demo_data)
    arcs = {r["emotional_arc_key"] for r in records}
    assert len(arcs) == 7
    picked = select(records, n=len(arcs))
    assert {p["emotional_arc_key"] for p in picked} == arcs
    assert all(p["reference"] and p["primary_emotion"] for p in picked)
