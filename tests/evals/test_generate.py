"""evals/generate.py: real greedy generation on CPU, base and a real PEFT adapter, with the tiny Llama and
the demo's SmolLM2. The vLLM back-end needs a GPU; here only its refusal without vLLM is tested."""

from __future__ import annotations

import importlib.util

import pytest
from conftest import SAMPLE, TINY_MODEL_DIR
from peft_adapter import make_adapter

from brightrun.errors import ConfigError
from converters.convert import convert
from evals.generate import answer, new_token_limit
from evals.prompts import load_heldout, select

SMOLLM = TINY_MODEL_DIR.parent / "smollm2-135m-instruct"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: the suite runs two workers on two cores, and two threads each made SmolLM2's
    16 tokens take 15 s instead of 3 (threads spinning for a core another process holds)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def prompts_all(tmp_path_factory):
    data = tmp_path_factory.mktemp("sample") / "data"
    convert(SAMPLE, data)
    return select(load_heldout(data)[0], n=100)


@pytest.fixture(scope="module")
def prompts(prompts_all):
    return prompts_all[:4]


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory, assets):
    return make_adapter(str(TINY_MODEL_DIR), tmp_path_factory.mktemp("tiny") / "adapter")


def test_tiny_llama_answers_base_and_adapter(prompts, tiny_adapter):
    rows, info = answer(prompts[:3], str(TINY_MODEL_DIR), tiny_adapter, max_new_tokens=10, batch_size=2)
    assert [(r["id"], r["model"]) for r in rows] == [
        (p["id"], m) for m in ("base", "adapter") for p in prompts[:3]
    ]
    assert all(set(r) == {"id", "model", "text", "new_tokens", "finish_reason"} for r in rows)
    assert all(1 <= r["new_tokens"] <= 10 and r["finish_reason"] in ("stop", "length") for r in rows)
    base = [r["text"] for r in rows if r["model"] == "base"]
    adapter = [r["text"] for r in rows if r["model"] == "adapter"]
    assert all(a and a != b for a, b in zip(adapter, base, strict=True)), (
        "the adapter left an answer unchanged"
    )
    assert info["max_new_tokens"] == 10 and info["max_new_tokens_rule"] == "given: 10"
    assert info["backend"] == "transformers" and info["decoding"]["greedy"] is True
    assert 128009 in info["decoding"]["stop_token_ids"]  # <|eot_id|>
    for name in ("base", "adapter"):
        speed = info["models"][name]
        assert speed["tokens"] == sum(r["new_tokens"] for r in rows if r["model"] == name)
        assert speed["tokens_per_s"] > 0
        sides = [r for r in rows if r["model"] == name]
        assert speed["truncated"] == sum(r["finish_reason"] == "length" for r in sides)  # cut by the cap
        assert speed["mean_new_tokens"] == round(speed["tokens"] / 3, 1)


def test_batches_match_one_by_one_and_base_is_the_plain_model(prompts, tiny_adapter):
    """Left padding must not change an answer, and disable_adapter() must give the plain base model's."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    batched, _ = answer(prompts, str(TINY_MODEL_DIR), tiny_adapter, max_new_tokens=8, batch_size=4)
    single, _ = answer(prompts, str(TINY_MODEL_DIR), tiny_adapter, max_new_tokens=8, batch_size=1)
    assert len({len(p["messages"]) for p in prompts}) > 1  # prompts of different lengths share a batch
    assert batched == single
    tok = AutoTokenizer.from_pretrained(TINY_MODEL_DIR)
    model = AutoModelForCausalLM.from_pretrained(TINY_MODEL_DIR)
    text = tok.apply_chat_template(prompts[0]["messages"], tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    out = model.generate(
        input_ids=ids, max_new_tokens=8, do_sample=False, eos_token_id=128009, pad_token_id=128001
    )
    plain = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
    assert batched[0] == {**batched[0], "id": prompts[0]["id"], "model": "base", "text": plain}


def test_default_limit_is_the_cap_stated_with_the_references_length():
    """Full length by default (issue 27): the model's own end of turn, the cap only a bound."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TINY_MODEL_DIR)
    refs = ["one two three four", "one two three four five six seven eight nine ten"]
    n = len(tok(refs[1], add_special_tokens=False)["input_ids"])
    limit, rule = new_token_limit(tok, refs, None, cap=1024)
    assert limit == 1024
    assert rule == (
        "to the model's own end of turn, at most 1024 new tokens (a bound on runaways; the longest "
        f"reference is {n} tokens, base tokenizer)"
    )
    assert new_token_limit(tok, refs, 7, cap=3) == (7, "given: 7")


def test_bad_choices_are_config_errors(prompts, tiny_adapter, tmp_path):
    with pytest.raises(ConfigError, match="generation back-end 'tgi': expected one of transformers, vllm"):
        answer(prompts, str(TINY_MODEL_DIR), tiny_adapter, backend="tgi")
    with pytest.raises(ConfigError, match="no adapter_config.json"):
        answer(prompts, str(TINY_MODEL_DIR), tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_without_vllm_says_so(prompts, tiny_adapter):
    with pytest.raises(
        ConfigError, match=r"the vllm generation back-end needs vLLM, which is not installed here"
    ):
        answer(prompts, str(TINY_MODEL_DIR), tiny_adapter, backend="vllm")


def test_demo_model_answers_two_prompts(prompts_all, tmp_path):
    if not (SMOLLM / "model.safetensors").exists():
        pytest.skip("assets/smollm2-135m-instruct is built by setup.sh")
    adapter = make_adapter(str(SMOLLM), tmp_path / "adapter")
    # The two shortest contexts (turns 1 and 2): a 135M model reads a 16-message history for seconds on CPU.
    short = sorted(prompts_all, key=lambda p: len(p["messages"]))[:2]
    rows, info = answer(short, str(SMOLLM), adapter, max_new_tokens=16)
    assert len(rows) == 4 and all(r["text"] for r in rows)
    assert 2 in info["decoding"]["stop_token_ids"]  # <|im_end|>
    print("smollm2 tokens/s", info["models"])
