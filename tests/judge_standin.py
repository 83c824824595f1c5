"""A loopback stand-in judge: a real HTTP server speaking OpenAI's /v1/chat/completions, for only what a real
server will not do on demand (malformed JSON, 429 with Retry-After, 500s, a timeout, a refusal, a judge that
always prefers the first answer, a 400 to response_format, a 401) and for known scores in the aggregation tests.
The real path is tested against `transformers serve` (tests/evals/test_judge_real.py).

A behaviour is chosen per test (`StandIn(mode=...)`) or per prompt by a marker in it, `[[mode=NAME]]`,
which wins. `[[score=N]]` in a graded reply sets the scores it gets; a pairwise answer prefers the reply
with the higher marker (so that preference does not depend on position). `fail_times` bounds how often
a prompt fails in the transient modes (rate_limit, server_error, slow) before it is answered.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODE = re.compile(r"\[\[mode=(\w+)\]\]")
SCORE = re.compile(r"\[\[score=(\d)\]\]")


def _scores(text: str) -> dict:
    marks = [int(m) for m in SCORE.findall(text)] or [3]
    return {
        c: {"score": marks[0], "reason": "stand-in"}
        for c in ("on_brand", "emotional_intelligence", "helpful")
    }


def _pairwise(text: str, mode: str) -> dict:
    if mode == "first":
        return {"winner": "A", "reason": "the first reply, always"}
    marks = [int(m) for m in SCORE.findall(text)] + [3, 3]
    a, b = marks[0], marks[1]
    return {"winner": "A" if a > b else "B" if b > a else "tie", "reason": "stand-in"}


def _completion(content: str | None, prompt: str, refusal: str | None = None) -> dict:
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "stand-in",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal},
                "finish_reason": "stop",
            }
        ],
        # Words, not tokens: the tests only need known, non-zero counts.
        "usage": {
            "prompt_tokens": len(prompt.split()),
            "completion_tokens": len((content or refusal or "").split()),
            "total_tokens": len(prompt.split()) + len((content or refusal or "").split()),
        },
    }


class StandIn:
    def __init__(
        self, mode: str = "scores", fail_times: int = 1, delay: float = 2.0, retry_after: str = "0.2"
    ):
        self.mode, self.fail_times, self.delay, self.retry_after = mode, fail_times, delay, retry_after
        self.requests: list[dict] = []  # {"headers", "body", "status"} of every request, in arrival order
        self.seen: dict[str, int] = {}
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        # a short poll: shutdown() waits up to one interval, and every test stops a stand-in
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> StandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, body: dict) -> tuple[int, dict, dict]:
        """(status, headers, JSON body) for one request, from the table of behaviours."""
        users = [m.get("content") or "" for m in body.get("messages", []) if m.get("role") == "user"]
        prompt = max(users, key=len, default="")  # the real prompt; nudges and the example are shorter
        found = MODE.search(prompt)
        mode = found.group(1) if found else self.mode
        with self.lock:
            count = self.seen[prompt] = self.seen.get(prompt, 0) + 1
        pairwise = '"winner"' in prompt
        valid = json.dumps(_pairwise(prompt, mode) if pairwise else _scores(prompt))
        if mode == "unauthorized":
            return 401, {}, {"error": {"message": "invalid api key", "type": "invalid_request_error"}}
        if mode == "rate_limit" and count <= self.fail_times:
            error = {"error": {"message": "rate limited", "type": "rate_limit"}}
            return 429, {"Retry-After": self.retry_after}, error
        if mode == "server_error" and count <= self.fail_times:
            return 500, {}, {"error": {"message": "internal error", "type": "server_error"}}
        if mode == "slow" and count <= self.fail_times:
            time.sleep(self.delay)
        if mode == "no_json_schema" and (body.get("response_format") or {}).get("type") == "json_schema":
            return 400, {}, {"error": {"message": "json_schema is not supported", "type": "invalid_request"}}
        if mode == "no_json_mode" and "response_format" in body:
            return (
                400,
                {},
                {"error": {"message": "response_format is not supported", "type": "invalid_request"}},
            )
        if mode == "malformed":
            return 200, {}, _completion("Sure! I'd say the reply is good, maybe 4/5 overall.", prompt)
        if mode == "bad_schema":
            bad = {"on_brand": {"score": 7, "reason": "off the scale"}} if not pairwise else {"winner": "C"}
            return 200, {}, _completion(json.dumps(bad), prompt)
        if mode == "refusal":
            return 200, {}, _completion(None, prompt, refusal="I can't help with rating that.")
        if mode == "chatty":  # valid JSON wrapped in prose and a code fence: the lenient parse finds it
            return 200, {}, _completion(f"Here is my grading:\n```json\n{valid}\n```\nHope it helps.", prompt)
        return 200, {}, _completion(valid, prompt)

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet: pytest shows failures, not access logs
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                status, headers, payload = standin.answer(body)
                with standin.lock:
                    standin.requests.append(
                        {
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": body,
                            "status": status,
                        }
                    )
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for key, value in {"Content-Type": "application/json", **headers}.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left: that is the behaviour under test

        return Handler


def sample_prompts(source, n: int = 3) -> list[dict]:
    """Held-out prompt records in the converter sidecar's shape (docs in /evals), built straight from a
    brightrun-v4 file's first n pairs, so the judge's tests do not depend on the converter."""
    data = json.loads(source.read_text(encoding="utf-8-sig"))
    records = []
    for conversation in data["conversations"]:
        keys = conversation["conversation_metadata"]["scaffolding"]
        for pair in conversation["training_pairs"]:
            detected = pair["emotional_context"]["detected_emotions"]
            messages = [
                {"role": "system", "content": pair["system_prompt"]},
                *pair["conversation_history"],
                {"role": "user", "content": pair["current_user_input"]},
            ]
            records.append(
                {
                    "id": pair["id"],
                    "pair_id": pair["id"],
                    "conversation_id": conversation["conversation_metadata"]["conversation_id"],
                    "turn": pair["turn_number"],
                    **keys,
                    "emotional_context": pair["emotional_context"],
                    "primary_emotion": detected.get("primary"),
                    "intensity": detected.get("intensity"),
                    "demonstrates_skills": pair["training_metadata"]["demonstrates_skills"],
                    "messages": messages,
                    "reference": pair["target_response"],
                }
            )
            if len(records) == n:
                return records
    return records


def profile_of(source) -> dict:
    return json.loads(source.read_text(encoding="utf-8-sig"))["consultant_profile"]
