"""brightrun-lora-v4 -> Axolotl chat_template JSONL (see converters/convert.py)."""

__version__ = "0.1.0"
