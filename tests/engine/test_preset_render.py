"""The plain-Python presets write exactly what their Jinja sources write.

The Jinja sources in ``gateway.engine.prompts.PRESETS`` are the reference; each renderer in
``gateway.engine.preset_render`` must agree with its source byte for byte, for any conversation:
system messages first or in the middle, tool results with and without names, an assistant message
last (continued in place by ``continue_final`` or followed by a new turn), empty texts, spacing.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.engine.preset_render import RENDERERS
from gateway.engine.prompts import PRESETS, PromptMessage, PromptTemplate

# Texts that exercise trimming, blank lines and markup-looking characters.
texts = st.one_of(
    st.sampled_from(["", " ", "\n", "hi", "  padded  ", "a\n\nb", "<b>&amp;</b>", "{{ x }}"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20),
)
names = st.one_of(st.none(), st.sampled_from(["", "get_weather", "Ann"]))
roles = st.sampled_from(["system", "user", "assistant", "tool"])
message_dicts = st.builds(
    lambda role, content, name: (
        {"role": role, "content": content} | ({} if name is None else {"name": name})
    ),
    roles,
    texts,
    names,
)


def _jinja(name: str, bos: str = "", eos: str = "") -> PromptTemplate:
    """The preset through the sandbox, as a template from configuration renders."""
    template = PromptTemplate(PRESETS[name], name=name, bos_token=bos, eos_token=eos)
    template._python = None
    return template


def _render_jinja(name: str, messages: list[dict[str, str]], generation: bool, bos: str) -> str:
    return _jinja(name, bos)._render(messages, generation_prompt=generation)


def test_every_preset_has_a_python_twin() -> None:
    assert set(RENDERERS) == set(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_unchanged_presets_render_in_python_and_custom_templates_in_the_sandbox(
    name: str,
) -> None:
    assert PromptTemplate(PRESETS[name], name=name)._python is RENDERERS[name]
    # The same name with other source is a template from configuration: the sandbox renders it.
    assert PromptTemplate(PRESETS[name] + " ", name=name)._python is None
    assert PromptTemplate("{{ messages | length }}", name="custom")._python is None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(PRESETS)),
    messages=st.lists(message_dicts, max_size=7),
    generation=st.booleans(),
    bos=st.sampled_from(["", "<s>", "<bos>"]),
)
def test_python_and_jinja_presets_write_the_same_bytes(
    name: str, messages: list[dict[str, str]], generation: bool, bos: str
) -> None:
    python = RENDERERS[name](messages, generation, bos)
    assert python == _render_jinja(name, messages, generation, bos)


prompt_messages = st.builds(PromptMessage, roles, texts, names)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(PRESETS)),
    messages=st.lists(prompt_messages, max_size=6),
    continue_final=st.booleans(),
    bos=st.sampled_from(["", "<s>"]),
)
def test_rendering_through_the_template_agrees_with_prefill_and_guards(
    name: str, messages: list[PromptMessage], continue_final: bool, bos: str
) -> None:
    """The whole render (guards on client text, continuation of a final assistant message)."""
    python = PromptTemplate(PRESETS[name], name=name, bos_token=bos)
    jinja = _jinja(name, bos)
    assert python.render(messages, continue_final=continue_final) == jinja.render(
        messages, continue_final=continue_final
    )


MIXED = [
    PromptMessage("system", "Be brief."),
    PromptMessage("system", "Answer in French."),
    PromptMessage("user", "Weather in Paris?"),
    PromptMessage("assistant", "Let me look."),
    PromptMessage("tool", '{"temp": 21}', name="get_weather"),
    PromptMessage("tool", "no name"),
    PromptMessage("system", "A system message in the middle."),
    PromptMessage("user", "And tomorrow?", name="Ann"),
    PromptMessage("assistant", "Tomorrow it will be "),
]


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("cut", range(len(MIXED) + 1))
@pytest.mark.parametrize("continue_final", [False, True])
def test_a_mixed_conversation_renders_alike_at_every_length(
    name: str, cut: int, continue_final: bool
) -> None:
    messages = MIXED[:cut]
    python = PromptTemplate(PRESETS[name], name=name).render(
        messages, continue_final=continue_final
    )
    assert python == _jinja(name).render(messages, continue_final=continue_final)
