"""Chat messages -> the one prompt string the upstream takes.

The upstream takes plain text and documents no chat template, so each model names a template:
a preset below or its own Jinja source. Templates follow Hugging Face chat-template conventions
(variables ``messages``, ``add_generation_prompt``, ``bos_token``, ``eos_token``; a
``raise_exception(message)`` global; a ``tojson`` filter) and run in Jinja's immutable sandbox,
so a template from configuration can format text but cannot reach into Python.

Special tokens. The *first* beginning-of-sequence token is never written as text: runtimes that
take a raw prompt (llama.cpp, Ollama) add it when they tokenize, and a second one degrades
output. ``bos_token`` is therefore ``""`` unless configured, and presets write it only where
their format starts with one. Markers a format puts *between* turns (``</s><s>`` in llama2,
``</s>`` in mistral, vicuna and zephyr, ``<|eot_id|>``, ``<|im_end|>``, ``<end_of_turn>``) are
written as text, as Ollama's own templates do. ``eos_token`` is ``""`` unless configured; presets
do not use it.

Presets tolerate any order of roles (the real templates often raise on anything but strict
user/assistant alternation): leading system messages become the format's system prompt (folded
into a user turn where the format has no system role); consecutive messages on the user side
(user, tool, later system messages) merge into one turn where the format pairs turns; tool
results are labelled ``Tool result (name):`` where the format has no tool role. A conversation
ending with an assistant message is continued in place by the pairing formats (llama2, mistral,
vicuna), which cannot open an assistant turn without a user turn; the others open a new
assistant turn, as Hugging Face does, unless the door asks for the last message to be continued
(``continue_final``: Anthropic's prefill), which every preset allows.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NoReturn

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from gateway.engine.preset_render import RENDERERS, Renderer
from gateway.engine.turns import guard_for
from gateway.errors import BadRequest

__all__ = ["PRESETS", "ROLES", "PromptMessage", "PromptTemplate", "template_for"]

ROLES = frozenset({"system", "user", "assistant", "tool"})


@dataclass(frozen=True, slots=True)
class PromptMessage:
    """One chat message, already reduced to text by the protocol layer."""

    role: str
    content: str
    name: str | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; expected one of {sorted(ROLES)}")


# ---------------------------------------------------------------------------------------------
# Presets. Every literal is inside {{ }} and every tag trims around it, so the environment's
# trim_blocks/lstrip_blocks settings (HF's) do not matter to them.

# Leading system messages -> `system` (joined by a blank line) and `has_system`; the rest ->
# `turns`. Formats without a user turn to fold the system prompt into get it as a user turn.
_SPLIT_SYSTEM = r"""
{%- set sys_ns = namespace(count=0, parts=[]) -%}
{%- for m in messages -%}
  {%- if m.role == 'system' and sys_ns.count == loop.index0 -%}
    {%- set sys_ns.count = sys_ns.count + 1 -%}
    {%- set sys_ns.parts = sys_ns.parts + [m.content] -%}
  {%- endif -%}
{%- endfor -%}
{%- set system = sys_ns.parts | join('\n\n') -%}
{%- set has_system = sys_ns.count > 0 -%}
{%- set turns = messages[sys_ns.count:] -%}
"""

# What a user-side message says in a format with no tool role (`text_of(m)`).
_TEXT_OF = r"""
{%- macro text_of(m) -%}
  {%- if m.role == 'tool' -%}
    {{- 'Tool result' ~ (' (' ~ m.name ~ ')' if m.name else '') ~ ':\n' ~ m.content -}}
  {%- else -%}
    {{- m.content -}}
  {%- endif -%}
{%- endmacro -%}
"""

_TRANSCRIPT = r"""
{%- for m in messages -%}
  {%- if not loop.first -%}{{ '\n\n' }}{%- endif -%}
  {{- m.role | capitalize -}}
  {%- if m.name -%}{{ ' (' ~ m.name ~ ')' }}{%- endif -%}
  {{- ':' ~ (' ' ~ m.content if m.content else '') -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {%- if messages -%}{{ '\n\n' }}{%- endif -%}
  {{- 'Assistant:' -}}
{%- endif -%}
"""

_RAW = r"""{{- messages | map(attribute='content') | join('\n\n') -}}"""

_CHATML = r"""
{%- for m in messages -%}
  {{- '<|im_start|>' ~ m.role ~ '\n' ~ m.content ~ '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}
"""

_LLAMA3 = r"""
{{- bos_token -}}
{%- for m in messages -%}
  {{- '<|start_header_id|>' ~ ('ipython' if m.role == 'tool' else m.role) ~ '<|end_header_id|>\n\n'
      ~ (m.content | trim) ~ '<|eot_id|>' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
{%- endif -%}
"""

_PHI3 = (
    _TEXT_OF
    + r"""
{%- for m in messages -%}
  {%- set role = 'user' if m.role == 'tool' else m.role -%}
  {{- '<|' ~ role ~ '|>\n' ~ text_of(m) ~ '<|end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<|assistant|>\n' }}{%- endif -%}
"""
)

_ZEPHYR = (
    _TEXT_OF
    + r"""
{%- for m in messages -%}
  {%- set role = 'user' if m.role == 'tool' else m.role -%}
  {{- '<|' ~ role ~ '|>\n' ~ text_of(m) ~ '</s>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<|assistant|>\n' }}{%- endif -%}
"""
)

_GEMMA = (
    _TEXT_OF
    + _SPLIT_SYSTEM
    + r"""
{%- if has_system and turns | rejectattr('role', 'equalto', 'assistant') | list | length == 0 -%}
  {%- set turns = [{'role': 'user', 'content': system}] + turns -%}
  {%- set has_system = false -%}
{%- endif -%}
{%- set g = namespace(prefix=(system ~ '\n\n') if has_system else '') -%}
{{- bos_token -}}
{%- for m in turns -%}
  {%- if m.role == 'assistant' -%}
    {{- '<start_of_turn>model\n' ~ (m.content | trim) ~ '<end_of_turn>\n' -}}
  {%- else -%}
    {{- '<start_of_turn>user\n' ~ g.prefix ~ (text_of(m) | trim) ~ '<end_of_turn>\n' -}}
    {%- set g.prefix = '' -%}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}
"""
)

_LLAMA2 = (
    _TEXT_OF
    + _SPLIT_SYSTEM
    + r"""
{%- set sys_block = ('<<SYS>>\n' ~ system ~ '\n<</SYS>>\n\n') if has_system else '' -%}
{%- set open_empty = '[INST] ' ~ ((sys_block | trim) ~ ' ' if has_system else '') ~ '[/INST]' -%}
{%- set st = namespace(side='') -%}
{{- bos_token -}}
{%- for m in turns -%}
  {%- if m.role == 'assistant' -%}
    {%- if st.side == 'user' -%}{{ ' [/INST] ' }}
    {%- elif st.side == 'assistant' -%}{{ '\n\n' }}
    {%- else -%}{{ open_empty ~ ' ' }}
    {%- endif -%}
    {{- m.content | trim -}}
    {%- set st.side = 'assistant' -%}
  {%- else -%}
    {%- if st.side == 'user' -%}{{ '\n\n' ~ (text_of(m) | trim) }}
    {%- elif st.side == 'assistant' -%}{{ ' </s><s>[INST] ' ~ (text_of(m) | trim) }}
    {%- else -%}{{ '[INST] ' ~ ((sys_block ~ text_of(m)) | trim) }}
    {%- endif -%}
    {%- set st.side = 'user' -%}
  {%- endif -%}
{%- endfor -%}
{%- if st.side == 'user' -%}{{ ' [/INST]' }}
{%- elif st.side == '' -%}{{ open_empty }}
{%- endif -%}
"""
)

# Mistral puts the system prompt at the start of the last user turn (mistral-common does).
_MISTRAL = (
    _TEXT_OF
    + _SPLIT_SYSTEM
    + r"""
{%- if has_system and turns | rejectattr('role', 'equalto', 'assistant') | list | length == 0 -%}
  {%- set turns = [{'role': 'user', 'content': system}] + turns -%}
  {%- set has_system = false -%}
{%- endif -%}
{%- set last = namespace(index=-1, side='') -%}
{%- for m in turns -%}
  {%- set side = 'assistant' if m.role == 'assistant' else 'user' -%}
  {%- if side == 'user' and last.side != 'user' -%}{%- set last.index = loop.index0 -%}{%- endif -%}
  {%- set last.side = side -%}
{%- endfor -%}
{%- set st = namespace(side='') -%}
{{- bos_token -}}
{%- for m in turns -%}
  {%- if m.role == 'assistant' -%}
    {%- if st.side == 'user' -%}{{ ' [/INST]' }}
    {%- elif st.side == 'assistant' -%}{{ '\n\n' }}
    {%- else -%}{{ '[INST] [/INST]' }}
    {%- endif -%}
    {{- m.content -}}
    {%- set st.side = 'assistant' -%}
  {%- else -%}
    {%- if st.side == 'user' -%}{{ '\n\n' }}
    {%- elif st.side == 'assistant' -%}{{ '</s>[INST] ' }}
    {%- else -%}{{ '[INST] ' }}
    {%- endif -%}
    {%- if has_system and loop.index0 == last.index -%}{{ system ~ '\n\n' }}{%- endif -%}
    {{- text_of(m) -}}
    {%- set st.side = 'user' -%}
  {%- endif -%}
{%- endfor -%}
{%- if st.side == 'user' -%}{{ ' [/INST]' }}
{%- elif st.side == '' -%}{{ '[INST] [/INST]' }}
{%- endif -%}
"""
)

_VICUNA = (
    _TEXT_OF
    + _SPLIT_SYSTEM
    + r"""
{%- set st = namespace(side='') -%}
{{- system if has_system else 'A chat between a curious user and an artificial intelligence'
    ~ ' assistant. The assistant gives helpful, detailed, and polite answers to the user\'s'
    ~ ' questions.' -}}
{%- for m in turns -%}
  {%- if m.role == 'assistant' -%}
    {%- if st.side == 'assistant' -%}{{ '\n\n' }}{%- else -%}{{ ' ASSISTANT: ' }}{%- endif -%}
    {{- m.content -}}
    {%- set st.side = 'assistant' -%}
  {%- else -%}
    {%- if st.side == 'user' -%}{{ '\n\n' }}
    {%- elif st.side == 'assistant' -%}{{ '</s>USER: ' }}
    {%- else -%}{{ ' USER: ' }}
    {%- endif -%}
    {{- text_of(m) -}}
    {%- set st.side = 'user' -%}
  {%- endif -%}
{%- endfor -%}
{%- if st.side != 'assistant' -%}{{ ' ASSISTANT:' }}{%- endif -%}
"""
)

_ALPACA = (
    _SPLIT_SYSTEM
    + r"""
{{- system if has_system else 'Below is an instruction that describes a task. Write a response'
    ~ ' that appropriately completes the request.' -}}
{%- for m in turns -%}
  {%- if m.role == 'assistant' -%}{{ '\n\n### Response:\n' }}
  {%- elif m.role == 'tool' -%}{{ '\n\n### Input:\n' }}
  {%- else -%}{{ '\n\n### Instruction:\n' }}
  {%- endif -%}
  {{- m.content -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '\n\n### Response:\n' }}{%- endif -%}
"""
)

#: Preset templates by name. ``transcript`` is the default.
PRESETS: Mapping[str, str] = MappingProxyType(
    {
        "transcript": _TRANSCRIPT,
        "raw": _RAW,
        "chatml": _CHATML,
        "llama2": _LLAMA2,
        "llama3": _LLAMA3,
        "gemma": _GEMMA,
        "mistral": _MISTRAL,
        "alpaca": _ALPACA,
        "vicuna": _VICUNA,
        "zephyr": _ZEPHYR,
        "phi3": _PHI3,
    }
)


# ---------------------------------------------------------------------------------------------


class _TemplateRaised(jinja2.TemplateError):
    """``raise_exception(...)`` called by a template: the messages do not fit its format."""


def _raise_exception(message: str) -> NoReturn:
    raise _TemplateRaised(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # HF's tojson: plain json.dumps, without Jinja's HTML escaping.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _environment() -> ImmutableSandboxedEnvironment:
    # The settings transformers uses for chat templates, so configured HF templates render alike.
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.globals["raise_exception"] = _raise_exception
    env.filters["tojson"] = _tojson
    return env


class PromptTemplate:
    """A compiled chat template. Compile once (``template_for`` caches), render per request."""

    __slots__ = ("_guard", "_python", "_template", "bos_token", "eos_token", "name", "source")

    def __init__(
        self, source: str, *, name: str = "custom", bos_token: str = "", eos_token: str = ""
    ) -> None:
        self.name = name
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        # Client text may not write this template's control tokens (gateway.engine.turns).
        custom = PRESETS.get(name) != source
        self._guard = guard_for(name, custom, (bos_token, eos_token))
        # An unchanged preset renders through its plain-Python twin, byte-identical and ~20x
        # cheaper than the sandbox; a template from configuration keeps the sandbox.
        self._python: Renderer | None = None if custom else RENDERERS.get(name)
        try:
            self._template = _environment().from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(
                f"prompt template {name!r} does not compile: {exc.message} (line {exc.lineno})"
            ) from None

    def __repr__(self) -> str:
        return f"PromptTemplate(name={self.name!r})"

    def _as_dict(self, message: PromptMessage) -> dict[str, str]:
        result = {"role": message.role, "content": self._guard(message.content)}
        if message.name is not None:
            result["name"] = self._guard.name(message.name)
        return result

    def render(self, messages: Sequence[PromptMessage], *, continue_final: bool = False) -> str:
        """The prompt for ``messages``. A template that rejects them raises ``BadRequest``.

        ``continue_final``: when the last message is an assistant's with text (a "prefill"),
        the prompt ends inside it, so the answer continues it, as Hugging Face's
        ``continue_final_message`` does: rendered without a generation prompt and cut after the
        final message's text. A template that does not write that text last (it rewrites it,
        say) cannot be continued: the prompt opens a new turn instead, as without the flag.
        """
        dicts = [self._as_dict(m) for m in messages]
        final = dicts[-1]["content"] if dicts and dicts[-1]["role"] == "assistant" else ""
        if continue_final and final.strip():
            prompt = self._render(dicts, generation_prompt=False)
            cut = _end_of(prompt, final)
            if cut is not None:
                return prompt[:cut]
        return self._render(dicts, generation_prompt=True)

    def _render(self, messages: list[dict[str, str]], *, generation_prompt: bool) -> str:
        if self._python is not None:
            return self._python(messages, generation_prompt, self.bos_token)
        context = {
            "messages": messages,
            "add_generation_prompt": generation_prompt,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
        }
        try:
            return self._template.render(context)
        except _TemplateRaised as exc:
            raise BadRequest(
                f"The messages do not fit the prompt template '{self.name}' of this model: {exc}",
                param="messages",
            ) from None
        except Exception as exc:  # whatever the template's own code raised on these messages
            raise BadRequest(
                f"The prompt template '{self.name}' of this model failed on these messages: "
                f"{type(exc).__name__}: {exc}",
                param="messages",
            ) from None


def _end_of(prompt: str, final: str) -> int | None:
    """Where ``final``, the last message's text, ends in ``prompt``, if it is the last thing
    written but the turn's closing markers; None when the template did not write it last."""
    text = final.strip()
    at = prompt.rfind(text)
    if at < 0:
        return None
    # The template kept the text's trailing spacing, or trimmed it: keep what it wrote.
    kept = final.lstrip()
    end = at + len(kept) if prompt[at : at + len(kept)] == kept else at + len(text)
    # What follows may only be markup that closes the turn, never more messages' text.
    rest = prompt[end:]
    if len(rest.strip()) > _MAX_CLOSING:
        return None
    return end


#: The longest turn-closing markup a template writes after a message (``<|eot_id|>``,
#: ``<end_of_turn>``, ``</s>``...); more than this after the final text is another message.
_MAX_CLOSING = 24


def template_for(
    name: str, jinja_source: str | None = None, *, bos_token: str = "", eos_token: str = ""
) -> PromptTemplate:
    """The preset ``name``, or ``jinja_source`` when given (then ``name`` only labels it).

    Raises ``ValueError`` for an unknown preset or a template that does not compile.
    """
    if jinja_source is not None:
        return _compile(jinja_source, name, bos_token, eos_token)
    source = PRESETS.get(name)
    if source is None:
        known = ", ".join(sorted(PRESETS))
        raise ValueError(f"unknown prompt template {name!r}; the presets are: {known}")
    return _compile(source, name, bos_token, eos_token)


@functools.lru_cache(maxsize=64)
def _compile(source: str, name: str, bos_token: str, eos_token: str) -> PromptTemplate:
    return PromptTemplate(source, name=name, bos_token=bos_token, eos_token=eos_token)
