"""The customer's webhook receiver, doing exactly what docs/webhook-contract.md says theirs does, no more.

Route: hex HMAC-SHA256 of the body text under the secret, compared with X-Webhook-Signature by plain
equality (401 otherwise), then JSON.parse. Handler: one UPDATE of their `training_jobs` row WHERE id =
job_id (status, updated_at; current_step / total_steps / metrics / lora_artifact_path / error_message
when present; completed_at on completed or failed), then, when `metrics` and `step` are both truthy
(JavaScript's truthiness: {} is truthy, 0 is not), one INSERT into `training_metrics_history` with every
key of `metrics` spread in as a column. Their database client returns errors instead of throwing and
nobody checks them: the answer is 200 whatever happened. Here each such error is counted as a lost write
(so is an UPDATE that matches no row: the event's data went nowhere), which is what the tests assert on.

"When present" is read as JavaScript's `payload.x !== undefined`: a key sent as null writes NULL.

Their tables, with the columns and the status CHECK as they define them: on PostgreSQL (what they run,
Supabase) when TEST_POSTGRES_URL is set, in a schema of its own; else SQLite with STRICT tables (types
enforced) and the same CHECK.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import sqlite3
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

from tests import loopback

STATUSES = ("queued", "preprocessing", "model_loaded", "training", "completed", "failed", "cancelled")
CHECK = "status IN (" + ", ".join(f"'{s}'" for s in STATUSES) + ")"

POSTGRES_TABLES = f"""
CREATE TABLE training_jobs (
  id uuid PRIMARY KEY,
  status text NOT NULL DEFAULT 'queued' CHECK ({CHECK}),
  runpod_pod_id text, hyperparameters jsonb, metrics jsonb,
  current_step integer, total_steps integer, current_epoch numeric,
  started_at timestamptz, completed_at timestamptz,
  estimated_cost_usd numeric, actual_cost_usd numeric, gpu_hours numeric,
  lora_artifact_path text, training_log_path text, error_message text, retry_count integer DEFAULT 0,
  created_at timestamptz DEFAULT now(), updated_at timestamptz DEFAULT now()
);
CREATE TABLE training_metrics_history (
  id bigserial PRIMARY KEY,
  training_job_id uuid REFERENCES training_jobs(id) ON DELETE CASCADE,
  step integer NOT NULL, epoch numeric, loss numeric, learning_rate numeric, grad_norm numeric,
  recorded_at timestamptz DEFAULT now()
);
"""

SQLITE_TABLES = f"""
CREATE TABLE training_jobs (
  id TEXT PRIMARY KEY CHECK (length(id) = 36),
  status TEXT NOT NULL DEFAULT 'queued' CHECK ({CHECK}),
  runpod_pod_id TEXT, hyperparameters TEXT, metrics TEXT CHECK (metrics IS NULL OR json_valid(metrics)),
  current_step INTEGER, total_steps INTEGER, current_epoch REAL,
  started_at TEXT, completed_at TEXT,
  estimated_cost_usd REAL, actual_cost_usd REAL, gpu_hours REAL,
  lora_artifact_path TEXT, training_log_path TEXT, error_message TEXT, retry_count INTEGER DEFAULT 0,
  created_at TEXT, updated_at TEXT
) STRICT;
CREATE TABLE training_metrics_history (
  id INTEGER PRIMARY KEY,
  training_job_id TEXT REFERENCES training_jobs(id) ON DELETE CASCADE,
  step INTEGER NOT NULL, epoch REAL, loss REAL, learning_rate REAL, grad_norm REAL, recorded_at TEXT
) STRICT;
"""


def truthy(value) -> bool:
    """JavaScript's truthiness of a JSON value."""
    if value is None or value is False or value == "":
        return False
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value != 0 and not math.isnan(value)
    return True


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Database:
    """Their two tables; one connection per statement, errors returned (never raised), as their client."""

    def __init__(self, folder: Path):
        self.pg_url = os.environ.get("TEST_POSTGRES_URL")
        if self.pg_url:
            import psycopg

            self.schema = "customer_" + uuid.uuid4().hex[:12]
            with psycopg.connect(self.pg_url, autocommit=True) as con:
                con.execute(f"CREATE SCHEMA {self.schema}")
                con.execute(f"SET search_path TO {self.schema}")
                con.execute(POSTGRES_TABLES)
        else:
            self.path = folder / "customer.db"
            with sqlite3.connect(self.path) as con:
                con.executescript(SQLITE_TABLES)

    def execute(self, sql: str, params: list) -> tuple[int, str | None]:
        """(rows affected, error text or None)."""
        try:
            if self.pg_url:
                import psycopg

                with psycopg.connect(self.pg_url, autocommit=True) as con:
                    con.execute(f"SET search_path TO {self.schema}")
                    return con.execute(sql, params).rowcount, None
            with sqlite3.connect(self.path, timeout=30) as con:
                return con.execute(sql.replace("%s", "?"), params).rowcount, None
        except Exception as exc:  # noqa: BLE001 -- their client hands every database error back as a value
            return 0, f"{type(exc).__name__}: {exc}"

    def rows(self, sql: str, params: list) -> list[dict]:
        if self.pg_url:
            import psycopg
            from psycopg.rows import dict_row

            with psycopg.connect(self.pg_url, autocommit=True, row_factory=dict_row) as con:
                con.execute(f"SET search_path TO {self.schema}")
                return [
                    {k: float(v) if type(v).__name__ == "Decimal" else v for k, v in row.items()}
                    for row in con.execute(sql, params).fetchall()
                ]
        with sqlite3.connect(self.path) as con:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute(sql.replace("%s", "?"), params).fetchall()]

    def close(self) -> None:
        if self.pg_url:
            import psycopg

            with psycopg.connect(self.pg_url, autocommit=True) as con:
                con.execute(f"DROP SCHEMA {self.schema} CASCADE")


class CustomerApp:
    """Start with `with CustomerApp(folder, secret) as app:`; `app.url` is their webhook route."""

    def __init__(self, folder: Path, secret: str):
        self.secret = secret
        self.db = Database(folder)
        self.lock = threading.Lock()
        self.log: list[dict] = []  # one entry per request: answer, payload, lost writes with their errors

    def new_job(self) -> str:
        """Their app creates the job's row (a UUID) before it starts the job, and passes the id to us."""
        job_id = str(uuid.uuid4())
        now = datetime.now(UTC).isoformat()
        count, error = self.db.execute(
            "INSERT INTO training_jobs (id, status, created_at, updated_at) VALUES (%s, 'queued', %s, %s)",
            [job_id, now, now],
        )
        assert count == 1, error
        return job_id

    # -- the route and the handler, as the contract describes them ---------------------------------------

    def receive(self, body_text: str, signature: str | None) -> int:
        expected = hmac.new(self.secret.encode(), body_text.encode(), hashlib.sha256).hexdigest()
        if signature != expected:
            self.record(401, None, [])
            return 401
        payload = json.loads(body_text)  # a Next.js route would answer 500 on a throw: we never send one
        lost = self.handle(payload)
        self.record(200, payload, lost)
        return 200

    def handle(self, p: dict) -> list[str]:
        now = datetime.now(UTC).isoformat()
        update = {"status": p.get("status"), "updated_at": now}
        for theirs, column in (
            ("step", "current_step"),
            ("total_steps", "total_steps"),
            ("metrics", "metrics"),
            ("lora_artifact_path", "lora_artifact_path"),
            ("error_message", "error_message"),
        ):
            if theirs in p:
                value = p[theirs]
                update[column] = json.dumps(value) if column == "metrics" and value is not None else value
        if p.get("status") in ("completed", "failed"):
            update["completed_at"] = now
        lost = []
        sets = ", ".join(f"{quote(k)} = %s" for k in update)
        count, error = self.db.execute(
            f"UPDATE training_jobs SET {sets} WHERE id = %s", [*update.values(), p.get("job_id")]
        )
        if error or count == 0:
            lost.append(f"training_jobs update: {error or 'no row with this id'}")
        if truthy(p.get("metrics")) and truthy(p.get("step")):
            columns = {
                "training_job_id": p.get("job_id"),
                "step": p["step"],
                **p["metrics"],
                "recorded_at": now,
            }
            names = ", ".join(quote(k) for k in columns)
            marks = ", ".join("%s" for _ in columns)
            _, error = self.db.execute(
                f"INSERT INTO training_metrics_history ({names}) VALUES ({marks})", list(columns.values())
            )
            if error:
                lost.append(f"training_metrics_history insert: {error}")
        return lost

    def record(self, answer: int, payload: dict | None, lost: list[str]) -> None:
        with self.lock:
            self.log.append({"answer": answer, "payload": payload, "lost": lost})

    # -- what a test reads ------------------------------------------------------------------------------

    def tally(self, job_id: str) -> dict:
        """Events for the job, refused answers (all jobs: a refused body names no job we can trust),
        lost writes with their errors, the final row, and its metrics history."""
        with self.lock:
            mine = [e for e in self.log if e["payload"] and e["payload"].get("job_id") == job_id]
            refused = sum(1 for e in self.log if e["answer"] != 200)
        [row] = self.db.rows("SELECT * FROM training_jobs WHERE id = %s", [job_id])
        history = self.db.rows(
            "SELECT step, epoch, loss, learning_rate, grad_norm FROM training_metrics_history "
            "WHERE training_job_id = %s ORDER BY id",
            [job_id],
        )
        return {
            "events": len(mine),
            "refused": refused,
            "lost_writes": [x for e in mine for x in e["lost"]],
            "metrics_events": sum(
                1 for e in mine if truthy(e["payload"].get("metrics")) and truthy(e["payload"].get("step"))
            ),
            "statuses": [e["payload"]["status"] for e in mine],
            # ours, of the events their route accepted (a valid signature): what the run said happened
            "ours": [
                e["payload"].get("brightrun_status", e["payload"]["status"])
                for e in mine
                if e["answer"] == 200
            ],
            "row": row,
            "history": history,
        }

    def summary(self, kind: str, job_id: str) -> str:
        """One line for the closing note: events, refused, lost writes, final row."""
        t = self.tally(job_id)
        row = t["row"]
        return (
            f"{kind}: {t['events']} events, {t['refused']} refused, {len(t['lost_writes'])} lost writes, "
            f"{len(t['history'])} history rows for {t['metrics_events']} metrics events; final row: "
            f"status {row['status']}, step {row['current_step']}/{row['total_steps']}, "
            f"lora_artifact_path {'set' if row['lora_artifact_path'] else 'empty'}, "
            f"error_message {row['error_message']!r}"
        )

    # -- the server --------------------------------------------------------------------------------------

    def __enter__(self) -> CustomerApp:
        app = self

        class Route(loopback.Quiet):
            def do_POST(self):  # noqa: N802 -- http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                text = self.rfile.read(length).decode("utf-8")  # what request.text() gives the route
                answer = app.receive(text, self.headers.get("X-Webhook-Signature"))
                body = b'{"received":true}' if answer == 200 else b'{"error":"Invalid signature"}'
                self.answer(answer, body)

        self.server, base = loopback.start(Route)
        self.url = f"{base}/api/training/webhook"
        return self

    def __exit__(self, *exc) -> None:
        loopback.stop(self.server)
        self.db.close()

    def env(self) -> dict[str, str]:
        """What a run needs in its environment to report here."""
        return {"WEBHOOK_URL": self.url, "TRAINING_WEBHOOK_SECRET": self.secret}


# -- their start call (customer-start-flow.md, "Start"), exactly as their TrainingService makes it --------


# Their form's seven as a user would leave them (customer-start-flow.md, step 1): what a start sends.
HYPERPARAMETERS = {
    "num_epochs": 3,
    "batch_size": 4,
    "learning_rate": 0.0002,
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "warmup_ratio": 0.03,
}


class StartFailed(Exception):
    """Their app throws with the response text on a non-2xx answer; the user sees that text."""


def start_training_job(
    app: CustomerApp, endpoint: str, api_key: str, job_id: str, dataset_url: str, hyperparameters: dict
) -> dict:
    """Steps 3 and 4: POST ${RUNPOD_ENDPOINT_URL}/training/start with their headers and body (runpod_config
    not forwarded), then, on a 2xx, their row gets pod id, status preprocessing and started_at."""
    import httpx

    body = {
        "job_id": job_id,
        "dataset_url": dataset_url,
        "hyperparameters": hyperparameters,
        "webhook_url": app.url,
        "webhook_secret": app.secret,
    }
    response = httpx.post(
        f"{endpoint}/training/start",
        content=json.dumps(body),  # JSON.stringify(body)
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"},
        timeout=300,
    )
    if not response.is_success:
        raise StartFailed(response.text)
    answer = response.json()
    now = datetime.now(UTC).isoformat()
    count, error = app.db.execute(
        "UPDATE training_jobs SET runpod_pod_id = %s, status = 'preprocessing', started_at = %s, "
        "updated_at = %s WHERE id = %s",
        [answer.get("pod_id"), now, now, job_id],
    )
    assert count == 1, error
    return answer


class Storage:
    """Their private Supabase Storage bucket `training-files` on loopback: signed download URLs as
    Supabase writes them (/storage/v1/object/sign/<bucket>/<path>?token=<JWT>), valid `expires` seconds;
    an expired or wrong token gets Supabase's 400 InvalidJWT answer."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.tokens: dict[str, tuple[str, float]] = {}
        self.requests: list[str] = []

    def put(self, path: str, data: bytes) -> None:
        self.files[path] = data

    def sign(self, path: str, expires: float = 3600) -> str:
        import time

        token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + uuid.uuid4().hex  # JWT-looking, a secret to us
        self.tokens[token] = (path, time.time() + expires)
        return f"{self.base}/storage/v1/object/sign/training-files/{path}?token={token}"

    def __enter__(self) -> Storage:
        import time
        from urllib.parse import parse_qs, urlsplit

        storage = self

        class Route(loopback.Quiet):
            def do_GET(self):  # noqa: N802 -- http.server's name
                parts = urlsplit(self.path)
                storage.requests.append(parts.path)
                token = (parse_qs(parts.query).get("token") or [""])[0]
                path, until = storage.tokens.get(token, (None, 0))
                prefix = "/storage/v1/object/sign/training-files/"
                if path is None or parts.path != prefix + path or time.time() > until:
                    body = b'{"statusCode":"400","error":"InvalidJWT","message":"\\"exp\\" claim timestamp check failed"}'
                    status = 400
                else:
                    body, status = storage.files[path], 200
                self.answer(status, body)

        self.server, self.base = loopback.start(Route)
        return self

    def __exit__(self, *exc) -> None:
        loopback.stop(self.server)
