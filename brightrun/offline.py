"""The environment under which Axolotl and the Hugging Face libraries run without a network: no hub
lookups for local files, no telemetry, no wandb. Every process we start that loads a model takes these."""

from __future__ import annotations

# HF_*_OFFLINE: models and data are local folders, so a lookup could only fail or wait on a timeout.
# AXOLOTL_DO_NOT_TRACK: Axolotl's telemetry logs errors offline and has hung in its flush.
HUB = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
TELEMETRY = {"AXOLOTL_DO_NOT_TRACK": "1"}
WANDB = {"WANDB_DISABLED": "true"}
ALL = HUB | TELEMETRY | WANDB
