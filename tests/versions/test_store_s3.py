"""The artifact store on a real S3 wire protocol (moto's server on 127.0.0.1): promote uploads, download
verifies, presigned URLs work; an upload whose process dies half-way never looks complete and a re-run
finishes it sending only what is missing; a corrupted or deleted object is refused, reported, not crashed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid

import httpx
import pytest
from conftest import ROOT

from tests.s3_server import s3_server
from tests.versions.runs import adapter, adapter_b, cli, dies_at, make_run, s3_env, stored_keys, versions_main

BUCKET = "model-artifacts"  # the customer's bucket name in their plan
PREFIX = "brightrun/models/elena-morales/v1"


@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        yield server


@pytest.fixture
def env(s3, tmp_path):
    bucket = f"{BUCKET}-{uuid.uuid4().hex[:8]}"
    return {"DATABASE_URL": f"sqlite:///{tmp_path / 'registry.db'}", **s3_env(s3, bucket)}, bucket


def test_promote_uploads_download_verifies_urls_work(s3, env, adapter, tmp_path, versions_main):
    env, bucket = env
    runs = tmp_path / "runs"
    run_dir = make_run(runs, env["DATABASE_URL"], "run-a", adapter)
    out = cli(
        "--runs-dir",
        str(runs),
        "promote",
        "run-a",
        "--model",
        "elena-morales",
        "--stage",
        "production",
        env=env,
    )
    assert out.returncode == 0, out.stderr
    keys = stored_keys(s3, bucket)
    assert f"{PREFIX}/manifest.json" in keys
    assert f"{PREFIX}/adapter/adapter_model.safetensors" in keys
    assert {
        f"{PREFIX}/{n}" for n in ("config.yaml", "data-manifest.json", "report.html", "eval/verdict.json")
    } <= set(keys)

    dest = tmp_path / "elsewhere" / "em-v1"
    out = versions_main("--runs-dir", str(runs), "download", "elena-morales@v1", "--to", str(dest), env=env)
    assert out.returncode == 0, out.stderr
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer_config.json"):
        assert (dest / "adapter" / name).read_bytes() == (run_dir / "output" / name).read_bytes()
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["run_id"] == "run-a" and manifest["version"] == 1 and manifest["verdict"] == "pass"

    # The customer's app: a time-limited URL per file, fetched without any key, checked by its sha256.
    out = versions_main("--runs-dir", str(runs), "url", "elena-morales@v1", "--file", "adapter/adapter_model.safetensors",
              "--expires", "120", env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in out.stdout and "X-Amz-Expires=120" in out.stdout  # SigV4
    body = httpx.get(out.stdout.strip(), timeout=30).content
    assert (
        hashlib.sha256(body).hexdigest() == manifest["files"]["adapter/adapter_model.safetensors"]["sha256"]
    )

    # Promoting the same run again is the same version: nothing sent again, nothing new.
    out = versions_main("--runs-dir", str(runs), "promote", "run-a", "--model", "elena-morales", env=env)
    assert out.returncode == 0 and "elena-morales@v1 is run run-a already (production)" in out.stdout
    assert stored_keys(s3, bucket) == keys


DIES_AT = dies_at("versions.__main__")  # the promote command, killed before its Nth object


def test_an_upload_cut_short_never_looks_complete_and_a_rerun_finishes_it(
    s3, env, adapter, tmp_path, versions_main
):
    env, bucket = env
    runs = tmp_path / "runs"
    make_run(runs, env["DATABASE_URL"], "run-a", adapter)
    args = ["--runs-dir", str(runs), "promote", "run-a", "--model", "elena-morales", "--stage", "production"]
    died = subprocess.run(
        [sys.executable, "-c", DIES_AT, "3", *args], cwd=ROOT, env={**os.environ, **env},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert died.returncode == 9, died.stderr
    keys = stored_keys(s3, bucket)
    # The folder's claim (taken before any file) and the three files that made it, no manifest.
    assert len(keys) == 4 and f"{PREFIX}/claim.txt" in keys and f"{PREFIX}/manifest.json" not in keys

    shown = versions_main("--runs-dir", str(runs), "model", "elena-morales", env=env)
    assert "v1   UNFINISHED upload (promote the same run again to finish it)" in shown.stdout
    refused = versions_main(
        "--runs-dir", str(runs), "download", "elena-morales@v1", "--to", str(tmp_path / "dl"), env=env
    )
    assert refused.returncode == 2
    assert (
        "elena-morales@v1: its upload is unfinished; promote run run-a again to finish it" in refused.stderr
    )
    assert not (tmp_path / "dl").exists()

    again = versions_main(*args, env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count(": already there") == 3  # the three objects that made it are not sent again
    assert "elena-morales@v1: complete, stage production" in again.stdout
    assert f"{PREFIX}/manifest.json" in stored_keys(s3, bucket)
    ok = versions_main(
        "--runs-dir", str(runs), "download", "elena-morales@v1", "--to", str(tmp_path / "dl"), env=env
    )
    assert ok.returncode == 0, ok.stderr


def test_a_corrupted_object_is_refused_and_nothing_is_left_behind(s3, env, adapter, tmp_path, versions_main):
    env, bucket = env
    runs = tmp_path / "runs"
    make_run(runs, env["DATABASE_URL"], "run-a", adapter)
    assert (
        versions_main(
            "--runs-dir", str(runs), "promote", "run-a", "--model", "elena-morales", env=env
        ).returncode
        == 0
    )
    client = s3.client()
    key = f"{PREFIX}/adapter/adapter_model.safetensors"
    meta = client.head_object(Bucket=bucket, Key=key)["Metadata"]
    # Silent corruption: other bytes under the same key, its metadata still claiming the old sha256.
    client.put_object(Bucket=bucket, Key=key, Body=b"not the adapter", Metadata=meta)
    dest = tmp_path / "dl" / "em"
    out = versions_main("--runs-dir", str(runs), "download", "elena-morales@v1", "--to", str(dest), env=env)
    assert out.returncode == 1
    assert "adapter/adapter_model.safetensors: sha256 mismatch" in out.stderr
    assert list((tmp_path / "dl").iterdir()) == []  # no partial download

    # A manifest changed in the store is refused against the sha256 the registry recorded.
    client.put_object(Bucket=bucket, Key=f"{PREFIX}/manifest.json", Body=b'{"files": {}}')
    out = versions_main("--runs-dir", str(runs), "download", "elena-morales@v1", "--to", str(dest), env=env)
    assert out.returncode == 1 and "its sha256 is not the one the registry recorded" in out.stderr


def test_deleted_files_are_reported_not_crashed(s3, env, adapter, tmp_path, versions_main):
    env, bucket = env
    runs = tmp_path / "runs"
    for run in ("run-a", "run-b"):
        make_run(runs, env["DATABASE_URL"], run, adapter)
        assert (
            versions_main(
                "--runs-dir", str(runs), "promote", run, "--model", "elena-morales", env=env
            ).returncode
            == 0
        )
    client = s3.client()
    client.delete_object(Bucket=bucket, Key=f"{PREFIX}/adapter/adapter_config.json")
    # Other bytes under the same key, its metadata still claiming the promoted sha256: --check reads bytes.
    weights = f"{PREFIX}/adapter/adapter_model.safetensors"
    claimed = client.head_object(Bucket=bucket, Key=weights)["Metadata"]
    client.put_object(Bucket=bucket, Key=weights, Body=b"not the adapter", Metadata=claimed)
    v2 = PREFIX.replace("/v1", "/v2")
    for key in [k for k in stored_keys(s3, bucket) if k.startswith(v2 + "/")]:
        client.delete_object(Bucket=bucket, Key=key)

    shown = versions_main("--runs-dir", str(runs), "model", "elena-morales", "--check", env=env)
    assert shown.returncode == 0, shown.stderr
    assert (
        "store: 1 file(s) deleted (adapter/adapter_config.json); 1 file(s) changed "
        "(adapter/adapter_model.safetensors)" in shown.stdout
    )
    assert "the manifest is not in the store: this version's files were deleted" in shown.stdout

    one = versions_main(
        "--runs-dir", str(runs), "download", "elena-morales@v1", "--to", str(tmp_path / "a"), env=env
    )
    assert one.returncode == 1
    assert "adapter/adapter_config.json: listed in the manifest but deleted from the store" in one.stderr
    every = versions_main("--runs-dir", str(runs), "url", "elena-morales@v2", env=env)
    assert every.returncode == 1 and "this version's files were deleted" in every.stderr
    assert "Traceback" not in one.stderr + every.stderr + shown.stderr
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("where", ["s3", "folder"])
def test_two_registries_on_one_store_cannot_both_publish_v1(
    where, s3, tmp_path, adapter, adapter_b, versions_main
):  # noqa: F811
    """Issue 28, item 4: two registries (two databases, or one restored from a backup) both number their
    first version of em v1. The first claims models/em/v1/ in the store before any file goes up (a
    conditional create: S3's If-None-Match, a hard link in a folder); the second is refused before it
    overwrites a byte, and the first's files still download, every sha256 checked."""
    store_env = (
        s3_env(s3, f"two-{uuid.uuid4().hex[:8]}")
        if where == "s3"
        else {"ARTIFACT_STORE": str(tmp_path / "store")}
    )
    first, second = (tmp_path / name for name in ("first", "second"))
    for home, weights in ((first, adapter), (second, adapter_b)):
        make_run(home / "runs", f"sqlite:///{home / 'registry.db'}", "run-1", weights)
    envs = [{"DATABASE_URL": f"sqlite:///{home / 'registry.db'}", **store_env} for home in (first, second)]
    ok = versions_main("--runs-dir", str(first / "runs"), "promote", "run-1", "--model", "em", env=envs[0])
    assert ok.returncode == 0, ok.stderr
    taken = versions_main(
        "--runs-dir", str(second / "runs"), "promote", "run-1", "--model", "em", env=envs[1]
    )
    assert taken.returncode == 2 and "another registry made this version first" in taken.stderr, taken.stderr
    # At the same moment (neither manifest written yet): the claim decides, before any file goes up.
    from versions import store

    place = store.open_store(store_env["ARTIFACT_STORE"])
    store.claim(place, "models/race/v1", "a" * 64)
    with pytest.raises(store.Taken, match="another registry made this version first"):
        store.upload(place, "models/race/v1", [("adapter/x.bin", adapter / "adapter_config.json")], {}, print)
    assert place.stored_sha256("models/race/v1/adapter/x.bin") is None  # refused before any file went up
    assert "em@v1 stays unfinished in this registry" in taken.stderr
    again = versions_main(
        "--runs-dir", str(second / "runs"), "promote", "run-1", "--model", "em", env=envs[1]
    )
    assert again.returncode == 2  # and stays refused: retrying cannot take another registry's place
    got = versions_main(
        "--runs-dir", str(first / "runs"), "download", "em@v1", "--to", str(tmp_path / "got"), env=envs[0]
    )
    assert got.returncode == 0, got.stderr  # the first's files intact
    assert (tmp_path / "got" / "adapter" / "adapter_model.safetensors").read_bytes() == (
        adapter / "adapter_model.safetensors"
    ).read_bytes()
