"""`python -m versions ab A B` on two real tiny adapters (tests/versions/runs.py, two seeds) trained "on" the
converted sample: real answers from the tiny Llama with each adapter, real lm-eval, the judge a real
`transformers serve` on 127.0.0.1 (--local-judge) or the loopback stand-in that always prefers the first
reply (the position-bias case: both orders cancel it into ties). One side comes from its run folder, the
other downloaded from the store (its run folder deleted). Every refusal is exit 2, named, and writes
nothing. A real registry (SQLite) holds the versions and the A/B rows; the API lists them per version.
"""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import TINY_MODEL_DIR, module_cli
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from jobs import registry as jobs_registry
from tests.judge_standin import StandIn
from tests.versions.runs import adapter, adapter_b, cli, make_run, versions_main  # noqa: F401
from versions import registry
from versions.abtests import ABTest, for_versions
from versions.promote import promote

SMALL = ("--limit", "2", "--max-new-tokens", "8")


@pytest.fixture(scope="module")
def world(tmp_path_factory, adapter, adapter_b, sample_out):  # noqa: F811
    """em@v1 (run-a, its run folder here) and em@v2 (run-b, only in the store), both on the converted
    sample; run-c on other data; every path of the test's own."""
    root = tmp_path_factory.mktemp("ab")
    runs, url = root / "runs", f"sqlite:///{root / 'registry.db'}"
    make_run(runs, url, "run-a", adapter, data=sample_out)
    run_b = make_run(runs, url, "run-b", adapter_b, data=sample_out)
    (run_b / "eval" / "heldout.json").write_text(json.dumps({"base_loss": 2.77, "adapter_loss": 2.31}))
    make_run(runs, url, "run-c", adapter)  # another conversion (the stand-in manifest)
    env = {
        "DATABASE_URL": url,
        "ARTIFACT_STORE": str(root / "store"),
        "VERSIONS_CACHE": str(root / "cache"),
        "USER": "maria",
        "JUDGE_MAX_TOKENS": "16",  # the tiny judge's answers: short, they are never JSON anyway
    }
    engine = jobs_registry.engine(url)
    for run in ("run-a", "run-b"):
        promote(engine, runs, run, "em", store_url=env["ARTIFACT_STORE"], say=lambda _: None)
    shutil.rmtree(run_b)  # em@v2 now exists only in the store
    return {"root": root, "runs": runs, "url": url, "env": env, "engine": engine}


def ab_rows(world) -> int:
    with world["engine"].connect() as conn:
        return conn.execute(text("SELECT count(*) FROM ab_tests")).scalar()


def written(world) -> tuple:
    """What an A/B leaves behind: its folders, the cached downloads, its rows."""
    listing = lambda p: sorted(str(x) for x in p.rglob("*")) if p.exists() else []  # noqa: E731
    return listing(world["runs"] / "ab"), listing(world["root"] / "cache"), ab_rows(world)


def lines(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_refusals_are_exit_2_name_the_side_and_write_nothing(world, versions_main):  # noqa: F811
    r, env = str(world["runs"]), world["env"]
    before = written(world)
    cases = {
        ("em@v1", "em@v1"): "em@v1 twice: an A/B compares two different versions or runs",
        ("em@v1", "run-a"): "em@v1 and run-a are the same run (run-a): nothing to compare",
        ("em@v1", "em@v9"): "em@v9: no such version",
        ("no-such-run", "em@v1"): "no-such-run: no run folder with an adapter",
        ("em@v2", "run-c"): "em@v2 was trained on data ",
        ("em@v1", "../x"): "'../x': expected NAME@vN",
    }
    for (a, b), said in cases.items():
        out = versions_main("--runs-dir", r, "ab", a, b, *SMALL, env=env)
        assert out.returncode == 2 and said in out.stderr, (a, b, out.stderr)
        assert "Traceback" not in out.stderr
    other = versions_main("--runs-dir", r, "ab", "em@v2", "run-c", env=env).stderr
    assert "and run-c on data " in other and "the same conversion" in other
    bad = versions_main("--runs-dir", r, "ab", "em@v1", "em@v2", "--limit", "0", env=env)
    assert bad.returncode == 2 and "--limit 0: expected a whole number of at least 1" in bad.stderr
    wrong = versions_main("--runs-dir", r, "ab", "em@v1", "em@v2", "--data", str(world["root"]), env=env)
    assert wrong.returncode == 2 and f"--data {world['root']}: not the converted data" in wrong.stderr
    four = versions_main("--runs-dir", r, "ab", "em@v1", "em@v2", "--quantize", "4bit", env=env)
    assert four.returncode == 2 and "--quantize 4bit (--quantize 4bit) needs a CUDA GPU" in four.stderr
    assert written(world) == before


@pytest.mark.slow(40)
def test_ab_of_two_versions_with_a_real_judge_is_stored_with_both(world, versions_main):  # noqa: F811
    r, env = str(world["runs"]), world["env"]
    args = ("--no-general", "--local-judge", str(TINY_MODEL_DIR))  # lm-eval: in the stand-in's test
    proc = cli("--runs-dir", r, "ab", "em@v1", "em@v2", *SMALL, *args, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(A) vs em@v2 (B), 2 held-out prompts" in proc.stdout

    (folder,) = (world["runs"] / "ab").iterdir()  # one folder, whole: no temporary sibling left
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["prompts.jsonl", "answers.jsonl", "generation.json", "judgements.jsonl", "judge.json", "general.json", "ab.json"]
    )  # fmt: skip
    result = json.loads((folder / "ab.json").read_text())
    a, b = result["a"], result["b"]
    assert (a["ref"], a["files"], b["ref"], b["files"]) == ("em@v1", "run folder", "em@v2", "store (cache)")
    assert (a["heldout_loss"], b["heldout_loss"], b["heldout_loss_from"]) == (2.49, 2.31, "eval/heldout.json")
    generation = json.loads((folder / "generation.json").read_text())
    assert generation["sides"]["B"].startswith(str(world["root"] / "cache" / "em" / "v2-"))

    prompts = lines(folder / "prompts.jsonl")
    answers = {(x["id"], x["model"]): x["text"] for x in lines(folder / "answers.jsonl")}
    assert len(prompts) == 2 and set(answers) == {(p["id"], m) for p in prompts for m in ("A", "B")}
    assert any(answers[p["id"], "A"] != answers[p["id"], "B"] for p in prompts)  # two adapters, not one twice
    rows = lines(folder / "judgements.jsonl")
    assert len(rows) == 8  # per prompt: A and B graded, A-vs-B in both orders (no reference: no verdict)
    assert sorted(tuple(x["order"]) for x in rows if x["kind"] == "pairwise") == [("A", "B"), ("A", "B"), ("B", "A"), ("B", "A")]  # fmt: skip
    assert {x["status"] for x in rows} <= {"ok", "unparseable"} and all(x["prompt_tokens"] > 0 for x in rows)
    judged = json.loads((folder / "judge.json").read_text())
    assert set(judged["criteria"]["on_brand"]) == {"A", "B", "difference"} and judged["judge"][
        "model"
    ] == str(TINY_MODEL_DIR.resolve())
    assert result["general"] is None and json.loads((folder / "general.json").read_text()) == {
        "skipped": "--no-general"
    }

    # Stored with both versions: the registry row, `model em`, and GET /api/models/em.
    assert ab_rows(world) >= 1
    shown = versions_main("--runs-dir", r, "model", "em", env=env).stdout
    assert shown.count(f"A/B {result['id']}: em@v1 (A) vs em@v2 (B)") == 2
    assert "this is A" in shown and "this is B" in shown and "held-out A 2.490 B 2.310" in shown
    from fastapi.testclient import TestClient

    from jobs.service.app import create_app

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JOBS_API_TOKEN", "tok-ab")
        mp.setenv("TRAINING_WEBHOOK_SECRET", "whsec-ab")
        client = TestClient(create_app(world["runs"], world["url"], world["root"] / "data"))
        got = client.get("/api/models/em", headers={"Authorization": "Bearer tok-ab"}).json()
    (v1_ab,), (v2_ab,) = (v["ab"] for v in got["versions"])
    assert (v1_ab["side"], v1_ab["other"], v2_ab["side"], v2_ab["other"]) == ("A", "em@v2", "B", "em@v1")
    assert v1_ab["id"] == result["id"] and v1_ab["heldout_loss"] == {"A": 2.49, "B": 2.31}


@pytest.mark.slow(30)
def test_a_judge_that_prefers_the_first_reply_gives_no_winner_and_shows_why(world):
    """The stand-in always answers "A": each order is one judgement, so each side wins once per prompt and
    the win rate is exactly 0.5, with the judge's checks (never the same verdict in both orders, the first
    reply always winning) saying why. A run against a version."""
    with StandIn(mode="first") as judge:
        env = world["env"] | {"JUDGE_BASE_URL": judge.url, "JUDGE_MODEL": "stand-in"}
        # run-b's folder is gone (only em@v2 is left), so its version stands in as the run's other side
        general = ("--general-limit", "1", "--general-max-tokens", "8")
        proc = cli("--runs-dir", str(world["runs"]), "ab", "run-a", "em@v2", *SMALL, *general, env=env)
        requests = len(judge.requests)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        "B over A win rate 0.50 [0.50, 0.50] over 1 conversation(s) (each order one judgement: B 2, A 2, "
        "ties 0, unscored 0; same verdict both orders 0.0, first-position rate 1.0)" in proc.stdout
    )
    assert requests == 8
    with Session(world["engine"]) as s:
        row = s.scalar(select(ABTest).where(ABTest.a_ref == "run-a"))
    assert (row.b_ref, row.win_rate, row.ci_low, row.ci_high, row.judge_model) == (
        "em@v2",
        0.5,
        0.5,
        0.5,
        "stand-in",
    )
    general = row.general["brightrun_ifeval"]  # lm-eval on both adapters, delta = B - A
    assert {"A", "B", "delta"} <= set(general)
    assert general["delta"] == pytest.approx(general["B"] - general["A"], abs=1e-3)
    # The run-side A/B shows under em@v1 too (the version made from run-a), as side A.
    tests = registry.versions_of(world["engine"], "em")
    listed = for_versions(world["engine"], tests)
    assert any(t["a"] == "run-a" and t["side"] == "A" for t in listed[tests[0].id])


@pytest.mark.slow(30)
def test_an_evaluation_against_a_version_carries_its_ab_and_must_not_lose(world, adapter, sample_out):  # noqa: F811
    """`evals run RUN --against NAME@vN` (issue 27, item 5): the evaluation also runs the A/B of that version
    (A) against the run (B), recorded like any A/B (so `promote` into production finds it), and its verdict
    has a vs_production gate. The stand-in calls every comparison a tie: 0.5, not a loss; from the sample's
    one held-out conversation, insufficient. An unknown version is refused before anything runs."""
    runs = world["runs"]
    run_d = make_run(runs, world["url"], "run-d", adapter, data=sample_out)
    # What jobs/run.py also leaves and report.html reads (an evaluation rewrites the report): a lineage with
    # its run's settings and cost, and the metrics (none: this run was made, not trained).
    lineage = json.loads((run_d / "run.json").read_text())
    lineage |= {"preset": "balanced", "model": "smoke", "hardware": "cpu", "attempts": [],
                "estimate": {"cost_on_demand": 0.0}, "input": {"path": "sample.json", "sha256": "0" * 64}}  # fmt: skip
    lineage["config"]["path"] = str(run_d / "config.yaml")
    (run_d / "run.json").write_text(json.dumps(lineage))
    (run_d / "metrics.jsonl").write_text("")
    eval_dir = run_d / "eval"
    before = sorted(p.name for p in eval_dir.iterdir())
    with StandIn() as judge:
        env = world["env"] | {"JUDGE_BASE_URL": judge.url, "JUDGE_MODEL": "stand-in"}
        args = ("--runs-dir", str(runs), "run", "run-d", *SMALL, "--no-general")
        unknown = module_cli("evals", *args, "--against", "em@v9", env=env)
        assert unknown.returncode == 2 and "--against em@v9" in unknown.stderr, unknown.stderr[-2000:]
        assert sorted(p.name for p in eval_dir.iterdir()) == before and not judge.requests
        proc = module_cli("evals", *args, "--against", "em@v2", env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    verdict = json.loads((eval_dir / "verdict.json").read_text())
    gate = next(g for g in verdict["gates"] if g["gate"] == "vs_production")
    assert (gate["against"], gate["win_rate"], gate["status"]) == ("em@v2", 0.5, "insufficient")
    assert "this run's win rate 0.50" in gate["detail"] and gate["required"]
    with Session(world["engine"]) as s:
        row = s.scalar(select(ABTest).where(ABTest.b_ref == "run-d"))
    assert (row.a_ref, row.id, row.win_rate) == ("em@v2", gate["ab"], 0.5)
    # The A/B loaded its base as the evaluation did (a QLoRA run's in 4-bit; this LoRA run's in full).
    ab_generation = json.loads((runs / "ab" / row.id / "generation.json").read_text())
    own = json.loads((eval_dir / "generation.json").read_text())
    assert ab_generation["quantization"] == own["quantization"] and own["quantization"]["mode"] == "none"
    assert "vs_production" in proc.stdout + proc.stderr  # the verdict table shows it
