"""The dataset report a person reads after a conversion: one screen, built from the manifest only."""

from __future__ import annotations

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

COUNT_LABELS = {
    "conversations": "conversations",
    "pairs": "training pairs",
    "trained_targets": "trained targets",
    "null_or_blank_targets": "null / blank targets (train nothing)",
    "filtered_by_quality": "targets below --min-quality (context only)",
    "lines": "lines written",
    "own_context_lines": "lines that keep their own context (edited)",
    "conversations_without_targets": "conversations with nothing to train",
}


def counts_table(manifest: dict) -> Table:
    t = Table(title="Counts", title_justify="left")
    t.add_column("")
    for col in ("train", "val", "total"):
        t.add_column(col, justify="right")
    per = manifest["counts"]["per_split"]
    for key, label in COUNT_LABELS.items():
        t.add_row(label, str(per["train"][key]), str(per["val"][key]), str(manifest["counts"][key]))
    return t


def tokens_table(tokens: dict) -> Table:
    t = Table(title=f"Tokens ({tokens['tokenizer']['class']}, chat template applied)", title_justify="left")
    for col in ("", "train", "val", "total"):
        t.add_column(col, justify="right" if col else "left")
    per = tokens["per_split"]
    t.add_row(
        "tokens per epoch, merged lines",
        f"{per['train']['tokens']:,}",
        f"{per['val']['tokens']:,}",
        f"{tokens['tokens']:,}",
    )
    t.add_row(
        "one line per pair (naive)",
        f"{per['train']['naive_tokens']:,}",
        f"{per['val']['naive_tokens']:,}",
        f"{tokens['naive_tokens']:,}",
    )
    t.add_row("ratio merged / naive", _ratio(per["train"]), _ratio(per["val"]), _ratio(tokens))
    return t


def _ratio(d: dict) -> str:
    return "-" if d["ratio_to_naive"] is None else f"{d['ratio_to_naive']:.3f}x"


def histogram(lengths: list[int], bins: int = 8, width: int = 40) -> str:
    if not lengths:
        return "(no lines)"
    low, top = min(lengths), max(lengths)
    step = max(1, -(-(top - low + 1) // bins))
    counts = [0] * bins
    for n in lengths:
        counts[(n - low) // step] += 1
    peak = max(counts)
    rows = []
    for i, c in enumerate(counts):
        bar = "█" * round(width * c / peak)
        rows.append(f"{low + i * step:>6}-{low + (i + 1) * step - 1:<6} {bar} {c}")
    return "\n".join(rows)


def distribution_table(manifest: dict) -> Table:
    t = Table(title="Conversations by scaffolding (train / val)", title_justify="left")
    t.add_column("persona")
    t.add_column("n", justify="right")
    t.add_column("emotional arc")
    t.add_column("n", justify="right")
    t.add_column("topic")
    t.add_column("n", justify="right")
    cols = [list(manifest["distribution"][k].items()) for k in ("persona", "arc", "topic")]
    for i in range(max(len(c) for c in cols)):
        row = []
        for col in cols:
            if i < len(col):
                name, split = col[i]
                row += [name, f"{split['train']}/{split['val']}"]
            else:
                row += ["", ""]
        t.add_row(*row)
    return t


def render(manifest: dict, out_dir: str, console: Console | None = None) -> None:
    # Wide enough that arc and topic names are not cut; a narrower terminal wraps instead.
    console = console or Console(width=max(120, Console().width))
    inp = manifest["input"]
    console.print(
        f"[bold]Converted[/] {inp['path']} ({inp['bytes']:,} bytes, sha256 {inp['sha256'][:12]}…) "
        f"→ {out_dir}/"
    )
    parts = [counts_table(manifest)]
    rep = manifest["repairs"]
    if rep["total"]:
        fields = ", ".join(f"{k} {v}" for k, v in rep["by_field"].items())
        parts.append(
            f"Repairs: {rep['total']} ({fields}); {rep['distinct_strings']} distinct strings "
            f"re-decoded from mojibake"
        )
        parts += [f"  e.g. {ex['before']!r} → {ex['after']!r}" for ex in rep.get("examples", [])]
    else:
        parts.append("Repairs: none needed")
    for part in parts:
        console.print(part)
    if manifest["metadata_mismatches"]:
        console.print(
            Panel(
                "\n".join(manifest["metadata_mismatches"]),
                title="warning: metadata totals disagree with the content",
                border_style="yellow",
            )
        )
    console.print(distribution_table(manifest))
    tokens = manifest.get("tokens")
    if tokens:
        console.print(tokens_table(tokens))
        lengths = tokens["per_split"]["train"]["line_lengths"] + tokens["per_split"]["val"]["line_lengths"]
        longest = tokens.get("longest_line", {})
        console.print(
            Panel(
                histogram(lengths),
                title=f"tokens per line (longest {longest.get('tokens')} in "
                f"{longest.get('conversation_id')})",
                expand=False,
            )
        )
        over = tokens.get("lines_over_sequence_len")
        if over:
            console.print(
                Panel(
                    f"{over} line(s) are longer than sequence_len {tokens['sequence_len']}: "
                    f"Axolotl DROPS such lines, and every target on them would be lost.\n"
                    f"{', '.join(tokens['lines_over_sequence_len_ids'][:10])}\n"
                    f"Raise sequence_len to at least {longest.get('tokens')}.",
                    title="WARNING: lines would be dropped",
                    border_style="bold red",
                )
            )
    else:
        console.print("Tokens: not counted (pass --tokenizer assets/llama3-tokenizer to count them)")
