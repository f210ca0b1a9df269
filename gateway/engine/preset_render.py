"""The preset chat templates rendered in plain Python.

Every request renders its model's template, and a render through Jinja's sandbox costs ~20x the
string work itself (issue 28: 23 us vs 0.4 us for the default template). The presets are ours, so
each has a twin here that writes the same bytes; ``gateway.engine.prompts`` uses the twin for an
unchanged preset and keeps the sandbox for templates from configuration. The Jinja sources stay
the reference (they document each format, and tests/engine/test_preset_render.py renders many
conversations through both and compares them byte for byte).

Each renderer takes the messages as ``gateway.engine.prompts`` hands them to Jinja (dicts with
``role``, ``content`` and maybe ``name``, already guarded), ``add_generation_prompt`` and
``bos_token``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

__all__ = ["RENDERERS", "Renderer"]

Message = Mapping[str, str]
Renderer = Callable[[list[dict[str, str]], bool, str], str]


def _split_system(messages: list[dict[str, str]]) -> tuple[str, bool, list[dict[str, str]]]:
    """Leading system messages -> (system prompt joined by blank lines, any?, the rest)."""
    count = 0
    for m in messages:
        if m["role"] != "system":
            break
        count += 1
    return "\n\n".join(m["content"] for m in messages[:count]), count > 0, messages[count:]


def _fold_system(
    system: str, has_system: bool, turns: list[dict[str, str]]
) -> tuple[bool, list[dict[str, str]]]:
    """With no user-side turn to carry it, the system prompt becomes a user turn."""
    if has_system and all(m["role"] == "assistant" for m in turns):
        return False, [{"role": "user", "content": system}, *turns]
    return has_system, turns


def _text_of(m: Message) -> str:
    if m["role"] == "tool":
        name = m.get("name")
        return "Tool result" + (" (" + name + ")" if name else "") + ":\n" + m["content"]
    return m["content"]


def _transcript(messages: list[dict[str, str]], generation: bool, bos: str) -> str:
    parts = []
    for m in messages:
        name = m.get("name")
        content = m["content"]
        parts.append(
            m["role"].capitalize()
            + (" (" + name + ")" if name else "")
            + ":"
            + (" " + content if content else "")
        )
    out = "\n\n".join(parts)
    if generation:
        out += "\n\nAssistant:" if messages else "Assistant:"
    return out


def _raw(messages: list[dict[str, str]], generation: bool, bos: str) -> str:
    return "\n\n".join(m["content"] for m in messages)


def _chatml(messages: list[dict[str, str]], generation: bool, bos: str) -> str:
    out = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return out + "<|im_start|>assistant\n" if generation else out


def _llama3(messages: list[dict[str, str]], generation: bool, bos: str) -> str:
    out = bos + "".join(
        "<|start_header_id|>"
        + ("ipython" if m["role"] == "tool" else m["role"])
        + "<|end_header_id|>\n\n"
        + m["content"].strip()
        + "<|eot_id|>"
        for m in messages
    )
    return out + "<|start_header_id|>assistant<|end_header_id|>\n\n" if generation else out


def _tagged(end: str) -> Renderer:
    """phi3 and zephyr: ``<|role|>`` turns closed by ``end``, tool results as user turns."""

    def render(messages: list[dict[str, str]], generation: bool, bos: str) -> str:
        out = "".join(
            "<|"
            + ("user" if m["role"] == "tool" else m["role"])
            + "|>\n"
            + _text_of(m)
            + end
            + "\n"
            for m in messages
        )
        return out + "<|assistant|>\n" if generation else out

    return render


def _gemma(messages: list[dict[str, str]], generation: bool, bos: str) -> str:
    system, has_system, turns = _split_system(messages)
    has_system, turns = _fold_system(system, has_system, turns)
    prefix = system + "\n\n" if has_system else ""
    out = [bos]
    for m in turns:
        if m["role"] == "assistant":
            out.append("<start_of_turn>model\n" + m["content"].strip() + "<end_of_turn>\n")
        else:
            out.append("<start_of_turn>user\n" + prefix + _text_of(m).strip() + "<end_of_turn>\n")
            prefix = ""
    if generation:
        out.append("<start_of_turn>model\n")
    return "".join(out)


def _llama2(messages: list[dict[str, str]], generation: bool, bos: str) -> str:
    system, has_system, turns = _split_system(messages)
    sys_block = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" if has_system else ""
    open_empty = "[INST] " + (sys_block.strip() + " " if has_system else "") + "[/INST]"
    side = ""
    out = [bos]
    for m in turns:
        if m["role"] == "assistant":
            if side == "user":
                out.append(" [/INST] ")
            elif side == "assistant":
                out.append("\n\n")
            else:
                out.append(open_empty + " ")
            out.append(m["content"].strip())
            side = "assistant"
        else:
            if side == "user":
                out.append("\n\n" + _text_of(m).strip())
            elif side == "assistant":
                out.append(" </s><s>[INST] " + _text_of(m).strip())
            else:
                out.append("[INST] " + (sys_block + _text_of(m)).strip())
            side = "user"
    if side == "user":
        out.append(" [/INST]")
    elif side == "":
        out.append(open_empty)
    return "".join(out)


def _mistral(messages: list[dict[str, str]], generation: bool, bos: str) -> str:
    system, has_system, turns = _split_system(messages)
    has_system, turns = _fold_system(system, has_system, turns)
    last_index, last_side = -1, ""
    for index, m in enumerate(turns):
        current = "assistant" if m["role"] == "assistant" else "user"
        if current == "user" and last_side != "user":
            last_index = index
        last_side = current
    side = ""
    out = [bos]
    for index, m in enumerate(turns):
        if m["role"] == "assistant":
            if side == "user":
                out.append(" [/INST]")
            elif side == "assistant":
                out.append("\n\n")
            else:
                out.append("[INST] [/INST]")
            out.append(m["content"])
            side = "assistant"
        else:
            if side == "user":
                out.append("\n\n")
            elif side == "assistant":
                out.append("</s>[INST] ")
            else:
                out.append("[INST] ")
            if has_system and index == last_index:
                out.append(system + "\n\n")
            out.append(_text_of(m))
            side = "user"
    if side == "user":
        out.append(" [/INST]")
    elif side == "":
        out.append("[INST] [/INST]")
    return "".join(out)


_VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant"
    " gives helpful, detailed, and polite answers to the user's questions."
)


def _vicuna(messages: list[dict[str, str]], generation: bool, bos: str) -> str:
    system, has_system, turns = _split_system(messages)
    side = ""
    out = [system if has_system else _VICUNA_SYSTEM]
    for m in turns:
        if m["role"] == "assistant":
            out.append("\n\n" if side == "assistant" else " ASSISTANT: ")
            out.append(m["content"])
            side = "assistant"
        else:
            if side == "user":
                out.append("\n\n")
            elif side == "assistant":
                out.append("</s>USER: ")
            else:
                out.append(" USER: ")
            out.append(_text_of(m))
            side = "user"
    if side != "assistant":
        out.append(" ASSISTANT:")
    return "".join(out)


_ALPACA_SYSTEM = (
    "Below is an instruction that describes a task. Write a response that appropriately"
    " completes the request."
)
_ALPACA_HEADS = {"assistant": "\n\n### Response:\n", "tool": "\n\n### Input:\n"}


def _alpaca(messages: list[dict[str, str]], generation: bool, bos: str) -> str:
    system, has_system, turns = _split_system(messages)
    out = [system if has_system else _ALPACA_SYSTEM]
    for m in turns:
        out.append(_ALPACA_HEADS.get(m["role"], "\n\n### Instruction:\n") + m["content"])
    if generation:
        out.append("\n\n### Response:\n")
    return "".join(out)


#: A plain-Python twin of every preset in ``gateway.engine.prompts.PRESETS``, by name.
RENDERERS: Mapping[str, Renderer] = MappingProxyType(
    {
        "transcript": _transcript,
        "raw": _raw,
        "chatml": _chatml,
        "llama2": _llama2,
        "llama3": _llama3,
        "gemma": _gemma,
        "mistral": _mistral,
        "alpaca": _alpaca,
        "vicuna": _vicuna,
        "zephyr": _tagged("</s>"),
        "phi3": _tagged("<|end|>"),
    }
)
