from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.engine.textstream import (
    ChoiceText,
    LogCursor,
    StopCutter,
    cut_at_stop,
    cut_final,
    normalize_log,
)
from gateway.engine.tokens import count_tokens

ESC = "\x1b"

# ----------------------------------------------------------------------------- strategies

# Whole escape sequences and pieces of them, so that random logs hold complete, broken and
# split sequences as well as CR/LF pairs.
_FRAGMENTS = [
    f"{ESC}[31m",
    f"{ESC}[0m",
    f"{ESC}[2K",
    f"{ESC}[?25l",
    f"{ESC}]0;title\x07",
    f"{ESC}]0;t{ESC}\\",
    f"{ESC}(B",
    f"{ESC}7",
    ESC,
    f"{ESC}[",
    f"{ESC}]",
    "\r\n",
    "\r",
    "\n",
    "Hello",
    " world",
]
_LOG_ALPHABET = f"ab {ESC}[];0m\x07\\(\r\n"
raw_logs = st.lists(
    st.sampled_from(_FRAGMENTS) | st.text(alphabet=_LOG_ALPHABET, max_size=4), max_size=12
).map("".join)

# Short texts over a small alphabet, so that stops occur, overlap and are prefixes of each other.
_TEXT_ALPHABET = "ab \n."
texts = st.text(alphabet=_TEXT_ALPHABET, max_size=40)
stop_lists = st.lists(st.text(alphabet=_TEXT_ALPHABET, max_size=4), max_size=4)
max_tokens = st.none() | st.integers(min_value=0, max_value=20)


@st.composite
def splits(draw: st.DrawFn, text: str) -> list[str]:
    """``text`` cut into successive pieces (some empty) at random points."""
    cuts = draw(st.lists(st.integers(min_value=0, max_value=len(text)), max_size=8))
    points = [0, *sorted(cuts), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(points)]


def cumulative(pieces: list[str]) -> list[str]:
    return ["".join(pieces[: i + 1]) for i in range(len(pieces))]


# ----------------------------------------------------------------------------- normalize_log


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("plain\ntext", "plain\ntext"),
        ("a\r\nb\r\n", "a\nb\n"),
        ("a\rb", "a\rb"),  # a lone CR is kept
        (f"{ESC}[1;31mred{ESC}[0m", "red"),
        (f"{ESC}[?25lhidden cursor{ESC}[?25h", "hidden cursor"),
        (f"{ESC}[2K{ESC}[1Gline", "line"),
        (f"{ESC}]0;window title\x07text", "text"),  # OSC ended by BEL
        (f"{ESC}]8;;http://x{ESC}\\link{ESC}]8;;{ESC}\\", "link"),  # OSC ended by ST
        (f"{ESC}P1$r{ESC}\\text", "text"),  # DCS
        (f"{ESC}(Btext{ESC}7{ESC}8", "text"),  # nF and two-byte escapes
        (f"a{ESC}", "a"),  # a stray ESC
        (f"a{ESC}\nb", "a\nb"),
        (f"a\r{ESC}[K\nb", "a\nb"),  # CR ... LF once the code between them is gone
        (f"{ESC}[31", "31"),  # a CSI cut off: ESC [ is dropped as a two-byte escape
    ],
)
def test_normalize_log(raw: str, text: str) -> None:
    assert normalize_log(raw, strip_ansi=True) == text


def test_normalize_log_keeps_escapes_unless_asked() -> None:
    raw = f"{ESC}[31mred{ESC}[0m\r\n"
    assert normalize_log(raw, strip_ansi=False) == f"{ESC}[31mred{ESC}[0m\n"


def test_unterminated_osc_swallows_a_bounded_amount() -> None:
    body = "x" * 5000
    assert normalize_log(f"{ESC}]0;{body}", strip_ansi=True) == f"0;{body}"
    assert normalize_log(f"{ESC}]0;abc\x07{body}", strip_ansi=True) == body


# ----------------------------------------------------------------------------- LogCursor


def test_cursor_emits_only_new_text() -> None:
    cursor = LogCursor(strip_ansi=True)
    assert cursor.advance("") == ""
    assert cursor.advance("1+1=2.") == "1+1=2."
    assert cursor.advance("1+1=2.") == ""
    assert cursor.advance("1+1=2. When") == " When"
    assert cursor.text == "1+1=2. When"
    assert cursor.rewrites == 0


def test_cursor_holds_back_a_split_escape_sequence() -> None:
    cursor = LogCursor(strip_ansi=True)
    assert cursor.advance(f"red {ESC}") == "red "
    assert cursor.advance(f"red {ESC}[3") == ""
    assert cursor.advance(f"red {ESC}[31") == ""
    assert cursor.advance(f"red {ESC}[31mtext") == "text"
    assert cursor.advance(f"red {ESC}[31mtext{ESC}]0;ti") == ""
    assert cursor.advance(f"red {ESC}[31mtext{ESC}]0;title{ESC}") == ""
    assert cursor.advance(f"red {ESC}[31mtext{ESC}]0;title{ESC}\\!") == "!"
    assert cursor.text == "red text!"


def test_cursor_holds_back_a_cr_that_may_start_crlf() -> None:
    cursor = LogCursor(strip_ansi=False)
    assert cursor.advance("line\r") == "line"
    assert cursor.advance("line\r\nnext") == "\nnext"
    assert cursor.advance("line\r\nnext\r") == ""
    assert cursor.advance("line\r\nnext\rx") == "\rx"


def test_cursor_final_releases_what_was_held() -> None:
    cursor = LogCursor(strip_ansi=True)
    assert cursor.advance(f"done{ESC}[3") == "done"
    assert cursor.advance(f"done{ESC}[3", final=True) == "3"
    cursor = LogCursor(strip_ansi=True)
    assert cursor.advance("done\r") == "done"
    assert cursor.advance("done\r", final=True) == "\r"


def test_cursor_without_strip_passes_escapes_through() -> None:
    cursor = LogCursor(strip_ansi=False)
    assert cursor.advance(f"a{ESC}[3") == f"a{ESC}[3"
    assert cursor.advance(f"a{ESC}[31m") == "1m"


def test_cursor_long_unterminated_osc_is_eventually_released() -> None:
    cursor = LogCursor(strip_ansi=True)
    assert cursor.advance(f"a{ESC}]0;" + "x" * 100) == "a"
    out = cursor.advance(f"a{ESC}]0;" + "x" * 5000)
    assert out == "0;" + "x" * 5000


def test_cursor_waits_out_a_rewrite() -> None:
    cursor = LogCursor(strip_ansi=True)
    assert cursor.advance("Hello wor") == "Hello wor"
    assert cursor.advance("Hello, world") == ""  # rewritten: "Hello wor" is not a prefix
    assert cursor.diverged
    assert cursor.rewrites == 1
    assert cursor.advance("Hello, world!") == ""  # still diverged: counted once
    assert cursor.rewrites == 1
    assert cursor.advance("Hello world") == "ld"  # continues what was sent again
    assert not cursor.diverged
    assert cursor.advance("Hello world!") == "!"
    assert cursor.text == "Hello world!"


def test_cursor_waits_out_a_shrink() -> None:
    cursor = LogCursor(strip_ansi=True)
    assert cursor.advance("abcdef") == "abcdef"
    assert cursor.advance("abc") == ""
    assert cursor.rewrites == 1
    assert cursor.advance("abcdefgh") == "gh"
    assert cursor.advance("") == ""
    assert cursor.rewrites == 2


def test_cursor_ignores_rewrites_a_client_cannot_see() -> None:
    cursor = LogCursor(strip_ansi=True)
    assert cursor.advance(f"{ESC}[31mred") == "red"
    assert cursor.advance(f"{ESC}[32mred, green") == ", green"
    assert cursor.rewrites == 0


@settings(max_examples=300)
@given(data=st.data(), raw=raw_logs, strip=st.booleans())
def test_cursor_append_only_equals_one_shot(data: st.DataObject, raw: str, strip: bool) -> None:
    cursor = LogCursor(strip_ansi=strip)
    out = [cursor.advance(log) for log in cumulative(data.draw(splits(raw)))]
    out.append(cursor.advance(raw, final=True))
    assert "".join(out) == normalize_log(raw, strip)
    assert cursor.text == normalize_log(raw, strip)
    assert cursor.rewrites == 0
    # Every intermediate result was already final text.
    emitted = ""
    for piece in out:
        emitted += piece
        assert normalize_log(raw, strip).startswith(emitted)


@settings(max_examples=300)
@given(
    logs=st.lists(raw_logs | st.sampled_from(["", "Hello", "Hello world"]), max_size=8),
    last=raw_logs,
    strip=st.booleans(),
)
def test_cursor_with_rewrites_never_repeats_or_garbles(
    logs: list[str], last: str, strip: bool
) -> None:
    cursor = LogCursor(strip_ansi=strip)
    emitted = ""
    for log in [*logs, last]:
        delta = cursor.advance(log)
        emitted += delta
        assert cursor.text == emitted
        if delta:
            # What was sent, all of it, is a prefix of the log as it stands now.
            assert normalize_log(log, strip).startswith(emitted)
    final_text = normalize_log(last, strip)
    delta = cursor.advance(last, final=True)
    if final_text.startswith(emitted):
        assert emitted + delta == final_text  # the job's whole text, once
    else:
        assert delta == ""
        assert cursor.diverged
        assert cursor.rewrites >= 1


@settings(max_examples=200)
@given(
    base=st.text(alphabet="ab ", min_size=1, max_size=10),
    extra=st.text(alphabet="ab ", max_size=10),
    rewrite=st.text(alphabet="xy", min_size=1, max_size=5),
)
def test_cursor_rewrite_then_recovery(base: str, extra: str, rewrite: str) -> None:
    cursor = LogCursor()
    assert cursor.advance(base) == base
    assert cursor.advance(rewrite) == ""
    assert cursor.rewrites == 1
    assert cursor.advance(base + extra) == extra
    assert cursor.text == base + extra


# ----------------------------------------------------------------------------- StopCutter


def test_stop_cutter_split_stop() -> None:
    cutter = StopCutter(["\nUser:"])
    assert cutter.feed("Sure.\nUs") == ("Sure.", False)
    assert cutter.feed("e") == ("", False)
    assert cutter.feed("r: more") == ("", True)
    assert cutter.feed("anything") == ("", True)
    assert cutter.flush() == ""


def test_stop_cutter_releases_a_false_alarm() -> None:
    cutter = StopCutter(["END"])
    assert cutter.feed("the EN") == ("the ", False)
    assert cutter.feed("D") == ("", True)
    cutter = StopCutter(["END"])
    assert cutter.feed("the EN") == ("the ", False)
    assert cutter.feed("Dx") == ("", True)
    cutter = StopCutter(["END"])
    assert cutter.feed("the EN") == ("the ", False)
    assert cutter.feed("ough") == ("ENough", False)
    assert cutter.feed(" E") == (" ", False)
    assert cutter.flush() == "E"


def test_stop_cutter_prefers_the_earliest_stop() -> None:
    # "b" is complete first, but "abc" may still start earlier: wait and see.
    cutter = StopCutter(["abc", "b"])
    assert cutter.feed("xab") == ("x", False)
    assert cutter.feed("c") == ("", True)
    cutter = StopCutter(["abc", "b"])
    assert cutter.feed("xab") == ("x", False)
    assert cutter.feed("d") == ("a", True)


def test_stop_cutter_ignores_empty_stops() -> None:
    cutter = StopCutter(["", ""])
    assert cutter.feed("text") == ("text", False)
    assert cut_at_stop("text", [""]) == ("text", False)


def test_stop_cutter_flush_cuts_a_held_stop() -> None:
    cutter = StopCutter(["abc", "b"])
    assert cutter.feed("xab") == ("x", False)
    assert cutter.flush() == "a"
    assert cutter.stopped


@settings(max_examples=300)
@given(data=st.data(), text=texts, stops=stop_lists)
def test_stop_cutter_equals_one_shot(data: st.DataObject, text: str, stops: list[str]) -> None:
    cutter = StopCutter(stops)
    out: list[str] = []
    stopped = False
    for piece in data.draw(splits(text)):
        emitted, stopped_now = cutter.feed(piece)
        assert not (stopped and emitted)
        out.append(emitted)
        stopped = stopped or stopped_now
        for stop in filter(None, stops):
            assert stop not in "".join(out)
    if not stopped:
        out.append(cutter.flush())
    expected, found = cut_at_stop(text, stops)
    assert "".join(out) == expected
    assert cutter.stopped == found


# ----------------------------------------------------------------------------- ChoiceText


def test_choice_text_stop() -> None:
    choice = ChoiceText(["\n\nUser:"], max_tokens=None)
    assert choice.feed("Paris.") == ("Paris.", None)
    assert choice.feed("\n\nUse") == ("", None)
    assert choice.feed("r: and") == ("", "stop")
    assert choice.feed("more") == ("", "stop")
    assert choice.finish() == ("", "stop")
    assert choice.text == "Paris."
    assert choice.completion_tokens == count_tokens("Paris.")
    assert choice.finish_reason == "stop"


def test_choice_text_length_cut_is_exact() -> None:
    choice = ChoiceText([], max_tokens=3)
    assert choice.feed("Hel") == ("Hel", None)
    assert choice.feed("lo wo") == ("lo wo", None)  # "Hell" "o" " wo": 3 tokens, may grow
    assert choice.feed("rld") == ("rl", "length")  # " worl" is the 3rd token
    assert choice.text == "Hello worl"
    assert choice.completion_tokens == 3
    assert choice.feed("more") == ("", "length")
    assert choice.finish() == ("", "length")


def test_choice_text_finish_without_stop() -> None:
    choice = ChoiceText(["STOP"], max_tokens=10)
    assert choice.feed("a ST") == ("a ", None)
    assert choice.finish() == ("ST", "stop")
    assert choice.text == "a ST"
    assert choice.finish() == ("", "stop")


def test_choice_text_finish_can_be_length() -> None:
    # The held-back "S" turns out to be text, and one token too many.
    choice = ChoiceText(["ST"], max_tokens=1)
    assert choice.feed("abcdS") == ("abcd", None)
    assert choice.finish() == ("", "length")
    assert choice.text == "abcd"


def test_choice_text_exactly_max_tokens_is_stop() -> None:
    choice = ChoiceText([], max_tokens=2)
    assert choice.feed("Hello") == ("Hello", None)
    assert choice.finish() == ("", "stop")
    assert cut_final("Hello", [], 2) == ("Hello", "stop")


def test_negative_max_tokens_is_refused() -> None:
    with pytest.raises(ValueError):
        ChoiceText([], max_tokens=-1)
    with pytest.raises(ValueError):
        cut_final("x", [], -1)


def test_cut_final() -> None:
    assert cut_final("Hello world. STOP more", ["STOP"], None) == ("Hello world. ", "stop")
    assert cut_final("Hello world", [], 2) == ("Hello", "length")
    assert cut_final("Hello STOP", ["STOP"], 2) == ("Hello", "length")
    assert cut_final("Hello STOP", ["STOP"], 3) == ("Hello ", "stop")
    assert cut_final("", ["x"], 0) == ("", "stop")


def _run_choice(pieces: list[str], stops: list[str], limit: int | None) -> tuple[str, str]:
    choice = ChoiceText(stops, limit)
    out: list[str] = []
    reason: str | None = None
    for piece in pieces:
        emitted, now = choice.feed(piece)
        if reason is not None:
            assert (emitted, now) == ("", reason)
        out.append(emitted)
        reason = reason or now
        assert choice.text == "".join(out)
    rest, final_reason = choice.finish()
    if reason is not None:
        assert (rest, final_reason) == ("", reason)
    out.append(rest)
    assert choice.text == "".join(out)
    assert choice.completion_tokens == count_tokens(choice.text)
    assert choice.finish_reason == final_reason
    return "".join(out), final_reason


@settings(max_examples=300)
@given(data=st.data(), text=texts, stops=stop_lists, limit=max_tokens)
def test_choice_text_equals_cut_final(
    data: st.DataObject, text: str, stops: list[str], limit: int | None
) -> None:
    pieces = data.draw(splits(text))
    assert _run_choice(pieces, stops, limit) == cut_final(text, stops, limit)


@settings(max_examples=200)
@given(data=st.data(), raw=raw_logs, stops=stop_lists, limit=max_tokens, strip=st.booleans())
def test_log_to_client_pipeline_equals_one_shot(
    data: st.DataObject, raw: str, stops: list[str], limit: int | None, strip: bool
) -> None:
    # Polls of a growing log -> LogCursor -> ChoiceText, as the service wires them.
    cursor = LogCursor(strip_ansi=strip)
    deltas = [cursor.advance(log) for log in cumulative(data.draw(splits(raw)))]
    deltas.append(cursor.advance(raw, final=True))
    assert _run_choice(deltas, stops, limit) == cut_final(normalize_log(raw, strip), stops, limit)


# ----------------------------------------------------------------------------- promptness
#
# The properties above fix *what* a client receives. These fix *when* the answer ends: at the
# poll where the cut became certain, never later (the job may run on for minutes).


def _cut_is_certain(text: str, stops: list[str]) -> bool:
    """Whether ``text`` already decides where a stop sequence cuts it, whatever follows."""
    stops = [s for s in stops if s]
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    if not found:
        return False
    hit = min(found)
    # No earlier position may still become the start of a stop once more text arrives.
    return not any(
        len(text) - j < len(s) and s.startswith(text[j:]) for j in range(hit) for s in stops
    )


@settings(max_examples=300)
@given(data=st.data(), text=texts, stops=stop_lists)
def test_stop_ends_the_choice_at_the_poll_that_decides_it(
    data: st.DataObject, text: str, stops: list[str]
) -> None:
    choice = ChoiceText(stops, max_tokens=None)
    seen = ""
    for piece in data.draw(splits(text)):
        seen += piece
        _, reason = choice.feed(piece)
        assert (reason == "stop") == _cut_is_certain(seen, stops), seen


@settings(max_examples=300)
@given(data=st.data(), text=texts, limit=st.integers(min_value=0, max_value=20))
def test_length_ends_the_choice_at_the_first_token_too_many(
    data: st.DataObject, text: str, limit: int
) -> None:
    choice = ChoiceText([], max_tokens=limit)
    seen = ""
    for piece in data.draw(splits(text)):
        seen += piece
        _, reason = choice.feed(piece)
        assert (reason == "length") == (count_tokens(seen) > limit), seen
    assert choice.text == cut_final(text, [], limit)[0]


# ----------------------------------------------------------------------------- richer text

# Pieces whose tokens differ in kind: letter and digit runs longer than a token, CJK, emoji,
# underscores, punctuation, and whitespace runs longer than one whitespace token.
_RICH_PIECES = ["a", "Zz", "12345", "héllo", "中文", "😀", "_", "...", "!", " ", "\n", "\t"]
rich_texts = st.lists(st.sampled_from([*_RICH_PIECES, " " * 20, "\n\n"]), max_size=30).map("".join)
rich_stops = st.lists(
    st.lists(st.sampled_from(_RICH_PIECES), min_size=1, max_size=3).map("".join), max_size=4
)


@settings(max_examples=300)
@given(data=st.data(), text=rich_texts, stops=rich_stops, limit=max_tokens)
def test_choice_text_equals_cut_final_on_rich_text(
    data: st.DataObject, text: str, stops: list[str], limit: int | None
) -> None:
    assert _run_choice(data.draw(splits(text)), stops, limit) == cut_final(text, stops, limit)


# ----------------------------------------------------------------------------- rewritten logs


@settings(max_examples=300)
@given(
    logs=st.lists(raw_logs | st.sampled_from(["", "Hello", "Hello world", "a b."]), max_size=8),
    last=raw_logs,
    stops=stop_lists,
    limit=max_tokens,
    strip=st.booleans(),
)
def test_rewritten_logs_still_stream_the_cut_text(
    logs: list[str], last: str, stops: list[str], limit: int | None, strip: bool
) -> None:
    # Polls need not be cumulative (the upstream may rewrite or shrink a log): the client
    # still receives exactly the cut of what the cursor passed on, never a stop sequence, and
    # when the log ends up continuing what was sent, exactly the cut of the job's final text.
    cursor = LogCursor(strip_ansi=strip)
    deltas = [cursor.advance(log) for log in logs]
    deltas.append(cursor.advance(last, final=True))
    streamed = _run_choice(deltas, stops, limit)
    assert streamed == cut_final(cursor.text, stops, limit)
    if not cursor.diverged:
        assert streamed == cut_final(normalize_log(last, strip), stops, limit)
