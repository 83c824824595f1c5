"""evals/general.py: real lm-eval (its hf back-end over the PEFT model, the base under disable_adapter) on the offline task shipped
in evals/tasks/, with the tiny Llama on 3 items; the task's data and checkers on their own."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
from conftest import TINY_MODEL_DIR
from peft_adapter import make_adapter

from brightrun.errors import ConfigError
from evals.general import TASKS_DIR, score

TASK_DIR = TASKS_DIR / "brightrun_ifeval"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # two test workers share two cores (see test_generate.py)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, assets):
    return make_adapter(str(TINY_MODEL_DIR), tmp_path_factory.mktemp("tiny") / "adapter")


def task_utils():
    """The task's utils.py, loaded from its path the way lm-eval loads a task's `!function` module."""
    spec = importlib.util.spec_from_file_location("brightrun_ifeval_utils", TASK_DIR / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lm_eval_scores_base_and_adapter_on_the_offline_task(adapter):
    result = score(str(TINY_MODEL_DIR), adapter, limit=3, max_gen_toks=16)
    row = result["tasks"]["brightrun_ifeval"]
    assert row["metric"] == "prompt_level_strict_acc" and row["n"] == 3
    # 3 prompts: each model's score is 0, 1/3, 2/3 or 3/3 of them, in points.
    for name in ("base", "adapter"):
        assert any(math.isclose(row[name], 100 * k / 3, abs_tol=1e-3) for k in range(4)), row
        assert row[f"{name}_stderr"] is not None
    assert row["delta"] == pytest.approx(row["adapter"] - row["base"], abs=1e-3)
    assert row["delta_stderr"] == pytest.approx(
        math.hypot(row["base_stderr"], row["adapter_stderr"]), abs=1e-3
    )
    # lm-eval's per-item results kept (log_samples): each item's pair, and their difference's interval.
    items = row["per_item"]
    assert [i["doc_id"] for i in items] == [0, 1, 2]
    assert all(i[name] in (0.0, 100.0) for i in items for name in ("base", "adapter"))
    assert sum(i["adapter"] for i in items) / 3 == pytest.approx(row["adapter"], abs=1e-3)
    assert row["paired"]["n"] == 3 and row["paired"]["mean"] == pytest.approx(row["delta"], abs=1e-3)
    lo, hi = row["paired"]["ci95"]
    assert lo <= row["paired"]["mean"] <= hi
    assert result["backend"] == "hf" and result["limit"] == 3 and result["unit"] == "percentage points"
    assert result["wall_s"] >= result["models"]["base"]["wall_s"] > 0
    assert result["lm_eval_version"] == "0.4.11"
    print("lm-eval wall time", json.dumps(result["models"]), result["wall_s"])


def test_vllm_gets_a_lora_rank_it_accepts(tmp_path):
    from evals.general import vllm_args

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({"r": 12}))
    args = vllm_args("base", {"base": None, "adapter": tmp_path / "a"})
    assert args["max_lora_rank"] == 16  # vLLM takes 1, 8, 16, 32, ...: a rank 12 adapter needs 16
    # One engine for both sides of an A/B: LoRA slots of the larger rank.
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "adapter_config.json").write_text(json.dumps({"r": 40}))
    assert vllm_args("base", {"A": tmp_path / "a", "B": tmp_path / "b"})["max_lora_rank"] == 64


def test_offline_task_data_and_checkers_need_no_download():
    """25 rows, every instruction kind known to lm-eval's IFEval registry, none that needs nltk's punkt
    data; lm-eval's own process_results scores a crafted answer as IFEval would."""
    from lm_eval.tasks.ifeval.instructions_registry import INSTRUCTION_DICT

    utils = task_utils()
    docs = list(utils.load()["test"])
    assert len(docs) == 25 and len({d["key"] for d in docs}) == 25
    kinds = {i for d in docs for i in d["instruction_id_list"]}
    assert kinds <= set(INSTRUCTION_DICT)
    assert not kinds & {"length_constraints:number_sentences", "change_case:capital_word_frequency"}
    for doc in docs:  # every checker runs on this machine, which has no nltk data
        utils.process_results(doc, ["A short answer, in English.\n\nIs there anything else I can help with?"])
    no_comma = next(d for d in docs if d["key"] == 1001)
    assert utils.process_results(no_comma, ["Good morrow to thee"])["prompt_level_strict_acc"] is True
    assert utils.process_results(no_comma, ["Good morrow, to thee"])["prompt_level_strict_acc"] is False


def test_bad_choices_are_config_errors(adapter, tmp_path):
    with pytest.raises(ConfigError, match="lm-eval back-end 'tgi': expected one of hf, vllm"):
        score(str(TINY_MODEL_DIR), adapter, backend="tgi")
    with pytest.raises(ConfigError, match="no adapter_config.json"):
        score(str(TINY_MODEL_DIR), tmp_path)
    with pytest.raises(ConfigError, match="unknown lm-eval task"):
        score(str(TINY_MODEL_DIR), adapter, tasks=["brightrun_ifevl"])
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ConfigError, match="lm-eval's vllm back-end needs vLLM"):
            score(str(TINY_MODEL_DIR), adapter, backend="vllm")
