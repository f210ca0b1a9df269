"""Tool calling and structured output for models that have neither.

The request's ``tools``/``tool_choice``/``response_format`` become an :class:`OutputSpec`
(:mod:`.spec`); instructions and past calls become prompt text (:mod:`.prompting`); each
choice's text is shaped back into content and ``tool_calls`` as it streams (:mod:`.stream`,
:mod:`.structured`, :mod:`.output`), by a tolerant parser (:mod:`.parsing`) over a JSON scanner
that knows where a cut text stands (:mod:`.jsonscan`).
"""

from gateway.engine.tools.output import (
    INVALID_JSON_OUTPUT,
    TOOL_CALL_INVALID,
    ChoiceOutput,
    Outcome,
)
from gateway.engine.tools.parsing import ParsedAnswer, ParsedCall, parse_answer
from gateway.engine.tools.prompting import (
    assistant_text,
    instructions,
    tool_call_names,
    with_instructions,
)
from gateway.engine.tools.spec import JsonSpec, OutputSpec, Tool, ToolSpec, output_spec
from gateway.engine.tools.stream import Piece, ToolCallChunk, ToolStream, new_call_id
from gateway.engine.tools.structured import JsonStream, extract_json

__all__ = [
    "INVALID_JSON_OUTPUT",
    "TOOL_CALL_INVALID",
    "ChoiceOutput",
    "JsonSpec",
    "JsonStream",
    "Outcome",
    "OutputSpec",
    "ParsedAnswer",
    "ParsedCall",
    "Piece",
    "Tool",
    "ToolCallChunk",
    "ToolSpec",
    "ToolStream",
    "assistant_text",
    "extract_json",
    "instructions",
    "new_call_id",
    "output_spec",
    "parse_answer",
    "tool_call_names",
    "with_instructions",
]
