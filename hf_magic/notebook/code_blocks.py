"""The fenced code blocks of a reply (what ``-f code`` puts into a new cell), found by the Markdown parser."""

from __future__ import annotations

from .turn_drawing import _markdown_parser


def fenced_code(markdown: str) -> list[str]:
    """The contents of the fenced code blocks of ``markdown``, in order, without their fences.

    A CommonMark parser decides what a block is, so an unclosed fence (a reply cut by ``max_new_tokens``) still
    counts up to the end, and backticks inside a block or in inline code do not start one.
    """
    return [
        token.content for token in _markdown_parser().parse(markdown) if token.type == "fence" and token.content.strip()
    ]


def code_cell_text(markdown: str) -> str | None:
    """What a new cell gets from a reply: its code blocks one after another, or ``None`` if it has none."""
    blocks = fenced_code(markdown)
    return "\n\n".join(block.rstrip("\n") for block in blocks) if blocks else None
