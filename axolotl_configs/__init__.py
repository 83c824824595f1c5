"""Axolotl configs: presets × model profiles × hardware rendered from Jinja templates, validated."""
