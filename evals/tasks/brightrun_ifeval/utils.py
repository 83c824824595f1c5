"""The data of brightrun_ifeval from the file beside it; scoring is lm-eval's own IFEval code, unchanged."""

from __future__ import annotations

import json
from pathlib import Path

from lm_eval.tasks.ifeval.utils import agg_inst_level_acc, process_results

__all__ = ["agg_inst_level_acc", "load", "process_results"]

DATA = Path(__file__).with_name("ifeval_25.jsonl")


def load(**_metadata):
    """lm-eval calls a task's custom_dataset with the task's metadata as keyword arguments."""
    import datasets

    rows = [json.loads(line) for line in DATA.read_text("utf-8").splitlines() if line.strip()]
    # One kwargs key set for every instruction, absent ones None, as in the hub's google/IFEval: Arrow
    # needs one struct type, and IFEval's checkers drop the None values.
    keys = sorted({k for r in rows for kw in r["kwargs"] for k in kw})
    for r in rows:
        r["kwargs"] = [{k: kw.get(k) for k in keys} for kw in r["kwargs"]]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
