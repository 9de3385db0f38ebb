"""Incremental UTF-8 decoding and stop strings."""

from __future__ import annotations

from llamahomed.engine.worker.detok import IncrementalText, StopMatcher, TextOutput


def test_a_multibyte_character_split_over_tokens_comes_out_whole() -> None:
    text = IncrementalText()
    snowman = "☃".encode()  # three bytes, as three byte-fallback tokens would give them
    pieces = [text.feed(snowman[:1]), text.feed(snowman[1:2]), text.feed(snowman[2:] + b"!")]
    assert pieces == ["", "", "☃!"]
    assert text.flush() == ""


def test_an_invalid_sequence_becomes_a_replacement_character_at_the_end() -> None:
    text = IncrementalText()
    assert text.feed(b"ab\xe2\x98") == "ab"
    assert text.flush() == "\ufffd"


def test_stop_strings_are_never_emitted_even_when_split() -> None:
    stops = StopMatcher(("END",))
    out = []
    for piece in ["hello E", "N", "D tail"]:
        text, hit = stops.push(piece)
        out.append(text)
        if hit:
            break
    assert "".join(out) == "hello "
    assert hit


def test_a_false_start_of_a_stop_string_is_released() -> None:
    stops = StopMatcher(("END",))
    assert stops.push("an E") == ("an ", False)
    assert stops.push("Xtra") == ("EXtra", False)
    assert stops.flush() == ""


def test_the_earliest_of_several_stop_strings_wins() -> None:
    stops = StopMatcher(("world", "lo"))
    assert stops.push("hello world") == ("hel", True)
    assert stops.matched == "lo"


def test_the_stop_string_that_was_hit_is_kept_even_when_split() -> None:
    out = TextOutput(("zzz", "END"))
    assert out.feed(b"abc E") == ("abc ", False)
    assert out.matched is None
    assert out.feed(b"ND!") == ("", True)
    assert out.matched == "END"


def test_no_stops_passes_text_through() -> None:
    stops = StopMatcher(())
    assert stops.push("abc") == ("abc", False)
