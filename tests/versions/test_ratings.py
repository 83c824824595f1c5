"""versions/ratings.py's figures over fixed ratings (no service): the adapter's mean grade as
human_eval_score with its interval by conversation, the human win rate, the judge's agreement with people,
and the blind order drawn per rater and prompt."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from jobs import registry as jobs_registry
from tests.versions.runs import adapter, db_url, make_run, versions_main, write_eval  # noqa: F401 (fixtures)
from versions import ratings, registry


def rating(conv: str, item: str, adapter: int, base: int, preference: str, first: str = "base") -> dict:
    grades = lambda g: {c: g for c in ("on_brand", "emotional_intelligence", "helpful")}  # noqa: E731
    return {"conversation": conv, "item": item, "rater": "r", "first_model": first,
            "scores": {"adapter": grades(adapter), "base": grades(base)}, "preference": preference}  # fmt: skip


def judged(item: str, winner: str, adapter: int, base: int) -> list[dict]:
    point = lambda model, g: {"kind": "pointwise", "id": item, "model": model, "status": "ok",  # noqa: E731
                              "scores": {c: {"score": g} for c in ("on_brand", "emotional_intelligence")}}  # fmt: skip
    pair = {"kind": "pairwise", "id": item, "winner_model": winner}
    return [pair, pair, point("adapter", adapter), point("base", base)]


def test_the_score_is_the_adapters_mean_grade_with_an_interval_by_conversation():
    rows = [rating(f"c{i}", f"c{i}-t1", 4 + i % 2, 2, "adapter") for i in range(10)]
    rows += [rating("c0", "c0-t2", 1, 5, "base")]  # one conversation twice: its turns resample together
    found = ratings.summarize(rows)
    assert found["n"] == 11 and found["n_conversations"] == 10
    assert found["human_eval_score"]["mean"] == round((5 * 4 + 5 * 5 + 1) / 11, 4)
    assert found["human_eval_score"]["n_clusters"] == 10
    low, high = found["human_eval_score"]["ci95"]
    assert low < found["human_eval_score"]["mean"] < high <= 5
    assert found["win_rate"]["mean"] == round(10 / 11, 4)
    assert found["criteria"]["helpful"]["mean"] == round((5 * 2 + 5 * 3 - 4) / 11, 4)
    assert found["first_preferred"] == {"mean": round(1 / 11, 4), "n": 11}  # base shown first, base won once


def test_the_judge_agreeing_with_people_and_disagreeing():
    rows = [rating(f"c{i}", f"p{i}", 5 if i < 3 else 2, 3, "adapter" if i < 3 else "base") for i in range(6)]
    agreeing = [
        j for i in range(6) for j in judged(f"p{i}", "adapter" if i < 3 else "base", 5 if i < 3 else 2, 3)
    ]
    found = ratings.summarize(rows, agreeing)["judge_agreement"]
    assert found["preference"]["mean"] == 1.0 and found["preference"]["n"] == 6
    assert found["grades"]["tau"] == 1.0
    backwards = [
        j for i in range(6) for j in judged(f"p{i}", "base" if i < 3 else "adapter", 2 if i < 3 else 5, 3)
    ]
    found = ratings.summarize(rows, backwards)["judge_agreement"]
    assert found["preference"]["mean"] == 0.0 and found["grades"]["tau"] < 0
    assert ratings.summarize(rows, [])["judge_agreement"]["preference"]["mean"] is None  # not judged


def test_the_order_is_drawn_per_rater_and_prompt_and_stays_put():
    v = SimpleNamespace(id=7)
    orders = [ratings.first_model(v, f"p{i}", "Dana") for i in range(40)]
    assert set(orders) == {"base", "adapter"} and 10 < orders.count("base") < 30
    assert orders == [ratings.first_model(v, f"p{i}", "Dana") for i in range(40)]  # a reload: the same
    assert orders != [ratings.first_model(v, f"p{i}", "Lee") for i in range(40)]  # another rater: another


def test_ratings_are_stored_once_per_rater_and_the_score_reaches_the_customers_column(
    db_url, adapter, tmp_path, versions_main, monkeypatch
):
    """On SQLite and PostgreSQL: a rating by slot stored by side, a second one of the same prompt refused
    by the database's unique key, and model_artifacts.human_score (their human_eval_score) following."""
    runs, env = tmp_path / "runs", {"DATABASE_URL": db_url, "ARTIFACT_STORE": str(tmp_path / "store")}
    monkeypatch.setenv("VERSIONS_CACHE", str(tmp_path / "cache"))
    write_eval(make_run(runs, db_url, "run-1", adapter))
    assert (
        versions_main("--runs-dir", str(runs), "promote", "run-1", "--model", "em", env=env).returncode == 0
    )
    engine = jobs_registry.engine(db_url)
    v = registry.get_version(engine, "em", 1)
    shown = ratings.next_item(engine, v, "Dana")
    item, first = shown["item"]["id"], ratings.first_model(v, shown["item"]["id"], "Dana")
    grades = lambda g: {c: g for c in ("on_brand", "emotional_intelligence", "helpful")}  # noqa: E731
    ratings.submit(engine, v, "Dana", item, {"first": grades(5), "second": grades(1)}, "first")
    with pytest.raises(registry.Conflict, match="already rated"):
        ratings.submit(engine, v, "Dana", item, {"first": grades(1), "second": grades(1)}, "tie")
    (stored,) = ratings.rows_of(engine, v.id)
    second = "base" if first == "adapter" else "adapter"
    assert (stored.first_model, stored.preference) == (first, first)
    assert stored.scores[first] == grades(5) and stored.scores[second] == grades(1)
    expected = 5.0 if first == "adapter" else 1.0
    assert ratings.counts(engine, [v.id])[v.id]["human_eval_score"] == expected
    with jobs_registry.session(db_url) as s:
        row = s.query(jobs_registry.ModelArtifact).filter_by(job_id="run-1", artifact_type="adapter").one()
        assert row.human_score == expected
    assert ratings.next_item(engine, v, "Dana")["item"]["id"] != item  # the next one, not the same again
    shown = versions_main("--runs-dir", str(runs), "ratings", "em@v1", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "em@v1: 1 rating(s) by Dana over 1 held-out conversation(s)" in shown.stdout
    assert f"human_eval_score (the adapter's mean grade, 1-5): {expected:.2f}" in shown.stdout
    assert "under 10 conversations: too few to judge the version by" in shown.stdout
    # Its files deleted, what people said of it stays readable (the record), without the judge's side.
    assert versions_main("--runs-dir", str(runs), "delete", "em@v1", env=env).returncode == 0
    kept = versions_main("--runs-dir", str(runs), "ratings", "em@v1", env=env)
    assert kept.returncode == 0 and "em@v1: 1 rating(s) by Dana" in kept.stdout, kept.stderr
