"""The converter counts tokens without transformers (converters/tokens.py, converters/chat_template.py);
its rendered text and its counts must be AutoTokenizer's, the path Axolotl trains with, line for line.

Each demo and fixture file is converted with both tokenizers the project uses (Llama 3's template and
SmolLM2's ChatML); every batch the converter counts (merged lines and the one-line-per-pair lines it
measures against, train and val) is rendered and tokenized again by transformers' apply_chat_template
and batch call. Hand-made and seeded random lines add what the demo data lacks: special tokens written
in the text, partial ones, odd whitespace, other scripts.
"""

from __future__ import annotations

import json
import random
import shutil

import pytest
from conftest import ROOT, SAMPLE, TOKENIZER_DIR

from converters import convert, tokens

SMOLLM2_DIR = ROOT / "assets" / "smollm2-135m-instruct"
FILES = [*sorted((ROOT / "data" / "demo").glob("*.json")), SAMPLE]


@pytest.fixture(scope="module", params=[TOKENIZER_DIR, SMOLLM2_DIR], ids=["llama3", "smollm2"])
def pair(request, assets):
    """(ours, transformers') for one tokenizer folder."""
    from transformers import AutoTokenizer

    ours = tokens.load_tokenizer(request.param)
    assert isinstance(ours, tokens.FastTokenizer), "the folder fell back to transformers"
    assert ours._splitter is not None, "counting whole texts, not the pieces between added tokens"
    return ours, AutoTokenizer.from_pretrained(str(request.param))


def as_messages(conversations):
    return [[{"role": r, "content": c} for r, c in conv] for conv in conversations]


def assert_same(ours, theirs, conversations) -> int:
    """Rendered texts and per-line counts equal transformers'; returns the number of lines compared."""
    texts = theirs.apply_chat_template(as_messages(conversations), tokenize=False)
    expected = [len(ids) for ids in theirs(texts, add_special_tokens=False)["input_ids"]]
    rendered = ours.render(as_messages(conversations))
    for i, (a, b) in enumerate(zip(rendered, texts, strict=True)):
        assert a == b, f"line {i}: rendered text differs"
    got = tokens.count(ours, conversations)
    diff = [(i, g, e) for i, (g, e) in enumerate(zip(got, expected, strict=True)) if g != e]
    assert not diff, f"(line, ours, transformers') differ: {diff[:5]}"
    return len(conversations)


@pytest.mark.parametrize("src", FILES, ids=lambda p: p.name)
def test_every_counted_line_matches_transformers(pair, src, tmp_path, monkeypatch):
    ours, theirs = pair
    batches = []
    real = tokens.count
    monkeypatch.setattr(tokens, "count", lambda tok, convs: batches.append(convs) or real(tok, convs))
    manifest = convert.convert(src, tmp_path / "out", convert.Options(), tokenizer=ours)
    monkeypatch.undo()
    assert len(batches) == 4  # merged and one-line-per-pair, train and val
    compared = sum(assert_same(ours, theirs, b) for b in batches if b)
    assert compared >= manifest["counts"]["lines"] > 0
    assert tokens.describe(None, ours) == tokens.describe(None, theirs)


def odd_conversations(ours) -> list[list[tuple[str, str]]]:
    added = [t.content for t in ours.backend.get_added_tokens_decoder().values()]
    named = list(ours.special_tokens_map.values())
    specials = sorted(set(named + added[:4] + added[-2:]))
    pieces = [
        *specials,
        *(s[:-1] for s in specials),
        *(s[1:] for s in specials),
        "<|",
        "|>",
        "<",
        " ",
        "  ",
        "\n",
        "\n\n",
        "\r\n",
        "\t",
        "\u00a0",
        "\u200b",
        "naïve café",
        "日本語",
        "🙂",
        "don't",
        "I'LL",
        "1234567",
        "3.14",
        "Hello",
        " world",
        "assistant",
    ]
    tok = named[-1]
    hand = [
        [("user", tok), ("assistant", "")],
        [("system", "  padded  \n"), ("user", f"a{tok}b{tok}{tok}c"), ("assistant", f" {tok} ")],
        [("user", f"\n\n{tok}\n\n"), ("assistant", f"{tok[:-1]}{tok}{tok[1:]}")],
        [("user", "line one\r\nline two\r\n\r\n"), ("assistant", "\t tabs \t and\u00a0nbsp\u200b")],
        [("user", "“quotes” — dashes… 日本語 🙂🙂"), ("assistant", "don't I'LL we've 1234567890")],
        [("user", "".join(specials)), ("assistant", " ".join(specials))],
    ]
    rng = random.Random(0)
    fuzz = []
    for _ in range(300):
        roles = ["system"] * rng.randint(0, 1) + ["user", "assistant"] * rng.randint(1, 2)
        fuzz.append([(r, "".join(rng.choices(pieces, k=rng.randint(0, 10)))) for r in roles])
    return hand + fuzz


def test_special_tokens_in_text_whitespace_and_scripts(pair):
    ours, theirs = pair
    conversations = odd_conversations(ours)
    assert assert_same(ours, theirs, conversations) == len(conversations) > 300


def folder_like(tmp_path, base, config=None, **changes):
    """A tokenizer folder sharing base's tokenizer.json, with its tokenizer_config.json changed."""
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "tokenizer.json").symlink_to(base / "tokenizer.json")
    for name in ("chat_template.jinja",):
        if (base / name).exists():
            (folder / name).symlink_to(base / name)
    cfg = json.loads((base / "tokenizer_config.json").read_text()) | changes
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_split_special_tokens_matches_transformers(tmp_path, assets):
    """A config that splits special tokens written in the text: no piece cache, still transformers' counts."""
    from transformers import AutoTokenizer

    folder = folder_like(tmp_path, TOKENIZER_DIR, split_special_tokens=True)
    ours = tokens.load_tokenizer(folder)
    assert isinstance(ours, tokens.FastTokenizer) and ours._splitter is None
    assert_same(ours, AutoTokenizer.from_pretrained(str(folder)), odd_conversations(ours))


def test_meta_llama_folder_layout_is_served_without_transformers(tmp_path, assets):
    """Meta's Llama 3 folders carry a config.json with model_type llama: AutoTokenizer still gives
    TokenizersBackend around tokenizer.json, so the manifest's lineage is the same either way."""
    from transformers import AutoTokenizer

    folder = folder_like(tmp_path, TOKENIZER_DIR, config={"model_type": "llama"})
    ours, theirs = tokens.load_tokenizer(folder), AutoTokenizer.from_pretrained(str(folder))
    assert isinstance(ours, tokens.FastTokenizer)
    assert tokens.describe(folder, ours) == tokens.describe(folder, theirs)
    assert tokens.describe(folder, ours)["class"] == "TokenizersBackend"


@pytest.mark.parametrize(
    "changes, config",
    [
        ({"tokenizer_class": "LlamaTokenizerFast"}, None),
        ({"auto_map": {"AutoTokenizer": ["x.Tok", None]}}, None),
        ({"bos_token": "<s>"}, None),  # not an added token: transformers would add it
        ({"image_token": "<|reserved_special_token_0|>"}, None),  # a v5 model-specific named token
        ({"added_tokens_decoder": {"128000": {"content": "<|begin_of_text|>", "lstrip": True}}}, None),
        ({}, {"model_type": "llava"}),  # transformers forces its registered class for some model types
    ],
    ids=[
        "class",
        "auto_map",
        "new-special-token",
        "model-specific-token",
        "added-token-changed",
        "model-type",
    ],
)
def test_folders_transformers_would_change_take_the_transformers_path(tmp_path, changes, config):
    folder = folder_like(tmp_path, TOKENIZER_DIR, config=config, **changes)
    assert tokens._load_fast(folder) is None


def test_the_transformers_path_still_counts(tmp_path, assets):
    folder = folder_like(tmp_path, TOKENIZER_DIR, image_token="<|reserved_special_token_0|>")
    tok = tokens.load_tokenizer(folder)
    assert not isinstance(tok, tokens.FastTokenizer)
    ours = tokens.load_tokenizer(TOKENIZER_DIR)
    conversations = odd_conversations(ours)[:20]
    assert tokens.count(tok, conversations) == tokens.count(ours, conversations)


@pytest.mark.parametrize("setting", ["padding", "truncation"])
def test_a_tokenizer_json_that_pads_or_truncates_takes_the_transformers_path(tmp_path, assets, setting):
    """transformers takes a padding's pad_token as the pad_token (adding it as a special token when it is
    not one): a folder whose tokenizer.json pads, or truncates, is left to transformers to load."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json"))
    if setting == "padding":
        backend.enable_padding(pad_token="<pad>")
    else:
        backend.enable_truncation(max_length=512)
    folder = tmp_path / "tok"
    folder.mkdir()
    backend.save(str(folder / "tokenizer.json"))
    shutil.copyfile(TOKENIZER_DIR / "tokenizer_config.json", folder / "tokenizer_config.json")
    assert tokens._load_fast(folder) is None
