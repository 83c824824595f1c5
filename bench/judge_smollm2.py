"""How often a small local judge answers in parseable, valid JSON, and how long its calls take.

Usage: python bench/judge_smollm2.py [--model assets/smollm2-135m-instruct] [--prompts 4] [--max-tokens 160]
       [--parse-retries 1] [--concurrency 1] [--url URL] [--show]

Starts `transformers serve MODEL` on a free loopback port (or uses --url, an OpenAI-compatible /v1 already
serving MODEL), judges the demo file's first N pairs (base = a plain generic reply, adapter = the pair's own
reference turn) through evals.judge.judge_all, and prints: valid answers on the first try and after the
retries, per kind (pointwise, pairwise); calls, tokens and wall seconds (median per call). So small a judge
checks the mechanism, not the quality: the figures say how many of its judgements the demo will show.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from brightrun import offline  # noqa: E402
from evals.judge import JudgeSettings, judge_all  # noqa: E402
from tests.judge_standin import profile_of, sample_prompts  # noqa: E402

DEMO = ROOT / "data" / "demo" / "brightrun-demo-cpu.json"
GENERIC = "You should make a budget and save a little every month. Start by tracking your expenses."


def serve(model: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    binary = Path(sys.executable).parent / "transformers"
    proc = subprocess.Popen(
        [str(binary), "serve", str(model), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
        env={**os.environ, **offline.ALL, "TRANSFORMERS_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc, f"http://127.0.0.1:{port}/v1"
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    sys.exit("transformers serve did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "assets" / "smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--parse-retries", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--url")
    parser.add_argument("--show", action="store_true", help="print every attempt's status and raw answer")
    args = parser.parse_args()
    model = args.model.resolve()

    proc, url = (None, args.url) if args.url else serve(model)
    try:
        prompts = sample_prompts(DEMO, args.prompts)
        answers = [
            {"id": p["id"], "model": m, "text": text}
            for p in prompts
            for m, text in (("base", GENERIC), ("adapter", p["reference"]))
        ]
        settings = JudgeSettings(url, str(model), concurrency=args.concurrency, timeout_s=600)
        settings.max_tokens, settings.parse_retries = args.max_tokens, args.parse_retries
        rows, summary = judge_all(prompts, answers, profile_of(DEMO), settings)
    finally:
        if proc:
            proc.terminate()
            proc.wait(30)

    if args.show:
        for row in rows:
            for attempt in row["attempts"]:
                raw = (attempt.get("raw") or attempt.get("error") or "")[:300]
                who = row.get("model") or row["order"]
                print(row["kind"], who, attempt["status"], attempt.get("why"), repr(raw))
    for kind in ("pointwise", "pairwise"):
        mine = [r for r in rows if r["kind"] == kind]
        first = sum(r["attempts"][0]["status"] == "ok" for r in mine)
        final = sum(r["status"] == "ok" for r in mine)
        print(f"{kind}: valid on the first try {first}/{len(mine)}, after retries {final}/{len(mine)}")
    seconds = [a["seconds"] for r in rows for a in r["attempts"]]
    print(
        f"calls {summary['calls']}, median {statistics.median(seconds):.1f} s per call,"
        f" wall {summary['wall_s']:.0f} s, tokens {summary['prompt_tokens']} in,"
        f" {summary['completion_tokens']} out"
    )
    print(json.dumps({"criteria": summary["criteria"], "pairwise": summary["pairwise"]}, indent=1))


if __name__ == "__main__":
    main()
