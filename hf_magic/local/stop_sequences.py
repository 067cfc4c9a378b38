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

    Each push decodes only a short window: the tokens since the last point where the text was stable (a
    complete character), with the token before it for context, so leading spaces and merges decode as they
    do in the whole reply. That keeps a reply of n tokens at O(n) decoding work, where re-decoding the whole
    reply per token was O(n^2). The same scheme as text-generation-inference's streaming decode.

    Args:
        decode: turns token ids into text (the tokenizer's ``decode``).
        stop: stop sequences; after one appears, ``stopped`` is True and nothing more is emitted.
    """

    def __init__(self, decode: Callable[[list[int]], str], stop: Sequence[str] = ()) -> None:
        self._decode = decode
        self._stop = [s for s in stop if s]
        self.token_ids: list[int] = []
        self.stopped = False
        self.tokens_at_stop: int | None = None
        self._prefix_offset = 0  # the window starts here: the token before the last stable point
        self._read_offset = 0  # the text of tokens before this is known
        self._pending = ""  # decoded, not shown yet: it may be the start of a stop sequence
        self._shown: list[str] = []

    @property
    def emitted(self) -> str:
        """Everything shown so far."""
        return "".join(self._shown)

    def push(self, ids: Sequence[int]) -> str:
        """Add newly generated ids; return the text that can be shown now."""
        if self.stopped:
            return ""
        self.token_ids.extend(ids)
        new = self._new_text(final=False)
        if not new:
            return ""
        self._pending += new
        if not self._stop:
            return self._show(len(self._pending))
        cut, found = trim_at_stop(self._pending, self._stop)
        if found:
            self.stopped = True
            self.tokens_at_stop = len(self.token_ids)
            return self._show(len(cut), drop_rest=True)
        # A stop sequence never starts in shown text (its possible start is held back), so the pending text is
        # all that needs searching.
        return self._show(len(self._pending) - held_back_length(self._pending, self._stop))

    def finish(self) -> str:
        """Flush what was held back once generation has ended."""
        if self.stopped:
            return ""
        self._pending += self._new_text(final=True)
        return self._show(len(trim_at_stop(self._pending, self._stop)[0]), drop_rest=True)

    def _new_text(self, final: bool) -> str:
        """The text the tokens past ``_read_offset`` add; "" while it ends mid-character (unless ``final``)."""
        if len(self.token_ids) == self._read_offset:
            return ""
        window = self.token_ids[self._prefix_offset :]
        known = self._decode(self.token_ids[self._prefix_offset : self._read_offset]) if self._read_offset else ""
        text = self._decode(window)
        if final:
            text = text.rstrip("\ufffd")
        elif text.endswith("\ufffd") or len(text) <= len(known) or not text.startswith(known):
            # Half a multi-byte character, or text that is not stable yet (a merge still undecided): wait for
            # more tokens, the window grows until it is.
            return ""
        self._prefix_offset, self._read_offset = self._read_offset, len(self.token_ids)
        return text[len(known) :]  # at the end, an unstable window's text past the known part is the best there is

    def _show(self, end: int, drop_rest: bool = False) -> str:
        shown, self._pending = self._pending[:end], "" if drop_rest else self._pending[end:]
        if shown:
            self._shown.append(shown)
        return shown
