"""Turning a growing list of generated token ids into text deltas, honouring stop sequences.

Stop sequences are matched on decoded text, not on token ids, so a stop string that spans several
tokens (or starts mid-token) is still found. Text that could be the start of a stop string is held
back until it is clear, so a stream never shows part of a stop sequence that is then cut.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def trim_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` cut before the earliest stop sequence, and whether one was found."""
    cut = min((index for s in stop if s and (index := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def held_back_length(text: str, stop: Sequence[str]) -> int:
    """How many trailing characters of ``text`` might be the beginning of a stop sequence."""
    longest = 0
    for s in stop:
        for size in range(min(len(s) - 1, len(text)), longest, -1):
            if s.startswith(text[-size:]):
                longest = size
                break
    return longest


class IncrementalDecoder:
    """Accumulates generated token ids and yields the new, safe-to-show text after each push.

    Args:
        decode: turns the ids generated so far into text (the tokenizer's ``decode``).
        stop: stop sequences; after one appears, ``stopped`` is True and nothing more is emitted.
    """

    def __init__(self, decode: Callable[[list[int]], str], stop: Sequence[str] = ()) -> None:
        self._decode = decode
        self._stop = [s for s in stop if s]
        self.token_ids: list[int] = []
        self.emitted = ""
        self.stopped = False
        self.tokens_at_stop: int | None = None

    def push(self, ids: Sequence[int]) -> str:
        """Add newly generated ids; return the text that can be shown now."""
        if self.stopped:
            return ""
        self.token_ids.extend(ids)
        text = self._decode(self.token_ids)
        if text.endswith("\ufffd"):  # a multi-byte character is still incomplete
            return ""
        if self._stop:
            cut, found = trim_at_stop(text, self._stop)
            if found:
                self.stopped = True
                self.tokens_at_stop = len(self.token_ids)
                return self._advance(cut)
            text = text[: len(text) - held_back_length(text, self._stop)]
        return self._advance(text)

    def finish(self) -> str:
        """Flush what was held back once generation has ended."""
        if self.stopped:
            return ""
        text = self._decode(self.token_ids).rstrip("\ufffd")
        return self._advance(trim_at_stop(text, self._stop)[0])

    def _advance(self, text: str) -> str:
        if not text.startswith(self.emitted):
            # Decoding is not always prefix-stable (a space merged with the next token): never
            # take back what was shown, only append what is new past it.
            return ""
        delta = text[len(self.emitted) :]
        self.emitted = text
        return delta
