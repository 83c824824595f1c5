"""The folder brightrun/quiet.py's child_env puts on a started process's PYTHONPATH: sitecustomize.py only."""
