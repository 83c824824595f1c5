"""Named models with versions and the artifact store (`python -m versions`, `just promote|models|model|...`).

  registry.py  the model_versions table: reserve a number, complete it, stages, one production, rollback
  store.py     a folder or an S3-compatible bucket: upload (manifest last, idempotent), verified download,
               presigned URLs, a check of what is still there
  promote.py   a completed, evaluated run into version N: checks, reservation, upload, stage
  sides.py     NAME@vN or a run id as an adapter folder here (run folder, or the store through a cache)
  ab.py        A/B between two versions or runs: same held-out prompts, the evaluation's judge, losses
  abtests.py   the ab_tests table: one row per A/B, listed under each version
  __main__.py  the command line

The jobs service serves the same over HTTP (jobs/service/models_api.py).
"""
