"""IncrementalDecoder and stop-sequence trimming, with a character-level stand-in tokenizer."""

from __future__ import annotations

import pytest

from hf_magic.local.stop_sequences import IncrementalDecoder, held_back_length, trim_at_stop


def char_decode(ids: list[int]) -> str:
    return "".join(chr(i) for i in ids)


def push_text(decoder: IncrementalDecoder, text: str) -> list[str]:
    return [decoder.push([ord(c)]) for c in text]


def test_trim_at_stop_cuts_before_the_earliest_sequence():
    assert trim_at_stop("one, two. three\n\nfour", ["\n\n", "."]) == ("one, two", True)
    assert trim_at_stop("nothing here", ["STOP"]) == ("nothing here", False)
    assert trim_at_stop("abc", []) == ("abc", False)


@pytest.mark.parametrize(
    ("text", "stops", "expected"),
    [("hello wor", ["world"], 3), ("hello", ["xyz"], 0), ("a<|e", ["<|end|>"], 3), ("xen", ["end"], 2)],
)
def test_held_back_length_is_the_longest_stop_prefix_at_the_end(text, stops, expected):
    assert held_back_length(text, stops) == expected


def test_decoder_streams_everything_without_stops():
    decoder = IncrementalDecoder(char_decode)
    pieces = push_text(decoder, "Paris.")
    assert "".join(pieces) + decoder.finish() == "Paris."
    assert not decoder.stopped


def test_decoder_never_shows_a_multi_character_stop_sequence():
    decoder = IncrementalDecoder(char_decode, stop=["END"])
    pieces = push_text(decoder, "abc ENxEND tail")
    shown = "".join(pieces) + decoder.finish()
    assert shown == "abc ENx"
    assert decoder.stopped
    assert decoder.tokens_at_stop == len("abc ENxEND")
    # "EN" was held back while it could still have become "END", then released with "x".
    assert pieces[4:7] == ["", "", "ENx"]


def test_decoder_flushes_held_back_text_at_the_end():
    decoder = IncrementalDecoder(char_decode, stop=["STOP"])
    pieces = push_text(decoder, "go ST")
    assert "".join(pieces) == "go "
    assert decoder.finish() == "ST"


def test_decoder_waits_for_incomplete_multibyte_characters():
    # A byte-level tokenizer decodes half a character as U+FFFD until the rest arrives.
    outputs = {1: "\ufffd", 2: "é"}
    decoder = IncrementalDecoder(lambda ids: outputs[len(ids)])
    assert decoder.push([0]) == ""
    assert decoder.push([0]) == "é"


def test_decoder_ignores_tokens_after_a_stop():
    decoder = IncrementalDecoder(char_decode, stop=["."])
    push_text(decoder, "Hi. more")
    assert decoder.emitted == "Hi"
    assert decoder.push([ord("x")]) == ""


def _words_decode(calls: list[int]):
    """A SentencePiece-like decoder: "▁" marks a space, dropped at the start of what is decoded; records how many
    ids each call decodes."""
    vocab = ["▁Hello", ",", "▁wor", "ld", "!", "▁It", "'s", "▁me", "."]

    def decode(ids: list[int]) -> str:
        calls.append(len(ids))
        return "".join(vocab[i] for i in ids).replace("▁", " ").lstrip(" ")

    return decode


def test_decoder_decodes_a_short_window_per_token_not_the_whole_reply():
    calls: list[int] = []
    decode = _words_decode(calls)
    ids = list(range(9)) * 40  # 360 tokens
    decoder = IncrementalDecoder(decode)
    shown = "".join(decoder.push([token]) for token in ids) + decoder.finish()
    assert shown == decode(ids)  # leading spaces kept exactly as the whole reply decodes
    assert max(calls[:-1]) <= 2  # each push decoded the new token and the one before it, never the reply


def test_decoder_window_keeps_stop_sequences_across_token_boundaries():
    decoder = IncrementalDecoder(_words_decode([]), stop=["world!"])
    pieces = [decoder.push([token]) for token in [0, 1, 2, 3, 4, 5]]
    assert "".join(pieces) + decoder.finish() == "Hello, "
    assert decoder.stopped and decoder.tokens_at_stop == 5
