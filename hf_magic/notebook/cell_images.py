"""The images a ``%%hfchat`` cell sends: ``--image`` paths and URLs, and with ``-i`` the ``{name}`` fields whose
value is a PIL image or a matplotlib Figure (sent as the image, named in the text as ``[image N]``)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..images import image_block, is_image_value


class ImageFields:
    """``interpolate``'s value converter: an image value becomes an image block and ``[image N]`` in the text,
    anything else what ``otherwise`` writes (``str()``). ``blocks`` holds the images in the order the fields appear."""

    def __init__(self, first_number: int = 1, otherwise: Callable[[Any], str] = str) -> None:
        self.blocks: list[dict[str, Any]] = []
        self._first = first_number
        self._otherwise = otherwise

    def __call__(self, value: Any) -> str:
        if not is_image_value(value):
            return self._otherwise(value)
        self.blocks.append(image_block(value))
        return f"[image {self._first + len(self.blocks) - 1}]"


def option_images(references: Sequence[str] | None) -> list[dict[str, Any]]:
    """Image blocks for ``--image`` values: local files are read now (a missing one fails before any load) and
    their path is kept in the block's ``extras``; URLs are kept as URLs (the endpoint's server fetches them; a local
    model fetches them when it reads the prompt).

    Raises:
        ImageError: a file that cannot be read or is not an image.
    """
    blocks = []
    for reference in references or ():
        block = image_block(reference)
        if "base64" in block and not reference.startswith("data:"):  # a file: the turn log names it, not its pixels
            block["extras"] = {"path": str(_local_path(reference))}
        blocks.append(block)
    return blocks


def _local_path(reference: str) -> Path:
    """The file an ``--image`` value names (a plain path, ``~/...`` or ``file://...``), absolute."""
    if reference.startswith("file:"):
        reference = urllib.parse.unquote(urllib.parse.urlparse(reference).path)
    return Path(reference).expanduser().resolve()
