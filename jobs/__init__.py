"""Jobs: run training locally, track it in the registry, evaluate, report (see jobs/run.py)."""
