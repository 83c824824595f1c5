"""Token counts with a real tokenizer and its chat template: what a line costs Axolotl.

Axolotl's chat_template strategy renders each line with the tokenizer's chat template and tokenizes
the result, so we do the same: render to text, then tokenize in one batch (the fast tokenizer's batch
call is parallel; one call per line would dominate the converter's run time).

Axolotl loads the tokenizer with transformers' AutoTokenizer, whose import alone takes ~5 s (torch,
sklearn, the generation utilities): longer than the whole conversion. For the folders AutoTokenizer
turns into a plain `TokenizersBackend` around tokenizer.json (ours: assets/llama3-tokenizer,
assets/smollm2-135m-instruct, and Meta's own Llama 3 folders) we use the same Rust tokenizer through the
`tokenizers` library and render the template with converters/chat_template.py, reading the folder the
way transformers 5.16 does (`PreTrainedTokenizerBase.from_pretrained` / `_from_pretrained` in
tokenization_utils_base.py, `TokenizersBackend.__init__` in tokenization_utils_tokenizers.py). Any folder
where transformers would build or change the tokenizer itself (a model-specific tokenizer class, tokens
added from the config, legacy files) loads through AutoTokenizer as before: slower, never different.
tests/converters/test_tokenizer_parity.py holds the two paths to the same texts and counts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

# PreTrainedTokenizerBase.SPECIAL_TOKENS_ATTRIBUTES: what `special_tokens_map` holds, and so what
# apply_chat_template passes to the template (bos_token, eos_token, ...).
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# tokenizer_config.json "tokenizer_class" values AutoTokenizer serves with TokenizersBackend itself
# (PreTrainedTokenizerFast is its v5 alias), for a model_type below or for a folder with no config.json.
# Other model types may have their registered tokenizer class forced over the config's
# (tokenization_auto.MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS): those take the transformers path.
PLAIN_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")
PLAIN_MODEL_TYPES = ("", "llama")
# AddedToken's fields: a config entry that differs from tokenizer.json's is re-added by transformers.
ADDED_TOKEN_FIELDS = ("content", "single_word", "lstrip", "rstrip", "normalized", "special")


class TokenizerError(Exception):
    pass


@dataclass
class FastTokenizer:
    """What counting needs of transformers' TokenizersBackend: the Rust tokenizer and the chat template."""

    backend: object  # tokenizers.Tokenizer
    chat_template: str
    special_tokens_map: dict[str, str]
    template: object = field(repr=False)  # the compiled jinja2 template
    # The class AutoTokenizer would have returned, for the manifest's lineage (describe).
    transformers_class: str = "TokenizersBackend"
    _splitter: object = field(default=None, repr=False)  # see segment_splitter
    _known: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self._splitter = segment_splitter(self.backend)

    def __len__(self) -> int:
        # TokenizersBackend.__len__: the vocabulary with the added tokens.
        return self.backend.get_vocab_size(with_added_tokens=True)

    def render(self, conversations: list[list[dict]]) -> list[str]:
        from converters import chat_template

        return [chat_template.render(self.template, msgs, self.special_tokens_map) for msgs in conversations]

    def _encode(self, texts: list[str]) -> list[int]:
        # transformers' batch call is `encode_batch(texts, add_special_tokens=False)`; the _fast variant
        # returns the same ids without computing character offsets, which counting never reads.
        return [len(e.ids) for e in self.backend.encode_batch_fast(texts, add_special_tokens=False)]

    def lengths(self, texts: list[str]) -> list[int]:
        """Token counts of rendered texts, as transformers' batch call counts them.

        The one-line-per-pair lines we measure against repeat each message once per later pair (5.3 M
        characters for the 242-conversation bench file, 0.9 M of them distinct): tokenized whole, they
        took ~1 s of a 2 s budget. The tokenizer cuts a text at its added tokens first and encodes each
        piece between them on its own (tokenizers' AddedVocabulary::extract_and_normalize), so a text's
        count is its added tokens plus its pieces' counts, and each distinct piece is encoded once.
        """
        if self._splitter is None:
            return self._encode(texts)
        split = [self._splitter.split(t) for t in texts]
        new = list({p for pieces in split for p in pieces if p not in self._known})
        self._known.update(zip(new, self._encode(new), strict=True))
        return [len(pieces) - 1 + sum(self._known[p] for p in pieces) for pieces in split]


def segment_splitter(backend):
    """A regex cutting text at added tokens exactly where tokenizers does, or None where that is not sure.

    tokenizers matches non-normalized added tokens on the raw text, leftmost-longest (aho-corasick
    MatchKind::LeftmostLongest): an alternation ordered longest first does the same. Only for what we
    can mirror exactly: plain added tokens (no lstrip/rstrip/single_word, not normalized), special tokens
    not split, no normalizer, and pre-tokenizers that treat each piece alone (Split, ByteLevel; not
    Metaspace, whose prepend_scheme "first" depends on where a piece starts).
    """
    import re

    def state(part) -> dict:  # a component's JSON, without serializing the whole vocabulary
        return json.loads(part.__getstate__()) if part is not None else {}

    pre = state(backend.pre_tokenizer)
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre] if pre else []
    norm = state(backend.normalizer)
    added = list(backend.get_added_tokens_decoder().values())
    if (
        backend.encode_special_tokens
        or not added
        or any(a.lstrip or a.rstrip or a.single_word or a.normalized for a in added)
        or norm not in ({}, {"type": "Sequence", "normalizers": []})
        or any(s.get("type") not in ("Split", "ByteLevel") for s in steps)
    ):
        return None
    contents = sorted({a.content for a in added}, key=len, reverse=True)
    return re.compile("|".join(re.escape(c) for c in contents))


def _token_str(value) -> str | None:
    """A special token as tokenizer_config.json stores it: a string or a serialized AddedToken."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _not_plain(folder: Path, cfg: dict, added: list[dict]) -> str | None:
    """Why transformers would not serve this folder as tokenizer.json stands, if it would not."""
    if cfg.get("tokenizer_class") not in PLAIN_CLASSES:
        return f"tokenizer_class {cfg.get('tokenizer_class')!r}"
    for key in ("auto_map", "fast_tokenizer_files", "fix_mistral_regex"):
        if key in cfg:
            return f"tokenizer_config.json sets {key}"
    if (folder / "added_tokens.json").exists() or (folder / "additional_chat_templates").is_dir():
        return "added_tokens.json or additional_chat_templates/"
    if (folder / "special_tokens_map.json").exists() and "added_tokens_decoder" not in cfg:
        return "special tokens from the legacy special_tokens_map.json"
    if (folder / "config.json").is_file():
        model_type = _read_json(folder / "config.json").get("model_type") or ""
        if model_type not in PLAIN_MODEL_TYPES:
            return f"model_type {model_type!r}"
    # v5 model-specific named tokens (image_token, ...) become template variables and maybe added tokens.
    named_extra = [k for k, v in cfg.items() if k.endswith("_token") and isinstance(v, (str, dict))]
    if set(named_extra) - set(SPECIAL_TOKENS):
        return "model-specific special tokens"
    by_id = {a["id"]: a for a in added}
    for idx, entry in (cfg.get("added_tokens_decoder") or {}).items():
        have = by_id.get(int(idx))
        if have is None or any(entry.get(f) != have.get(f) for f in ADDED_TOKEN_FIELDS):
            return f"added token {idx} differs from tokenizer.json"
    contents = {a["content"] for a in added}
    extra = cfg.get("extra_special_tokens", cfg.get("additional_special_tokens")) or []
    if not isinstance(extra, list):
        return "extra_special_tokens as a mapping"
    named = [_token_str(cfg.get(k)) for k in SPECIAL_TOKENS] + [_token_str(t) for t in extra]
    missing = [t for t in named if t is not None and t not in contents]
    if missing:
        return f"special tokens {missing} are not added tokens in tokenizer.json"
    return None


def _load_fast(folder: Path) -> FastTokenizer | None:
    """The tokenizer without transformers, or None where transformers' loading has to decide."""
    tokenizer_json, config_json = folder / "tokenizer.json", folder / "tokenizer_config.json"
    if not tokenizer_json.is_file() or not config_json.is_file():
        return None
    cfg = _read_json(config_json)
    # chat_template.jinja takes priority over the config's entry (_from_pretrained); read in text mode,
    # newlines translated, as transformers' open() does.
    jinja_file = folder / "chat_template.jinja"
    template = jinja_file.read_text(encoding="utf-8") if jinja_file.is_file() else cfg.get("chat_template")
    if not isinstance(template, str):  # none (load_tokenizer's error says so) or several named ones
        return None
    from tokenizers import Tokenizer

    try:
        backend = Tokenizer.from_file(str(tokenizer_json))
    except Exception as exc:  # the Rust side raises a bare Exception on a malformed file
        raise ValueError(str(exc)) from None
    added = [
        {"id": i, **{f: getattr(t, f) for f in ADDED_TOKEN_FIELDS}}
        for i, t in backend.get_added_tokens_decoder().items()
    ]
    if _not_plain(folder, cfg, added) is not None:
        return None
    # A tokenizer.json that pads or truncates: TokenizersBackend.__init__ takes its padding's pad_token as
    # the pad_token (and adds it as a special token when it is not one yet): transformers decides. So the
    # backend here neither pads nor truncates, as transformers' plain call does not.
    if backend.padding is not None or backend.truncation is not None:
        return None
    # Special tokens written in the text are split only when configured.
    backend.encode_special_tokens = bool(cfg.get("split_special_tokens", False))
    from converters import chat_template

    special = {k: s for k in SPECIAL_TOKENS if (s := _token_str(cfg.get(k))) is not None}
    return FastTokenizer(backend, template, special, chat_template.compile_template(template))


def load_tokenizer(path: Path | str):
    path = Path(path)
    if not path.exists():
        raise TokenizerError(
            f"{path}: tokenizer not found (a folder with tokenizer.json and "
            f"tokenizer_config.json; `just assets` builds assets/llama3-tokenizer)"
        )
    try:
        tok = _load_fast(path) if path.is_dir() else None
    except (OSError, ValueError) as exc:
        raise TokenizerError(f"{path}: cannot load a tokenizer: {exc}") from None
    if tok is None:
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError) as exc:
            raise TokenizerError(f"{path}: cannot load a tokenizer: {exc}") from None
    if not tok.chat_template:
        raise TokenizerError(
            f"{path}: the tokenizer has no chat_template; token counts would not match what Axolotl trains"
        )
    return tok


def count(tok, conversations: list[list[tuple[str, str]]]) -> list[int]:
    """Tokens of each conversation (list of (role, content)) as rendered by the chat template."""
    if not conversations:
        return []
    messages = [[{"role": r, "content": c} for r, c in conv] for conv in conversations]
    if isinstance(tok, FastTokenizer):
        return tok.lengths(tok.render(messages))
    texts = tok.apply_chat_template(messages, tokenize=False)
    return [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]


def describe(path: Path | str | None, tok) -> dict:
    """What the counts were made with, for lineage: the tokenizer file and the chat template."""
    tokenizer_json = Path(path or "") / "tokenizer.json"
    return {
        "path": str(path) if path else None,
        "class": getattr(tok, "transformers_class", None) or type(tok).__name__,
        "vocab_size": len(tok),
        "tokenizer_json_sha256": hashlib.sha256(tokenizer_json.read_bytes()).hexdigest()
        if tokenizer_json.is_file()
        else None,
        "chat_template_sha256": hashlib.sha256(tok.chat_template.encode("utf-8")).hexdigest(),
    }
