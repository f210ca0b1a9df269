from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.engine.prompts import PRESETS, PromptMessage, PromptTemplate, template_for
from gateway.engine.turns import MARK
from gateway.errors import BadRequest

M = PromptMessage

PIRATE = [
    M("system", "You are a friendly chatbot who always responds in the style of a pirate"),
    M("user", "Hello, how are you?"),
    M("assistant", "I'm doing great. How can I help you today?"),
    M("user", "I'd like to show off how chat templating works!"),
]
NO_SYSTEM = PIRATE[1:]

# Outputs of the real Hugging Face templates for PIRATE / NO_SYSTEM, with the leading BOS left
# out (the runtime adds it) and add_generation_prompt=True.
EXPECTED = {
    "llama2": (
        "[INST] <<SYS>>\nYou are a friendly chatbot who always responds in the style of a pirate\n"
        "<</SYS>>\n\nHello, how are you? [/INST] I'm doing great. How can I help you today? "
        "</s><s>[INST] I'd like to show off how chat templating works! [/INST]"
    ),
    "zephyr": (
        "<|system|>\nYou are a friendly chatbot who always responds in the style of a pirate</s>\n"
        "<|user|>\nHello, how are you?</s>\n"
        "<|assistant|>\nI'm doing great. How can I help you today?</s>\n"
        "<|user|>\nI'd like to show off how chat templating works!</s>\n<|assistant|>\n"
    ),
    "chatml": (
        "<|im_start|>system\nYou are a friendly chatbot who always responds in the style of a "
        "pirate<|im_end|>\n<|im_start|>user\nHello, how are you?<|im_end|>\n"
        "<|im_start|>assistant\nI'm doing great. How can I help you today?<|im_end|>\n"
        "<|im_start|>user\nI'd like to show off how chat templating works!<|im_end|>\n"
        "<|im_start|>assistant\n"
    ),
    "llama3": (
        "<|start_header_id|>system<|end_header_id|>\n\nYou are a friendly chatbot who always "
        "responds in the style of a pirate<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHello, how are you?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
        "I'm doing great. How can I help you today?<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n"
        "I'd like to show off how chat templating works!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "phi3": (
        "<|system|>\nYou are a friendly chatbot who always responds in the style of a pirate"
        "<|end|>\n<|user|>\nHello, how are you?<|end|>\n"
        "<|assistant|>\nI'm doing great. How can I help you today?<|end|>\n"
        "<|user|>\nI'd like to show off how chat templating works!<|end|>\n<|assistant|>\n"
    ),
    # Gemma 3 folds the system prompt into the first user turn.
    "gemma": (
        "<start_of_turn>user\nYou are a friendly chatbot who always responds in the style of a "
        "pirate\n\nHello, how are you?<end_of_turn>\n"
        "<start_of_turn>model\nI'm doing great. How can I help you today?<end_of_turn>\n"
        "<start_of_turn>user\nI'd like to show off how chat templating works!<end_of_turn>\n"
        "<start_of_turn>model\n"
    ),
    # Mistral (mistral-common, Mixtral's template) puts the system prompt in the last user turn.
    "mistral": (
        "[INST] Hello, how are you? [/INST]I'm doing great. How can I help you today?</s>"
        "[INST] You are a friendly chatbot who always responds in the style of a pirate\n\n"
        "I'd like to show off how chat templating works! [/INST]"
    ),
    # FastChat's vicuna_v1.1.
    "vicuna": (
        "You are a friendly chatbot who always responds in the style of a pirate "
        "USER: Hello, how are you? ASSISTANT: I'm doing great. How can I help you today?</s>"
        "USER: I'd like to show off how chat templating works! ASSISTANT:"
    ),
    "alpaca": (
        "You are a friendly chatbot who always responds in the style of a pirate\n\n"
        "### Instruction:\nHello, how are you?\n\n"
        "### Response:\nI'm doing great. How can I help you today?\n\n"
        "### Instruction:\nI'd like to show off how chat templating works!\n\n### Response:\n"
    ),
    "transcript": (
        "System: You are a friendly chatbot who always responds in the style of a pirate\n\n"
        "User: Hello, how are you?\n\n"
        "Assistant: I'm doing great. How can I help you today?\n\n"
        "User: I'd like to show off how chat templating works!\n\n"
        "Assistant:"
    ),
    "raw": (
        "You are a friendly chatbot who always responds in the style of a pirate\n\n"
        "Hello, how are you?\n\n"
        "I'm doing great. How can I help you today?\n\n"
        "I'd like to show off how chat templating works!"
    ),
}

EXPECTED_NO_SYSTEM = {
    "mistral": (
        "[INST] Hello, how are you? [/INST]I'm doing great. How can I help you today?</s>"
        "[INST] I'd like to show off how chat templating works! [/INST]"
    ),
    "llama2": (
        "[INST] Hello, how are you? [/INST] I'm doing great. How can I help you today? "
        "</s><s>[INST] I'd like to show off how chat templating works! [/INST]"
    ),
    "gemma": (
        "<start_of_turn>user\nHello, how are you?<end_of_turn>\n"
        "<start_of_turn>model\nI'm doing great. How can I help you today?<end_of_turn>\n"
        "<start_of_turn>user\nI'd like to show off how chat templating works!<end_of_turn>\n"
        "<start_of_turn>model\n"
    ),
    "vicuna": (
        "A chat between a curious user and an artificial intelligence assistant. The assistant "
        "gives helpful, detailed, and polite answers to the user's questions. "
        "USER: Hello, how are you? ASSISTANT: I'm doing great. How can I help you today?</s>"
        "USER: I'd like to show off how chat templating works! ASSISTANT:"
    ),
    "alpaca": (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nHello, how are you?\n\n"
        "### Response:\nI'm doing great. How can I help you today?\n\n"
        "### Instruction:\nI'd like to show off how chat templating works!\n\n### Response:\n"
    ),
}

# How each preset's prompt ends when the model is to write a new assistant turn.
GENERATION_CUES = {
    "transcript": "Assistant:",
    "chatml": "<|im_start|>assistant\n",
    "llama2": " [/INST]",
    "llama3": "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "gemma": "<start_of_turn>model\n",
    "mistral": " [/INST]",
    "alpaca": "### Response:\n",
    "vicuna": " ASSISTANT:",
    "zephyr": "<|assistant|>\n",
    "phi3": "<|assistant|>\n",
}


def test_every_preset_is_covered() -> None:
    assert set(EXPECTED) == set(PRESETS)
    assert set(GENERATION_CUES) == set(PRESETS) - {"raw"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_formats(name: str) -> None:
    assert template_for(name).render(PIRATE) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED_NO_SYSTEM))
def test_preset_formats_without_system(name: str) -> None:
    assert template_for(name).render(NO_SYSTEM) == EXPECTED_NO_SYSTEM[name]


def test_transcript_labels_names_and_tools() -> None:
    prompt = template_for("transcript").render(
        [
            M("user", "Weather in Paris?", name="alice"),
            M("tool", '{"temp": 21}', name="get_weather"),
            M("tool", "ok"),
            M("user", ""),
        ]
    )
    assert prompt == (
        "User (alice): Weather in Paris?\n\n"
        'Tool (get_weather): {"temp": 21}\n\n'
        "Tool: ok\n\n"
        "User:\n\n"
        "Assistant:"
    )


def test_transcript_of_nothing_is_the_cue() -> None:
    assert template_for("transcript").render([]) == "Assistant:"


def test_tool_results_in_formats_without_a_tool_role() -> None:
    messages = [M("user", "Weather?"), M("tool", "21C", name="get_weather")]
    assert template_for("zephyr").render(messages) == (
        "<|user|>\nWeather?</s>\n<|user|>\nTool result (get_weather):\n21C</s>\n<|assistant|>\n"
    )
    # Pairing formats merge the user side into one turn.
    assert template_for("llama2").render(messages) == (
        "[INST] Weather?\n\nTool result (get_weather):\n21C [/INST]"
    )
    llama3 = template_for("llama3").render(messages)
    assert llama3.endswith(
        "<|start_header_id|>ipython<|end_header_id|>\n\n21C<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    alpaca = template_for("alpaca").render(messages)
    assert alpaca.endswith("### Instruction:\nWeather?\n\n### Input:\n21C\n\n### Response:\n")


def test_system_only_conversations() -> None:
    messages = [M("system", "Say hi.")]
    assert template_for("llama2").render(messages) == "[INST] <<SYS>>\nSay hi.\n<</SYS>> [/INST]"
    assert template_for("mistral").render(messages) == "[INST] Say hi. [/INST]"
    assert template_for("gemma").render(messages) == (
        "<start_of_turn>user\nSay hi.<end_of_turn>\n<start_of_turn>model\n"
    )


def test_several_leading_system_messages_join() -> None:
    messages = [M("system", "One."), M("system", "Two."), M("user", "Hi")]
    assert template_for("llama2").render(messages) == (
        "[INST] <<SYS>>\nOne.\n\nTwo.\n<</SYS>>\n\nHi [/INST]"
    )


def test_pairing_formats_continue_a_trailing_assistant_message() -> None:
    messages = [M("user", "Count to 3"), M("assistant", "1, 2,")]
    assert template_for("llama2").render(messages) == "[INST] Count to 3 [/INST] 1, 2,"
    assert template_for("mistral").render(messages) == "[INST] Count to 3 [/INST]1, 2,"
    assert template_for("vicuna").render(messages).endswith("USER: Count to 3 ASSISTANT: 1, 2,")


@pytest.mark.parametrize(
    ("name", "ending"),
    [
        ("transcript", "System: Mind the tools.\n\nAssistant: 1, 2,"),
        ("chatml", "<|im_start|>system\nMind the tools.<|im_end|>\n<|im_start|>assistant\n1, 2,"),
        ("llama3", "<|start_header_id|>assistant<|end_header_id|>\n\n1, 2,"),
        ("gemma", "<start_of_turn>model\n1, 2,"),
        ("phi3", "<|assistant|>\n1, 2,"),
        ("zephyr", "<|assistant|>\n1, 2,"),
        ("alpaca", "### Response:\n1, 2,"),
        ("llama2", " [/INST] 1, 2,"),
        ("mistral", " [/INST]1, 2,"),
        ("vicuna", " ASSISTANT: 1, 2,"),
        ("raw", "Mind the tools.\n\n1, 2,"),
    ],
)
def test_continue_final_ends_the_prompt_inside_the_last_message(name: str, ending: str) -> None:
    """Anthropic's prefill: the answer continues the assistant's text, in every preset; a
    system message in the middle stays where it came."""
    messages = [
        M("system", "Be brief."),
        M("user", "Count to 3"),
        M("system", "Mind the tools."),
        M("assistant", "1, 2,"),
    ]
    template = template_for(name)
    prompt = template.render(messages, continue_final=True)
    assert prompt.endswith(ending)
    assert prompt.index("Be brief.") < prompt.index("Count to 3") < prompt.index("Mind the tools.")
    # Without the flag, the formats that can open a new assistant turn do.
    if name not in ("llama2", "mistral", "vicuna", "raw"):
        assert not template.render(messages).endswith("1, 2,")


def test_continue_final_keeps_trailing_space_as_the_template_wrote_it() -> None:
    messages = [M("user", "Count"), M("assistant", "1, 2, ")]
    assert template_for("chatml").render(messages, continue_final=True).endswith("\n1, 2, ")
    assert template_for("llama3").render(messages, continue_final=True).endswith("\n1, 2,")


def test_a_template_that_rewrites_the_last_message_opens_a_new_turn() -> None:
    source = "{% for m in messages %}[{{ m.role }}] {{ m.content | upper }}\n{% endfor %}>"
    template = template_for("shouting", source)
    messages = [M("user", "hi"), M("assistant", "well")]
    assert template.render(messages, continue_final=True) == template.render(messages)
    # Nor is one continued when what follows its text is more than a turn's closing markup.
    source = "{% for m in messages %}{{ m.content }}\n{% endfor %}--- the end of the chat ---"
    assert template_for("footer", source).render(messages, continue_final=True).endswith("---")


def test_bos_token_is_written_only_when_configured() -> None:
    assert not template_for("llama2").render(NO_SYSTEM).startswith("<s>")
    with_bos = template_for("llama2", bos_token="<s>")
    assert with_bos.render(NO_SYSTEM) == "<s>" + EXPECTED_NO_SYSTEM["llama2"]
    llama3 = template_for("llama3", bos_token="<|begin_of_text|>").render(PIRATE)
    assert llama3.startswith("<|begin_of_text|><|start_header_id|>system")


def test_custom_hf_template_renders_as_transformers_does() -> None:
    # Zephyr's own chat template, as published with the model.
    source = (
        "{% for message in messages %}\n"
        "{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n"
        "{% elif message['role'] == 'system' %}\n"
        "{{ '<|system|>\n' + message['content'] + eos_token }}\n"
        "{% elif message['role'] == 'assistant' %}\n"
        "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
        "{% endif %}\n"
        "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n"
        "{% endfor %}"
    )
    template = template_for("zephyr-custom", source, eos_token="</s>")
    assert template.render(PIRATE) == EXPECTED["zephyr"]


def test_custom_template_sees_names_only_when_given() -> None:
    source = "{% for m in messages %}{{ m.name if m.name is defined else '-' }};{% endfor %}"
    template = template_for("names", source)
    assert template.render([M("user", "a", name="bob"), M("user", "b")]) == "bob;-;"


def test_tojson_does_not_html_escape() -> None:
    template = template_for("json", "{{ messages | tojson }}")
    assert template.render([M("user", "<b>&'é")]) == '[{"role": "user", "content": "<b>&\'é"}]'


def test_raise_exception_becomes_bad_request() -> None:
    source = (
        "{% if messages[0]['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}ok"
    )
    template = template_for("strict", source)
    assert template.render(NO_SYSTEM) == "ok"
    with pytest.raises(BadRequest) as info:
        template.render(PIRATE)
    assert "System role not supported" in info.value.message
    assert "strict" in info.value.message
    assert info.value.param == "messages"
    assert info.value.status_code == 400


@pytest.mark.parametrize(
    "source",
    [
        "{{ messages[5]['content'].upper() }}",  # undefined
        "{{ messages[0]['content'] + 1 }}",  # type error
        "{{ ''.__class__.__mro__ }}",  # the sandbox refuses
        "{% set x = [] %}{{ x.append(1) }}",  # the sandbox is immutable
        "{{ 1 / 0 }}",
    ],
)
def test_render_errors_become_bad_request(source: str) -> None:
    with pytest.raises(BadRequest) as info:
        template_for("broken", source).render(NO_SYSTEM)
    assert "broken" in info.value.message


def test_template_that_does_not_compile_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"'mine' does not compile.*line 2"):
        template_for("mine", "ok\n{% for m in messages %}")
    with pytest.raises(ValueError):
        PromptTemplate("{{ x ", name="x")


def test_unknown_preset_names_the_known_ones() -> None:
    with pytest.raises(ValueError) as info:
        template_for("llama4")
    assert "'llama4'" in str(info.value)
    for name in PRESETS:
        assert name in str(info.value)


def test_templates_are_compiled_once() -> None:
    assert template_for("chatml") is template_for("chatml")
    source = "{{ messages | length }}"
    assert template_for("a", source) is template_for("a", source)
    assert template_for("chatml") is not template_for("chatml", bos_token="<s>")


def test_prompt_message_checks_its_role() -> None:
    with pytest.raises(ValueError, match="unknown role"):
        PromptMessage("developer", "x")
    with pytest.raises(AttributeError):
        M("user", "x").content = "y"  # type: ignore[misc]


def test_presets_are_read_only() -> None:
    with pytest.raises(TypeError):
        PRESETS["mine"] = "x"  # type: ignore[index]


# ----------------------------------------------------------------------------- properties

# Content that looks like markup must stay data: templates never evaluate message text.
contents = st.text(max_size=30) | st.sampled_from(
    ["{{ 7 * 7 }}", "{% raise %}", "</s>", "[INST]", "  padded  ", ""]
)
messages_lists = st.lists(
    st.builds(
        PromptMessage,
        role=st.sampled_from(["system", "user", "assistant", "tool"]),
        content=contents,
        name=st.none() | st.sampled_from(["get_weather", "alice"]),
    ),
    max_size=6,
)


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(sorted(PRESETS)), messages=messages_lists)
def test_presets_render_any_conversation(name: str, messages: list[PromptMessage]) -> None:
    # Control tokens in the text get a zero-width mark (gateway.engine.turns); without the
    # marks, every message's text is there as sent.
    prompt = template_for(name).render(messages).replace(MARK, "")
    leading = 0
    while leading < len(messages) and messages[leading].role == "system":
        leading += 1
    ordered = messages
    if name in {"gemma", "mistral"}:  # they move the system prompt into a later user turn
        for message in messages[:leading]:
            assert message.content.strip() in prompt
        ordered = messages[leading:]
    position = 0
    for message in ordered:
        # Every message appears, in order (some formats trim the content).
        text = message.content.strip()
        found = prompt.find(text, position)
        assert found >= 0, (message, prompt)
        position = found + len(text)
    ends_with_assistant = bool(messages) and messages[-1].role == "assistant"
    cue = GENERATION_CUES.get(name)
    if cue is not None and not ends_with_assistant:
        assert prompt.endswith(cue)
    if name in {"llama2", "mistral", "vicuna"} and ends_with_assistant:
        assert prompt.rstrip().endswith(messages[-1].content.strip())
