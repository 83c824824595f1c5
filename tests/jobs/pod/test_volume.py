"""jobs/pod/volume.py against an S3 server on loopback (tests/s3_server.py) standing in for RunPod's
S3-compatible API of network volumes, and against a local directory: upload, listing, checkpoints,
the pod's registry, fetch, and the errors a user meets."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from jobs.pod import volume as vol
from tests import loopback
from tests.s3_server import DATACENTER, s3_server


@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        yield server


@pytest.fixture
def s3_volume(s3, monkeypatch, request):
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    volume_id = "v" + format(abs(hash(request.node.name)) % 10**9, "09d")
    client = s3.volume(volume_id)
    return vol.S3Volume(volume_id, DATACENTER), client


def pod_run(root: Path, vrun: str, status: str, step: int) -> None:
    """What a pod leaves on its volume: a registry with the run's row, checkpoints, an adapter, logs."""
    run = root / "runs" / vrun
    for n in (1, 2):
        (run / "output" / f"checkpoint-{n}").mkdir(parents=True)
        (run / "output" / f"checkpoint-{n}" / "adapter_model.safetensors").write_bytes(b"c" * 10)
    (run / "output" / "checkpoint-1" / "trainer_state.json").write_text("{}")  # 2 is half-written
    (run / "output" / "adapter_model.safetensors").write_bytes(b"adapter")
    (run / "output" / "adapter_config.json").write_text('{"r": 16}')
    (run / "logs").mkdir()
    (run / "logs" / "train.log").write_text("step 1\n")
    (run / "run.json").write_text('{"pod": true}')
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 2.5}\n')
    con = sqlite3.connect(root / "runs" / "registry.db")
    con.execute(
        "CREATE TABLE training_jobs (id TEXT PRIMARY KEY, status TEXT, step INT, total_steps INT, "
        "metrics TEXT, error_message TEXT)"
    )
    con.execute(
        "INSERT INTO training_jobs VALUES (?, ?, ?, 4, ?, NULL)", (vrun, status, step, '{"loss": 2.5}')
    )
    con.commit()
    con.close()


def push(client, bucket: str, root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), bucket, path.relative_to(root).as_posix())


def test_upload_is_complete_or_absent_and_not_repeated(s3_volume, sample_out):
    volume, client = s3_volume
    said = []
    sent = vol.put_dir(volume, sample_out, "datasets/sample-1234", say=said.append)
    files = sorted(p.relative_to(sample_out).as_posix() for p in sample_out.rglob("*") if p.is_file())
    keys = sorted(
        o["Key"].removeprefix("datasets/sample-1234/")
        for o in client.list_objects_v2(Bucket=volume.volume_id)["Contents"]
    )
    assert sent == len(files) and keys == files
    for name in files:
        body = client.get_object(Bucket=volume.volume_id, Key=f"datasets/sample-1234/{name}")["Body"].read()
        assert body == (sample_out / name).read_bytes()
    assert said[-1].startswith(f"data: {len(files)}/{len(files)} files") and "manifest" not in said[-1]
    # The manifest went last: a listing in upload order ends with it (S3 keeps no order, the log does).
    assert vol.put_dir(volume, sample_out, "datasets/sample-1234", say=said.append) == 0
    assert "already on network volume" in said[-1]


def test_an_interrupted_upload_is_not_taken_for_complete(s3_volume, sample_out, monkeypatch):
    volume, client = s3_volume
    real_put, count = volume.put, []

    def put(src, key):
        if len(count) == 2:
            raise vol.VolumeError("connection dropped")
        count.append(key)
        real_put(src, key)

    monkeypatch.setattr(volume, "put", put)
    with pytest.raises(vol.VolumeError):
        vol.put_dir(volume, sample_out, "datasets/s", say=lambda m: None)
    assert not volume.has("datasets/s/manifest.json")
    monkeypatch.setattr(volume, "put", real_put)
    n = vol.put_dir(volume, sample_out, "datasets/s", say=lambda m: None)
    assert n == len([p for p in sample_out.rglob("*") if p.is_file()]) and volume.has(
        "datasets/s/manifest.json"
    )


@pytest.mark.parametrize("kind", ["s3", "local"])
def test_progress_checkpoints_and_fetch(kind, s3_volume, tmp_path):
    pod_root = tmp_path / "pod"
    pod_run(pod_root, "run-1", "training", 3)
    if kind == "s3":
        volume, client = s3_volume
        push(client, volume.volume_id, pod_root)
    else:
        volume = vol.LocalVolume(pod_root)
    row = vol.registry_row(volume, "run-1")
    assert row == {"status": "training", "step": 3, "total_steps": 4, "metrics": {"loss": 2.5}, "error": None}
    assert vol.registry_row(volume, "other") is None
    assert vol.checkpoint_step(volume, "run-1") == 1  # checkpoint-2 has no trainer_state.json yet
    assert vol.checkpoint_step(volume, "other") is None
    assert vol.run_exists(volume, "run-1") and not vol.run_exists(volume, "other")

    dest = tmp_path / "home" / "run-1"
    (dest).mkdir(parents=True)
    (dest / "run.json").write_text('{"launcher": true}')
    n = vol.fetch_run(volume, "run-1", dest, say=lambda m: None)
    got = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert (
        got
        == [
            "logs/train.log",
            "metrics.jsonl",
            "output/adapter_config.json",
            "output/adapter_model.safetensors",
            "pod-run.json",
            "run.json",
        ]
        and n == 5
    )
    assert json.loads((dest / "run.json").read_text()) == {"launcher": True}  # ours, not overwritten
    assert (dest / "output" / "adapter_model.safetensors").read_bytes() == b"adapter"
    vol.fetch_run(volume, "run-1", dest, say=lambda m: None, checkpoints=True)
    assert (dest / "output" / "checkpoint-2" / "adapter_model.safetensors").is_file()


def test_missing_keys_unknown_volume_and_refused_keys_are_named(s3, monkeypatch):
    for key in s3.env:
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(vol.VolumeError, match="set RUNPOD_S3_ACCESS_KEY and RUNPOD_S3_SECRET_KEY"):
        vol.S3Volume("abc123", DATACENTER)
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    volume = vol.S3Volume("not-a-volume", DATACENTER)
    with pytest.raises(vol.VolumeError, match="network volume not-a-volume .*no such volume"):
        volume.folders("")
    # The endpoint RunPod documents for the datacenter, when no override is set.
    monkeypatch.delenv("RUNPOD_S3_ENDPOINT")
    assert vol.S3Volume("abc123", "US-KS-2").endpoint == "https://s3api-us-ks-2.runpod.io/"


class CutShort:
    """An S3 endpoint that answers every object GET with 200 OK and a body cut short (RunPod's S3 docs:
    "EOF errors with 200 OK responses"), and HEAD with the full size, as S3 does."""

    size = 4096

    def __enter__(self):
        served = self.gets = []

        class Route(loopback.Quiet):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self):  # noqa: N802 -- http.server's name
                self.send_response(200)
                self.send_header("Content-Length", str(CutShort.size))
                self.send_header("ETag", '"abc"')
                self.end_headers()

            def do_GET(self):  # noqa: N802
                served.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", str(CutShort.size))
                self.send_header("ETag", '"abc"')
                self.end_headers()
                self.wfile.write(b"x" * 10)  # and no more: the connection closes
                self.wfile.flush()
                self.close_connection = True

        self.server, self.url = loopback.start(Route)
        return self

    def __exit__(self, *exc):
        loopback.stop(self.server)


def test_an_eof_inside_a_200_is_retried_then_a_volume_error_not_a_traceback(tmp_path, monkeypatch):
    """boto3's RetriesExceededError is no botocore error: it used to escape the follower as a traceback."""
    monkeypatch.setenv("RUNPOD_S3_ACCESS_KEY", "user_abc")
    monkeypatch.setenv("RUNPOD_S3_SECRET_KEY", "rps_secret")
    with CutShort() as server:
        volume = vol.S3Volume("x7k2volume", DATACENTER, endpoint=server.url)
        with pytest.raises(vol.VolumeError, match="downloading runs/r/registry.db failed after retries"):
            volume.get("runs/r/registry.db", tmp_path / "registry.db")
        assert len(server.gets) >= 2  # tried again before giving up
    assert not (tmp_path / "registry.db").exists()
