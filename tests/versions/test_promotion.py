"""Promotion, stages and rollback in the registry, on SQLite and on a real PostgreSQL (a schema of the test's
own): the verdict gate and --force recorded, immutable numbers, one production version per model even when
processes promote at the same moment, rollback one step back at a time. The store is a local folder here
(test_store_s3.py covers S3).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from conftest import ROOT
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from jobs import registry as jobs_registry
from tests.versions.runs import adapter, db_url, make_run, versions_main
from versions import registry


@pytest.fixture
def env(db_url, tmp_path):
    return {"DATABASE_URL": db_url, "ARTIFACT_STORE": str(tmp_path / "store"), "USER": "maria"}


def stages(url: str, name: str) -> dict[int, str]:
    return {v.version: v.stage for v in registry.versions_of(jobs_registry.engine(url), name)}


def test_verdict_gate_force_recorded_and_stages(env, adapter, tmp_path, versions_main):
    runs, url = tmp_path / "runs", env["DATABASE_URL"]
    make_run(runs, url, "run-pass", adapter)
    make_run(runs, url, "run-fail", adapter, verdict="fail")
    make_run(runs, url, "run-none", adapter, verdict=None)
    make_run(runs, url, "run-incomplete", adapter, verdict="incomplete")  # e.g. no judge configured
    r = str(runs)

    failed = versions_main("--runs-dir", r, "promote", "run-fail", "--model", "em", env=env)
    assert failed.returncode == 2
    assert "run run-fail failed its evaluation; --force promotes it anyway" in failed.stderr
    missing = versions_main("--runs-dir", r, "promote", "run-none", "--model", "em", env=env)
    assert missing.returncode == 2 and "has no evaluation verdict" in missing.stderr
    partial = versions_main("--runs-dir", r, "promote", "run-incomplete", "--model", "em", env=env)
    assert partial.returncode == 2 and "has an incomplete evaluation" in partial.stderr
    assert stages(url, "em") == {}  # a refusal writes nothing
    assert not (tmp_path / "store").exists()

    ok = versions_main("--runs-dir", r, "promote", "run-pass", "--model", "em", "--stage", "testing", env=env)
    assert ok.returncode == 0, ok.stderr
    forced = versions_main(
        "--runs-dir",
        r,
        "promote",
        "run-fail",
        "--model",
        "em",
        "--force",
        "--note",
        "hotfix",
        "--by",
        "ops",
        env=env,
    )
    assert forced.returncode == 0, forced.stderr
    v1, v2 = registry.versions_of(jobs_registry.engine(url), "em")
    assert (v1.version, v1.stage, v1.verdict, v1.forced, v1.created_by) == (
        1,
        "testing",
        "pass",
        False,
        "maria",
    )
    assert (v2.version, v2.stage, v2.verdict, v2.forced, v2.created_by, v2.note) == (
        2,
        "stored",
        "fail",
        True,
        "ops",
        "hotfix",
    )
    assert v1.scores["win_rate"] == 0.62 and v1.data_sha256 and v1.config_sha256
    assert v1.adapter_sha256 == v2.adapter_sha256  # the same adapter bytes, two runs: two versions

    shown = versions_main("--runs-dir", r, "model", "em", env=env)
    assert "v2   stored     verdict fail FORCED" in shown.stdout and "note: hotfix" in shown.stdout
    listed = versions_main("--runs-dir", r, "models", env=env)
    assert "em" in listed.stdout and "production -" in listed.stdout

    # The same run again moves the stage of its version; no new number.
    again = versions_main(
        "--runs-dir", r, "promote", "run-pass", "--model", "em", "--stage", "production", env=env
    )
    assert again.returncode == 0 and stages(url, "em") == {1: "production", 2: "stored"}
    # The customer's model_artifacts.deployment_status follows (their app reads that column).
    with jobs_registry.session(url) as s:
        status = {a.job_id: a.deployment_status for a in s.query(jobs_registry.ModelArtifact)}
    assert status == {
        "run-pass": "production",
        "run-fail": "stored",
        "run-none": "none",
        "run-incomplete": "none",
    }


def test_rollback_goes_back_one_production_at_a_time(env, adapter, tmp_path, versions_main):
    runs, url, r = tmp_path / "runs", env["DATABASE_URL"], str(tmp_path / "runs")
    for i in (1, 2, 3):
        make_run(runs, url, f"run-{i}", adapter)
        out = versions_main(
            "--runs-dir", r, "promote", f"run-{i}", "--model", "em", "--stage", "production", env=env
        )
        assert out.returncode == 0, out.stderr
        # Never compared with the version it replaces (no A/B): it goes in, and says so.
        assert (i > 1) == (
            f"note: run run-{i} was never compared with em@v{i - 1}, in production" in out.stdout
        )
    assert stages(url, "em") == {1: "archived", 2: "archived", 3: "production"}
    assert registry.versions_of(jobs_registry.engine(url), "em")[2].scores["vs_production"] == {
        "ab": None,
        "other": "em@v2",
    }

    out = versions_main("--runs-dir", r, "rollback", "em", env=env)
    assert out.stdout.strip() == "em: production is em@v2 again (run run-2); em@v3 archived"
    assert stages(url, "em") == {1: "archived", 2: "production", 3: "archived"}
    versions_main("--runs-dir", r, "rollback", "em", env=env)  # further back, not forth to v3
    assert stages(url, "em") == {1: "production", 2: "archived", 3: "archived"}
    last = versions_main("--runs-dir", r, "rollback", "em", env=env)
    assert (
        last.returncode == 2 and "em@v1 is the only version of em that was ever in production" in last.stderr
    )

    # After a rollback to v1, a new production v4 rolls back to v1 (not to the rolled-back v2 or v3).
    make_run(runs, url, "run-4", adapter)
    versions_main("--runs-dir", r, "promote", "run-4", "--model", "em", "--stage", "production", env=env)
    versions_main("--runs-dir", r, "rollback", "em", env=env)
    assert stages(url, "em") == {1: "production", 2: "archived", 3: "archived", 4: "archived"}
    nothing = versions_main("--runs-dir", r, "rollback", "other", env=env)
    assert nothing.returncode == 2 and "no model named 'other'" in nothing.stderr


def test_the_database_refuses_a_second_production_version(env, adapter, tmp_path, versions_main):
    runs, url, r = tmp_path / "runs", env["DATABASE_URL"], str(tmp_path / "runs")
    for i in (1, 2):
        make_run(runs, url, f"run-{i}", adapter)
        versions_main("--runs-dir", r, "promote", f"run-{i}", "--model", "em", "--stage", "testing", env=env)
    engine = jobs_registry.engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE model_versions SET stage = 'production' WHERE version = 1"))
    with pytest.raises(IntegrityError), engine.begin() as conn:  # the index, not our code, says no
        conn.execute(text("UPDATE model_versions SET stage = 'production' WHERE version = 2"))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("UPDATE model_versions SET stage = 'deployed' WHERE version = 2"))


# One promoting process: imports done and the registry opened (its migration check takes a lock, which
# would stagger the processes), it says it is ready, then waits for the go file (all start together).
PROMOTE_AT_GO = """
import sys, time
from pathlib import Path
from jobs import registry
from versions.__main__ import main
registry.engine()
ready, go = Path(sys.argv[1]), Path(sys.argv[2])
ready.touch()
while not go.exists():
    time.sleep(0.001)
sys.exit(main(sys.argv[3:]))
"""


def test_concurrent_promotions_leave_exactly_one_production(env, adapter, tmp_path):
    runs, url, n = tmp_path / "runs", env["DATABASE_URL"], 5
    for i in range(n):
        make_run(runs, url, f"run-{i}", adapter)
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PROMOTE_AT_GO, str(tmp_path / f"ready-{i}"), str(go), "--runs-dir", str(runs),
             "promote", f"run-{i}", "--model", "em", "--stage", "production"],
            cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(n)
    ]  # fmt: skip
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{i}").exists() for i in range(n)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a process died early"
        time.sleep(0.01)
    go.touch()
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * n, "\n".join(outputs)[-3000:]
    versions = registry.versions_of(jobs_registry.engine(url), "em")
    assert sorted(v.version for v in versions) == list(range(1, n + 1))  # n numbers, none twice
    assert sorted(v.run_id for v in versions) == sorted(f"run-{i}" for i in range(n))
    assert [v.stage for v in versions].count("production") == 1
    assert all(v.complete for v in versions)


def test_a_run_that_cannot_be_promoted_says_why_and_writes_nothing(env, adapter, tmp_path, versions_main):
    runs, url, r = tmp_path / "runs", env["DATABASE_URL"], str(tmp_path / "runs")
    run_dir = make_run(runs, url, "run-1", adapter)
    (run_dir / "output" / "adapter_model.safetensors").unlink()
    (run_dir / "output" / "adapter_model.safetensors").symlink_to(adapter / "adapter_model.safetensors")
    out = versions_main("--runs-dir", r, "promote", "run-1", "--model", "em", env=env)
    assert out.returncode == 2
    assert "run run-1: nothing to promote (adapter_model.safetensors missing in its run folder" in out.stderr
    make_run(runs, url, "run-2", adapter)
    (runs / "run-2" / "run.json").write_text("{not json")
    out = versions_main("--runs-dir", r, "promote", "run-2", "--model", "em", env=env)
    assert (
        out.returncode == 2 and "run run-2: its run folder could not be read (JSONDecodeError)" in out.stderr
    )
    jobs_registry.update_job("run-2", url, status="training")
    out = versions_main("--runs-dir", r, "promote", "run-2", "--model", "em", env=env)
    assert out.returncode == 2 and "status training; only a completed run is promoted" in out.stderr
    bad = versions_main("--runs-dir", r, "promote", "run-1", "--model", "../em", env=env)
    assert bad.returncode == 2 and "model name '../em'" in bad.stderr
    assert stages(url, "em") == {} and not (tmp_path / "store").exists()


def test_into_production_a_run_must_not_lose_its_ab_against_the_current_one(
    env, adapter, tmp_path, versions_main
):
    """Issue 27, item 5: the newest A/B between the run and the production version it would replace,
    read from the run's side. A loss (its win rate's interval below 0.5) is refused unless forced, and a
    forced one is marked; a run never compared goes in, said and recorded; one that does not lose goes in."""
    from versions import abtests

    runs, url, r = tmp_path / "runs", env["DATABASE_URL"], str(tmp_path / "runs")
    engine = jobs_registry.engine(url)
    for i in (1, 2, 3):
        make_run(runs, url, f"run-{i}", adapter)
    first = versions_main(
        "--runs-dir", r, "promote", "run-1", "--model", "em", "--stage", "production", env=env
    )
    assert first.returncode == 0, first.stderr
    (v1,) = registry.versions_of(engine, "em")

    def ab(ab_id, a, b, win_rate, ci):  # as versions/ab.py records one: B's win rate over A
        result = {
            "id": ab_id,
            "a": {"ref": a[0], "run_id": a[1], "version_id": a[2]},
            "b": {"ref": b[0], "run_id": b[1], "version_id": b[2]},
            "data_sha256": "0" * 64,
            "n_prompts": 24,
            "win_rate": win_rate,
            "ci95": ci,
            "created_by": "maria",
        }
        abtests.record(engine, result, str(tmp_path / "ab" / ab_id))

    # run-2 was side A against em@v1 (B), and B won: run-2's win rate 0.2 [0.1, 0.35].
    ab("ab-lost", ("run-2", "run-2", None), ("em@v1", "run-1", v1.id), 0.8, [0.65, 0.9])
    lost = versions_main(
        "--runs-dir", r, "promote", "run-2", "--model", "em", "--stage", "production", env=env
    )
    assert lost.returncode == 2
    assert (
        "run run-2 lost its A/B against em@v1, in production now: win rate 0.20, 95% interval [0.10, 0.35] "
        "(A/B ab-lost); --force promotes it anyway" in lost.stderr
    )
    assert stages(url, "em") == {1: "production"}
    forced = versions_main(
        "--runs-dir", r, "promote", "run-2", "--model", "em", "--stage", "production", "--force", env=env
    )
    assert forced.returncode == 0, forced.stderr
    v2 = registry.versions_of(engine, "em")[1]
    assert v2.forced and v2.verdict == "pass" and v2.scores["vs_production"]["ab"] == "ab-lost"

    # run-3 against em@v2 (now production) as side B: 0.55 [0.4, 0.7] does not lose; in it goes.
    ab("ab-even", ("em@v2", "run-2", v2.id), ("run-3", "run-3", None), 0.55, [0.4, 0.7])
    even = versions_main(
        "--runs-dir", r, "promote", "run-3", "--model", "em", "--stage", "production", env=env
    )
    assert even.returncode == 0, even.stderr
    v3 = registry.versions_of(engine, "em")[2]
    assert not v3.forced and v3.scores["vs_production"] == {
        "ab": "ab-even",
        "other": "em@v2",
        "win_rate": 0.55,
        "ci95": [0.4, 0.7],
        "loses": False,
    }
    assert stages(url, "em") == {1: "archived", 2: "archived", 3: "production"}
    # The usual path: a version in testing first, its A/B, then production: the same rule, and a forced
    # move over a loss is marked on the version, with the A/B it lost.
    make_run(runs, url, "run-4", adapter)
    versions_main("--runs-dir", r, "promote", "run-4", "--model", "em", "--stage", "testing", env=env)
    v3 = registry.versions_of(engine, "em")[2]
    ab("ab-lost-4", ("em@v3", "run-3", v3.id), ("run-4", "run-4", None), 0.3, [0.2, 0.45])
    up = ("--runs-dir", r, "promote", "run-4", "--model", "em", "--stage", "production")
    assert versions_main(*up, env=env).returncode == 2
    assert versions_main(*up, "--force", env=env).returncode == 0
    v4 = registry.versions_of(engine, "em")[3]
    assert v4.stage == "production" and v4.forced and v4.scores["vs_production"]["ab"] == "ab-lost-4"
    assert v4.scores["win_rate"] == 0.62  # its evaluation's scores kept beside
    # The customer's stages name versions wherever a version is taken (issue 28): resolved now.
    assert registry.get_ref(engine, "em@production").ref == "em@v4"
    with pytest.raises(registry.NotFound, match="em@testing: em has no version in testing"):
        registry.get_ref(engine, "em@testing")
    with pytest.raises(registry.VersionError, match="expected NAME@vN, NAME@production or NAME@testing"):
        registry.get_ref(engine, "em@staging")


def test_stage_rules_no_move_leaves_a_model_without_production_and_retired_stays_out(
    env, adapter, tmp_path, versions_main
):
    """Issue 28, item 5: the production version leaves production only for another or by `retire`; a
    retired version is never a rollback's target nor moved back; a version promoted to production again
    on purpose is a rollback target again."""
    runs, url, r = tmp_path / "runs", env["DATABASE_URL"], str(tmp_path / "runs")
    engine = jobs_registry.engine(url)
    for i in (1, 2, 3):
        make_run(runs, url, f"run-{i}", adapter)
        out = versions_main(
            "--runs-dir", r, "promote", f"run-{i}", "--model", "em", "--stage", "production", env=env
        )
        assert out.returncode == 0, out.stderr
    demote = versions_main(
        "--runs-dir", r, "promote", "run-3", "--model", "em", "--stage", "testing", env=env
    )
    assert demote.returncode == 2
    assert "em@v3 is em's production version: moving it to testing would leave none" in demote.stderr
    assert stages(url, "em") == {1: "archived", 2: "archived", 3: "production"}

    # v2 retired on purpose: the rollback from v3 skips it, back to v1.
    retired = versions_main("--runs-dir", r, "retire", "em@v2", "--by", "ops", env=env)
    assert retired.returncode == 0 and retired.stdout.strip() == "em@v2: retired (archived)", retired.stderr
    back = versions_main("--runs-dir", r, "rollback", "em", env=env)
    assert back.stdout.strip() == "em: production is em@v1 again (run run-1); em@v3 archived", back.stderr
    again = versions_main(
        "--runs-dir", r, "promote", "run-2", "--model", "em", "--stage", "production", env=env
    )
    assert again.returncode == 2 and "em@v2 was retired by ops" in again.stderr
    twice = versions_main("--runs-dir", r, "retire", "em@v2", env=env)
    assert twice.returncode == 2 and "em@v2 is retired already" in twice.stderr

    # v3 (rolled back) promoted again on purpose: a later rollback may come back to it.
    versions_main("--runs-dir", r, "promote", "run-3", "--model", "em", "--stage", "production", env=env)
    assert registry.get_ref(engine, "em@v3").rolled_back_at is None
    # Retiring the production version is the one way to leave the model with none, and it says so.
    last = versions_main("--runs-dir", r, "retire", "em@production", env=env)
    assert last.stdout.strip() == "em@v3: retired (archived); em has no production version now"
    assert stages(url, "em") == {1: "archived", 2: "archived", 3: "archived"}
    shown = versions_main("--runs-dir", r, "model", "em", env=env).stdout
    assert shown.count("RETIRED by") == 2
