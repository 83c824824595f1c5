"""Store and registry in agreement (issue 28, item 4), on SQLite and PostgreSQL with a folder store:
`versions delete` removes a version's files for good (never the production version's), leaving its row
marked; `versions check` is clean after deletes and retires, and lists files without a row and rows
without their files when there are some."""

from __future__ import annotations

import pytest
import yaml
from conftest import TINY_MODEL_DIR

from jobs import registry as jobs_registry
from tests.versions.runs import adapter, db_url, make_run, versions_main  # noqa: F401 (fixtures)
from versions import registry, sides


@pytest.fixture
def env(db_url, tmp_path):  # noqa: F811
    return {"DATABASE_URL": db_url, "ARTIFACT_STORE": str(tmp_path / "store"), "USER": "maria",
            "VERSIONS_CACHE": str(tmp_path / "cache")}  # fmt: skip


def test_delete_and_retire_leave_check_clean_and_check_finds_what_disagrees(
    env,
    adapter,
    tmp_path,
    versions_main,
    monkeypatch,  # noqa: F811
):
    runs, r = tmp_path / "runs", str(tmp_path / "runs")
    for i, stage in ((1, "production"), (2, "testing"), (3, "stored")):
        make_run(runs, env["DATABASE_URL"], f"run-{i}", adapter)
        done = versions_main(
            "--runs-dir", r, "promote", f"run-{i}", "--model", "em", "--stage", stage, env=env
        )
        assert done.returncode == 0, done.stderr
    # Each version carries its model card (versions/card.py), in the Hub's conventions.
    readme = (tmp_path / "store" / "models" / "em" / "v1" / "README.md").read_text()
    meta = yaml.safe_load(readme.split("---")[1])
    assert meta["library_name"] == "peft" and meta["base_model"] == str(TINY_MODEL_DIR)
    assert (
        "Verdict: **pass**" in readme and "| heldout_loss | pass |" in readme and "| lora_r | 8 |" in readme
    )
    clean = versions_main("--runs-dir", r, "check", env=env)
    assert clean.returncode == 0 and clean.stdout.strip().endswith(": clean"), clean.stdout

    refused = versions_main("--runs-dir", r, "delete", "em@production", env=env)
    assert refused.returncode == 2 and "em@v1 is em's production version" in refused.stderr
    assert (
        versions_main(
            "--runs-dir", r, "promote", "run-3", "--model", "em", "--stage", "production", env=env
        ).returncode
        == 0
    )
    assert versions_main("--runs-dir", r, "retire", "em@v2", env=env).returncode == 0
    for ref in ("em@v1", "em@v2"):  # v1 archived when v3 went in; v2 retired
        gone = versions_main("--runs-dir", r, "delete", ref, "--by", "dana", env=env)
        assert gone.returncode == 0, gone.stderr
    assert not (tmp_path / "store" / "models" / "em" / "v1").exists()
    engine = jobs_registry.engine(env["DATABASE_URL"])
    v1 = registry.get_version(engine, "em", 1)
    assert (v1.deleted_by, v1.stage, v1.retired_by) == ("dana", "archived", "dana")  # the row stays, marked
    fetch = versions_main("--runs-dir", r, "download", "em@v1", "--to", str(tmp_path / "dl"), env=env)
    assert fetch.returncode == 2 and "em@v1: its files were deleted by dana" in fetch.stderr
    revived = versions_main("--runs-dir", r, "promote", "run-1", "--model", "em", env=env)
    assert (
        revived.returncode == 2 and "its files were deleted by dana" in revived.stderr
    )  # not quietly "done"
    rollback = versions_main("--runs-dir", r, "rollback", "em", env=env)
    assert rollback.returncode == 2  # v1, once production, is deleted: never brought back
    again = versions_main("--runs-dir", r, "check", env=env)
    assert again.returncode == 0 and again.stdout.strip().endswith(": clean"), again.stdout

    # The customer's conversations out of the store, the version kept: eval/ dropped past a retention age.
    assert (tmp_path / "store" / "models" / "em" / "v3" / "eval").is_dir()
    monkeypatch.setenv("VERSIONS_CACHE", env["VERSIONS_CACHE"])
    cached = sides.cached(registry.get_version(engine, "em", 3), say=lambda _: None)  # as serving would
    assert (cached / "eval").is_dir()
    unset = versions_main("--runs-dir", r, "prune-evals", env=env)
    assert unset.returncode == 2 and "EVAL_RETENTION_DAYS" in unset.stderr
    pruned = versions_main("--runs-dir", r, "prune-evals", "--days", "0", env=env)
    assert pruned.returncode == 0 and "1 version(s) older than 0 day(s)" in pruned.stdout, pruned.stderr
    assert not (tmp_path / "store" / "models" / "em" / "v3" / "eval").exists()
    assert not cached.exists()  # no copy on this machine keeps their conversations either
    same = versions_main("--runs-dir", r, "delete", "em@v3", "--evals-only", env=env)
    assert same.returncode == 0 and "no evaluation files to drop" in same.stdout
    whole = versions_main("--runs-dir", r, "download", "em@v3", "--to", str(tmp_path / "v3"), env=env)
    assert whole.returncode == 0, whole.stderr  # every remaining sha256 checked against the new manifest
    assert not (tmp_path / "v3" / "eval").exists() and (tmp_path / "v3" / "adapter").is_dir()
    assert versions_main("--runs-dir", r, "check", env=env).returncode == 0

    # What check is for: files no row points at (another registry's v1), a row whose files are gone.
    ghost = tmp_path / "store" / "models" / "ghost" / "v1"
    ghost.mkdir(parents=True)
    (ghost / "manifest.json").write_text("{}")
    (tmp_path / "store" / "models" / "em" / "v3" / "adapter" / "adapter_config.json").unlink()
    found = versions_main("--runs-dir", r, "check", env=env)
    assert found.returncode == 1 and ": 2 problem(s)" in found.stdout
    assert "models/ghost/v1/: 1 file(s) without a row in this registry" in found.stdout
    assert "em@v3: row without its files: 1 file(s) deleted (adapter/adapter_config.json)" in found.stdout
    mine = versions_main("--runs-dir", r, "check", "--remove", "models/em/v3", env=env)
    assert (
        mine.returncode == 2 and "models/em/v3 is em@v3's" in mine.stderr
    )  # a row's files: delete is for those
    gone = versions_main("--runs-dir", r, "check", "--remove", "models/ghost/v1", env=env)
    assert (
        "models/ghost/v1/: 1 file(s) without a row removed" in gone.stdout and ": 1 problem(s)" in gone.stdout
    )
    assert not (tmp_path / "store" / "models" / "ghost").exists()
