"""Jobs: a training run from start to end. runfolder.py (a run folder's rules), run.py (a local run),
pod/ (a run on RunPod), status.py (every status change: the registry and the signed event), cancel.py,
results.py, registry.py, service/ (the jobs service: webhooks, API, dashboard). `python -m jobs --help`."""
