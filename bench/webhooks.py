"""Webhook load on the real jobs service over PostgreSQL: concurrent senders, signed events, nothing lost.

Usage: python bench/webhooks.py [--senders 50] [--events 200] [--database-url URL] [--keep-schema]
       (`just bench-webhooks`; a local PostgreSQL: `bash .ci/postgres.sh` prints its URL)

The database URL comes from --database-url, else DATABASE_URL, else TEST_POSTGRES_URL. The service
(`python -m jobs service`, a subprocess on a free port) gets a fresh schema of its own in that database
(search_path), so runs never collide and the counts below are exactly this run's; it is dropped at the
end unless --keep-schema.

Each sender is one job and one thread with its own httpx.Client: a `queued` event (which registers the
job), then training events with rising sequence and step, each one signed (X-Webhook-Signature) and
posted only after the previous one was answered, as a run's sender does. Events are built before the
clock starts and stamped and signed as sent (the service refuses a timestamp over 5 minutes off).
Reported: events, wall seconds, events/s, p50/p99 latency, answers by code; then the database is
checked: webhook_events rows == events sent, training_metrics_history rows == training events, every
job at its last step. Exit 1 when an event was lost or answered 5xx (or not at all), or the service
did not start; 2 on bad usage (no PostgreSQL URL). Client and service share this machine's cores:
the figures are for both together.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobs import webhooks  # noqa: E402  (the repo root on the path first, as the other benchmarks)


def refuse(message: str, code: int = 2):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def database_url(given: str | None) -> str:
    url = given or os.environ.get("DATABASE_URL") or os.environ.get("TEST_POSTGRES_URL")
    if not url:
        refuse(
            "no PostgreSQL to run against: give --database-url URL or set DATABASE_URL or "
            "TEST_POSTGRES_URL (a local one: `bash .ci/postgres.sh` prints "
            "postgresql://brightrun:brightrun@127.0.0.1:5432/brightrun_test)"
        )
    if not url.startswith(("postgresql", "postgres://")):
        refuse(f"this benchmark is for PostgreSQL; got {url.split(':', 1)[0]}://...")
    return url


def with_schema(url: str, schema: str) -> str:
    """The same database, this run's schema first on the search_path (libpq `options`)."""
    return url + ("&" if "?" in url else "?") + f"options=-csearch_path%3D{schema}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_events(tag: str, sender: int, count: int) -> list[dict]:
    """One job's events in sending order: `queued` with the job, then training steps 1..count-1."""
    job_id = f"bench-{tag}-{sender:03d}"
    out = []
    for i in range(count):
        event = {
            "event_id": uuid.uuid4().hex,
            "sequence": i + 1,
            "job_id": job_id,
            "status": "queued" if i == 0 else "training",
            "step": i,
            "total_steps": count - 1,
            "metrics": {}
            if i == 0
            else {"loss": 3.0 / (1 + 0.01 * i), "learning_rate": 2e-4, "grad_norm": 0.9, "epoch": i / count},
            "occurred_at": 0,  # both stamped when sent: the service refuses a timestamp 5 minutes off
            "timestamp": 0,
        }
        if i == 0:
            event["job"] = {
                "preset": "balanced",
                "model": "smoke",
                "hardware": "cpu",
                "estimated_cost": 0.0,
                "hyperparameters": {"learning_rate": 2e-4},
            }
        out.append(event)
    return out


def send_all(url: str, events, secret: str, start: threading.Barrier, latencies: list, codes: Counter, lock):
    """One sender: each event stamped, encoded and signed (microseconds), then posted after the previous
    one was answered. Latency is the POST alone."""
    mine_lat, mine_codes = [], Counter()
    with httpx.Client(timeout=30.0) as client:
        start.wait()
        for event in events:
            event["occurred_at"] = event["timestamp"] = int(time.time())
            body = webhooks.encode(event)
            headers = {
                "Content-Type": "application/json",
                webhooks.SIGNATURE_HEADER: webhooks.sign(secret, body),
            }
            t0 = time.perf_counter()
            try:
                mine_codes[client.post(url, content=body, headers=headers).status_code] += 1
            except httpx.TransportError as exc:
                mine_codes[f"no answer ({type(exc).__name__})"] += 1
            mine_lat.append(time.perf_counter() - t0)
    with lock:
        latencies.extend(mine_lat)
        codes.update(mine_codes)


def start_service(db_url: str, runs_dir: Path, log_path: Path, token: str, secret: str) -> tuple:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "WEBHOOK_URL"}
    env |= {"DATABASE_URL": db_url, "JOBS_API_TOKEN": token, "TRAINING_WEBHOOK_SECRET": secret}
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs", "--runs-dir", str(runs_dir), "service", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.close()
            refuse("the service did not start:\n" + log_path.read_text()[-3000:], 1)
        time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def count_rows(url: str, tag: str, expected_last_step: int) -> dict:
    from sqlalchemy import create_engine, text

    from jobs import registry

    engine = create_engine(registry.database_url(url))
    like = {"like": f"bench-{tag}-%"}
    with engine.connect() as c:
        counts = {
            "jobs": c.execute(text("SELECT count(*) FROM training_jobs WHERE id LIKE :like"), like).scalar(),
            "events": c.execute(
                text("SELECT count(*) FROM webhook_events WHERE job_id LIKE :like"), like
            ).scalar(),
            "metrics": c.execute(
                text("SELECT count(*) FROM training_metrics_history WHERE job_id LIKE :like"), like
            ).scalar(),
            "behind": c.execute(
                text("SELECT count(*) FROM training_jobs WHERE id LIKE :like AND step <> :last"),
                like | {"last": expected_last_step},
            ).scalar(),
        }
    engine.dispose()
    return counts


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--senders", type=int, default=50, help="concurrent senders, one job each (50)")
    ap.add_argument("--events", type=int, default=200, help="events per sender, queued first (200)")
    ap.add_argument("--database-url", default=None, help="PostgreSQL (else DATABASE_URL, TEST_POSTGRES_URL)")
    ap.add_argument("--keep-schema", action="store_true", help="leave this run's schema for a look")
    args = ap.parse_args()
    if args.senders < 1 or args.events < 2:
        ap.error("--senders must be >= 1 and --events >= 2 (a queued event, then training)")
    base_url = database_url(args.database_url)

    # 1. A fresh schema of this run's own in the given database.
    from sqlalchemy import create_engine, text

    from jobs import registry

    tag = secrets.token_hex(4)
    schema = f"bench_webhooks_{tag}"
    admin = create_engine(registry.database_url(base_url))
    try:
        with admin.begin() as c:
            c.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # noqa: BLE001 -- report the database's own words, then stop
        refuse(f"cannot use {base_url.split('@')[-1]}: {type(exc).__name__}: {exc}", 1)
    url = with_schema(base_url, schema)

    token, secret = secrets.token_hex(16), secrets.token_hex(16)
    total = args.senders * args.events
    training = args.senders * (args.events - 1)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as tmp:
            # 2. The real service, on PostgreSQL (it migrates the fresh schema at start).
            proc, service = start_service(url, Path(tmp) / "runs", Path(tmp) / "service.log", token, secret)
            try:
                # 3. Every event built up front; all senders start together.
                plans = [build_events(tag, n, args.events) for n in range(args.senders)]
                latencies: list[float] = []
                codes: Counter = Counter()
                lock = threading.Lock()
                barrier = threading.Barrier(args.senders + 1)
                threads = [
                    threading.Thread(
                        target=send_all,
                        args=(
                            service + "/api/training/webhook",
                            plan,
                            secret,
                            barrier,
                            latencies,
                            codes,
                            lock,
                        ),
                    )
                    for plan in plans
                ]
                for t in threads:
                    t.start()
                barrier.wait()
                started = time.perf_counter()
                for t in threads:
                    t.join()
                wall = time.perf_counter() - started
            finally:
                stop(proc)
                log_tail = (Path(tmp) / "service.log").read_text(errors="replace")[-2000:]

        # 4. What reached the database.
        rows = count_rows(url, tag, args.events - 1)
    finally:
        if not args.keep_schema:
            with admin.begin() as c:
                c.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()

    ok_2xx = sum(n for code, n in codes.items() if isinstance(code, int) and 200 <= code < 300)
    five = sum(n for code, n in codes.items() if not isinstance(code, int) or code >= 500)
    lost = total - rows["events"]
    by_code = ", ".join(f"{code}: {n}" for code, n in sorted(codes.items(), key=str)) or "none"
    lines = [
        ("senders x events", f"{args.senders} x {args.events}"),
        ("events sent", f"{total}"),
        ("wall seconds", f"{wall:.2f}"),
        ("events/s", f"{total / wall:.0f}"),
        (
            "latency p50 / p99",
            f"{percentile(latencies, 50) * 1000:.1f} / {percentile(latencies, 99) * 1000:.1f} ms",
        ),
        ("answers by code", by_code),
        ("non-2xx", f"{total - ok_2xx}"),
        ("webhook_events rows", f"{rows['events']} (expected {total})"),
        ("metrics_history rows", f"{rows['metrics']} (expected {training})"),
        ("jobs registered", f"{rows['jobs']} (expected {args.senders}; not at last step: {rows['behind']})"),
        ("lost (sent, not stored)", f"{lost}"),
        ("5xx or no answer", f"{five}"),
    ]
    width = max(len(k) for k, _ in lines)
    kept = " (kept)" if args.keep_schema else ""
    print(f"webhook load, PostgreSQL schema {schema}{kept}, {os.cpu_count()} cores")
    for key, value in lines:
        print(f"  {key:<{width}}  {value}")

    failed = (
        lost != 0
        or five != 0
        or rows["metrics"] != training
        or rows["jobs"] != args.senders
        or rows["behind"] != 0
    )
    if failed:
        print("FAIL: events lost or refused; the service's log ends with:\n" + log_tail, file=sys.stderr)
        return 1
    print("OK: every event applied once, no 5xx")
    return 0


if __name__ == "__main__":
    sys.exit(main())
