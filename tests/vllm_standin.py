"""A loopback stand-in for a vLLM OpenAI server serving LoRA adapters, for what the hot-swap tests need: it
answers each chat request with the adapter folder its model name points at (so a test sees which version
answered), and loads and unloads adapters at runtime as vLLM does, per its docs and request schema:

- the routes exist only with runtime updating on (vLLM registers /v1/load_lora_adapter and
  /v1/unload_lora_adapter only when VLLM_ALLOW_RUNTIME_LORA_UPDATING=True; docs/features/lora.md); without
  it they are FastAPI's bare 404 `{"detail": "Not Found"}`;
- load: 200 "Success: LoRA adapter 'NAME' added successfully"; a name loaded already is a 400 unless
  `load_inplace` (vLLM's LoadLoRAAdapterRequest), which replaces it; a path with no adapter a 404 error;
- unload: 200 "Success: LoRA adapter 'NAME' removed successfully"; an unknown name a 404 error;
- chat for a model it does not serve: 404 "The model `NAME` does not exist." (vLLM's wording), so the
  client's NotFoundError follows.
The error bodies are vLLM's ErrorResponse shape; their exact wording is approximate (not read from a
running server). `calls` keeps every request for the test to read.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def error(message: str, code: int) -> tuple[int, dict]:
    kind = "NotFoundError" if code == 404 else "BadRequestError"
    return code, {"error": {"message": message, "type": kind, "param": None, "code": code}}


class VllmStandIn:
    def __init__(self, base_model: str = "base", runtime_updating: bool = True, load_inplace: bool = True):
        self.base_model = base_model
        self.runtime_updating = runtime_updating
        self.load_inplace = load_inplace  # False: an older vLLM that refuses a loaded name outright
        self.loaded: dict[str, str] = {}  # served name -> adapter path
        self.calls: list[tuple[str, dict]] = []
        self._lock = threading.Lock()

    def handle(self, path: str, body: dict) -> tuple[int, dict | str]:
        self.calls.append((path, body))
        if path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter") and not self.runtime_updating:
            return 404, {"detail": "Not Found"}
        name = body.get("lora_name") or body.get("model")
        with self._lock:
            if path == "/v1/load_lora_adapter":
                if not (Path(body["lora_path"]) / "adapter_config.json").is_file():
                    return error(f"Loading lora {name} failed: No adapter found for {body['lora_path']}", 404)
                if name in self.loaded and not (self.load_inplace and body.get("load_inplace")):
                    return error(f"The lora adapter '{name}' has already been loaded.", 400)
                self.loaded[name] = body["lora_path"]
                return 200, f"Success: LoRA adapter '{name}' added successfully."
            if path == "/v1/unload_lora_adapter":
                if self.loaded.pop(name, None) is None:
                    return error(f"The lora adapter '{name}' cannot be found.", 404)
                return 200, f"Success: LoRA adapter '{name}' removed successfully."
            if path == "/v1/chat/completions":
                if name != self.base_model and name not in self.loaded:
                    return error(f"The model `{name}` does not exist.", 404)
                content = f"answered by {self.loaded.get(name, self.base_model)}"
                return 200, {
                    "id": "chatcmpl-vllm-standin",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": name,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": content},
                            "finish_reason": "stop",
                        }
                    ],  # fmt: skip
                    "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
                }
        return 404, {"detail": "Not Found"}

    def __enter__(self) -> VllmStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                code, answer = standin.handle(self.path, body)
                raw = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
                self.send_response(code)
                self.send_header(
                    "Content-Type", "text/plain" if isinstance(answer, str) else "application/json"
                )
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
