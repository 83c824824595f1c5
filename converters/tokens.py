"""Token counts with a real tokenizer and its chat template: what a line costs Axolotl.

Axolotl's chat_template strategy renders each line with the tokenizer's chat template and tokenizes
the result, so we do the same: render to text, then tokenize all lines in one batch (the fast
tokenizer's batch call is parallel; one call per line would dominate the converter's run time).
transformers is imported here only, so `convert` without --tokenizer stays fast.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


class TokenizerError(Exception):
    pass


def load_tokenizer(path: Path | str):
    path = Path(path)
    if not path.exists():
        raise TokenizerError(
            f"{path}: tokenizer not found (a folder with tokenizer.json and "
            f"tokenizer_config.json; `just assets` builds assets/llama3-tokenizer)"
        )
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
    texts = tok.apply_chat_template(
        [[{"role": r, "content": c} for r, c in conv] for conv in conversations], tokenize=False
    )
    return [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]


def describe(path: Path | str | None, tok) -> dict:
    """What the counts were made with, for lineage: the tokenizer file and the chat template."""
    tokenizer_json = Path(path or "") / "tokenizer.json"
    return {
        "path": str(path) if path else None,
        "class": type(tok).__name__,
        "vocab_size": len(tok),
        "tokenizer_json_sha256": hashlib.sha256(tokenizer_json.read_bytes()).hexdigest()
        if tokenizer_json.is_file()
        else None,
        "chat_template_sha256": hashlib.sha256(tok.chat_template.encode("utf-8")).hexdigest(),
    }
