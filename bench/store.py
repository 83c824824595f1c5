"""Artifact store throughput: a 100 MB adapter-sized file up and down through S3 on loopback, in MB/s, as a
ratio to a plain boto3 transfer of the same file (what `aws s3 cp` does) in the same run.

Usage: python bench/store.py [--mb 100] [--repeats 3]      (`just bench-store`)

The S3 server is moto's, in a process of its own on 127.0.0.1 (tests/s3_server.py's, in-process there),
so client and server do not share one interpreter. Ours (versions/store.py) does more than the plain
copy: it hashes the file before sending (the manifest's sha256, kept in the object's metadata), asks
whether the object is already there, writes the manifest after it; the download hashes every file it
gets and lands by one rename. Plain is boto3's defaults: upload_file / download_file. Each round sends to
a new version folder (nothing skipped as already there), the two kinds interleaved so a noisy machine
moves both; medians reported, objects deleted after each round (moto keeps them in memory).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KEYS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1"}
SERVER = (
    "from moto.server import ThreadedMotoServer as S; import sys, time; "
    "S(port=int(sys.argv[1])).start(); time.sleep(1e9)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto's server did not start")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    server, url = start_server()
    os.environ.update(KEYS | {"AWS_ENDPOINT_URL": url})
    import boto3

    from versions import store

    try:
        plain = boto3.client("s3", endpoint_url=url)  # boto3's defaults, as `aws s3 cp` uses them
        plain.create_bucket(Bucket="bench")
        ours = store.S3Store("bench", "brightrun")
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "adapter_model.safetensors"
            src.write_bytes(os.urandom(args.mb * 1_000_000))
            size_mb = src.stat().st_size / 1e6
            times: dict[str, list[float]] = {"plain up": [], "ours up": [], "plain down": [], "ours down": []}
            quiet = lambda _: None  # noqa: E731
            for i in range(args.repeats):
                folder, dest = f"models/bench/v{i + 1}", Path(tmp) / f"down-{i}"
                start = time.perf_counter()
                plain.upload_file(str(src), "bench", "plain/blob")
                times["plain up"].append(time.perf_counter() - start)
                start = time.perf_counter()
                digest, _ = store.upload(
                    ours, folder, [("adapter/adapter_model.safetensors", src)], {}, quiet
                )
                times["ours up"].append(time.perf_counter() - start)
                start = time.perf_counter()
                plain.download_file("bench", "plain/blob", str(Path(tmp) / "blob"))
                times["plain down"].append(time.perf_counter() - start)
                start = time.perf_counter()
                store.download(ours, folder, digest, dest, quiet)
                times["ours down"].append(time.perf_counter() - start)
                for obj in plain.list_objects_v2(Bucket="bench").get("Contents", []):
                    plain.delete_object(Bucket="bench", Key=obj["Key"])
                (Path(tmp) / "blob").unlink()
                shutil.rmtree(dest)
        rate = {k: size_mb / statistics.median(v) for k, v in times.items()}
        print(f"{size_mb:.0f} MB file, loopback S3 (moto server, its own process), median of {args.repeats}:")
        for way in ("up", "down"):
            p, o = rate[f"plain {way}"], rate[f"ours {way}"]
            print(
                f"  {way:<5} plain boto3 {p:7.1f} MB/s   versions/store.py {o:7.1f} MB/s   ratio {o / p:.2f}x"
            )
        print(
            "  each run (s): "
            + "; ".join(f"{k} " + "/".join(f"{t:.2f}" for t in v) for k, v in times.items())
        )
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
