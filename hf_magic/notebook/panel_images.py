"""Images attached in the panel: ipywidgets ``FileUpload`` entries as image blocks, and their thumbnails."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from ..errors import ImageError
from ..images import decode_image, image_block
from .turn_drawing import images_html


def attached_images(uploads: Sequence[Any]) -> list[dict[str, Any]]:
    """Image blocks for ``FileUpload.value`` entries (``name``, ``type``, ``content``...), in upload order.

    Raises:
        ImageError: an uploaded file that is not an image.
    """
    blocks = []
    for upload in uploads:
        name, data = str(upload.get("name", "The upload")), bytes(upload["content"])
        try:
            decode_image(data, name)  # refuse it now, with its name, not when the model reads the prompt
        except ImageError as exc:
            raise ImageError(f"{name} is not an image: attach a PNG, JPEG, WebP or GIF.") from exc
        blocks.append(image_block(data))
    return blocks


def attachment_summary(uploads: Sequence[Any]) -> str:
    """What the panel shows of the images waiting to go with the next message: thumbnails and names."""
    if not uploads:
        return ""
    try:
        thumbnails = images_html(attached_images(uploads))
    except ImageError as exc:
        return f'<span style="color:#c62828">{html.escape(str(exc))}</span>'
    names = ", ".join(html.escape(str(upload.get("name", "image"))) for upload in uploads)
    return f'<div class="hfm-attachments">{thumbnails}<small>Attached: {names}</small></div>'
