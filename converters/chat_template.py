"""Chat templates rendered as transformers renders them, without importing transformers.

`import transformers.utils.chat_template_utils` alone takes ~1.2 s (it runs transformers' package
init: numpy, huggingface_hub, the import-utils probes), more than half the converter's 2 s budget, while
jinja2's sandbox takes ~0.1 s. So this mirrors transformers 5.16 `transformers/utils/chat_template_utils.py`:
`_cached_compile_jinja_template` (the environment, its filters and globals) and `render_jinja_template`
as `apply_chat_template(..., tokenize=False)` calls it (no tools, no documents, no generation prompt,
no continue_final_message). tests/converters/test_tokenizer_parity.py compares the rendered text with
transformers' own on every demo and fixture line; re-run it when transformers is upgraded.
"""

from __future__ import annotations

import json
from datetime import datetime

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment


class _Generation(jinja2.ext.Extension):
    """transformers' AssistantTracker, untracked: `{% generation %}...{% endgeneration %}` renders its body.

    Without it a template that marks assistant spans would not even parse; transformers only records
    the span's character offsets (for return_assistant_tokens_mask), which counting never asks for.
    """

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # transformers replaces jinja's tojson, which escapes HTML characters (<, >, &, ') in its output.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format):
    return datetime.now().strftime(format)


def compile_template(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(source)


def render(template: jinja2.Template, messages: list[dict], special_tokens: dict[str, str]) -> str:
    """One conversation, as `tok.apply_chat_template(messages, tokenize=False)` returns it.

    special_tokens is transformers' `tokenizer.special_tokens_map` (bos_token, eos_token, ...: the named
    tokens as strings), which apply_chat_template passes to the template beside these four.
    """
    return template.render(
        messages=messages, tools=None, documents=None, add_generation_prompt=False, **special_tokens
    )
