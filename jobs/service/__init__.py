"""The jobs service (FastAPI on uvicorn): `python -m jobs service` / `just service`.

  POST /api/training/webhook   signed status events from runs (jobs/webhooks.py): no bearer token
  GET  /api/training/jobs      ?status=...; GET/DELETE /api/training/jobs/{id}; POST to start a run
  GET  /api/models             GET /api/models/{name}; POST .../promote, .../rollback; GET
                               .../versions/{v}/download (presigned URLs), POST .../versions/{v}/test (a
                               version's answer: versions/answer.py): versions/ over HTTP (models_api.py)
  POST /training/start         the customer's app starts a job (their names: jobs/service/training_api.py);
                               GET /training/status/{id}, POST /training/stop/{id}, GET /models/list,
                               POST /models/test. Their jobs run here, one per GPU, the rest queued.
  GET  /health, /openapi.json, /docs; GET / the dashboard (jobs/service/static)

JOBS_API_TOKEN (the API's bearer token) and TRAINING_WEBHOOK_SECRET (the webhook HMAC key) come from the
environment only; the service refuses to start without them. DATABASE_URL picks the registry as
everywhere else (default: the SQLite file in the runs folder).
"""

from __future__ import annotations

import copy
import os
import sys

REQUIRED = ("JOBS_API_TOKEN", "TRAINING_WEBHOOK_SECRET")


def log_config() -> dict:
    """uvicorn's own logging, with our logger (jobs.service) printed the same way."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["jobs.service"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


# Connections served at once (more get 503 at once, not a queue), and how long a request's body may take
# to arrive: a client that trickles bytes holds a slot only that long (jobs/service/app.py, BodyLimit).
MAX_CONNECTIONS = 64


def main(
    host: str = "127.0.0.1",
    port: int = 8000,
    runs_dir: str = "runs",
    db_url: str | None = None,
    data_dir: str = "data",
    model: str = "70b-qlora",
    preset: str = "balanced",
    evaluate: bool = True,
    runs_mode: str | None = None,
    poll: float = 30.0,
) -> int:
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        print(
            f"error: {' and '.join(missing)} not set: the service needs both in its environment "
            "(the API's bearer token and the webhook signing secret)",
            file=sys.stderr,
        )
        return 2
    import uvicorn
    from sqlalchemy.exc import SQLAlchemyError

    from jobs.service.app import create_app

    try:
        app = create_app(runs_dir, db_url, data_dir, model, preset, evaluate, runs_mode, poll)
    except SQLAlchemyError as exc:
        # The driver's own message (host, port, why); never the URL, which may hold a password.
        reason = getattr(exc, "orig", None) or exc
        print(f"error: the registry database is unreachable: {reason}", file=sys.stderr)
        return 1
    except RuntimeError as exc:  # a setting out of range (e.g. MODELS_TEST_TIMEOUT_S): said, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # server_header off: no version banner for scanners; proxy headers are not trusted by default.
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=log_config(),
        server_header=False,
        limit_concurrency=MAX_CONNECTIONS,
        timeout_keep_alive=5,
    )
    return 0
