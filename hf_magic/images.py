"""Image content blocks: langchain's standard image blocks (and OpenAI ``image_url`` parts) read, made and converted.

One home for images, shared by both backends and the notebook: the endpoint sends OpenAI ``image_url`` parts
(local files and bytes as data URLs, http(s) URLs as they are), the local pipeline hands PIL images to the
model's processor, and the notebook turns paths, URLs, PIL images and matplotlib figures into blocks.
Pillow is imported only when an image is decoded or encoded.
"""

from __future__ import annotations

import base64
import binascii
import io
import mimetypes
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ImageError

URL_TIMEOUT_S = 20.0
"""How long fetching an http(s) image may take before it counts as unreachable."""

_IMAGE_TYPES = ("image", "image_url", "input_image")


@dataclass(frozen=True)
class ImageSource:
    """Where an image block's pixels are: ``data`` (encoded file bytes) or a remote ``url`` (http/https)."""

    data: bytes | None = None
    url: str | None = None
    mime_type: str | None = None

    @property
    def label(self) -> str:
        """A short name for messages and Markdown references."""
        return self.url or f"{self.mime_type or 'image'} ({len(self.data or b''):,} bytes)"


def is_image_block(block: Any) -> bool:
    """Whether ``block`` is an image content block, in langchain's standard (v1 or v0) or OpenAI's format."""
    return isinstance(block, dict) and block.get("type") in _IMAGE_TYPES


def content_images(content: Any) -> list[dict[str, Any]]:
    """The image blocks of a message's content, in order."""
    return [block for block in content if is_image_block(block)] if isinstance(content, list) else []


def messages_have_images(messages: list[dict[str, Any]]) -> bool:
    return any(content_images(message.get("content")) for message in messages)


def image_source(block: dict[str, Any]) -> ImageSource:
    """Where the block's image is; a local path (plain, ``~``, or ``file://``) is read now.

    Raises:
        ImageError: a block with no image in it, bad base64, a provider file id, or an unreadable file.
    """
    mime = block.get("mime_type")
    if block.get("type") in ("image_url", "input_image"):  # OpenAI chat / responses formats
        inner = block.get("image_url")
        reference = inner.get("url") if isinstance(inner, dict) else inner
    elif block.get("base64") is not None or block.get("source_type") == "base64":
        return ImageSource(data=_decode_base64(block.get("base64") or block.get("data") or ""), mime_type=mime)
    elif block.get("file_id") or block.get("source_type") == "id":
        raise ImageError("Image blocks with a provider file_id cannot be read here: send base64 data, a URL or a path.")
    else:
        reference = block.get("url") or block.get("path") or (block.get("data") if block.get("source_type") else None)
    if not isinstance(reference, str) or not reference:
        raise ImageError(f"This image block has no image in it ({sorted(block)}): give url, base64 or path.")
    return source_of_reference(reference, mime)


def source_of_reference(reference: str, mime_type: str | None = None) -> ImageSource:
    """An ``ImageSource`` for a data URL, an http(s) URL, or a local path (read now).

    Raises:
        ImageError: bad data URL, unreadable file.
    """
    if reference.startswith("data:"):
        header, _, payload = reference.partition(",")
        if ";base64" not in header:
            raise ImageError("Only base64 data URLs are supported for images: data:image/png;base64,...")
        return ImageSource(data=_decode_base64(payload), mime_type=header[5:].split(";")[0] or mime_type)
    scheme = urllib.parse.urlparse(reference).scheme.lower()
    if scheme in ("http", "https"):
        return ImageSource(url=reference, mime_type=mime_type)
    path = Path(urllib.parse.unquote(urllib.parse.urlparse(reference).path) if scheme == "file" else reference)
    path = path.expanduser()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"Cannot read the image file {str(path)!r} ({exc.strerror or exc}): check the path.") from exc
    return ImageSource(data=data, mime_type=mime_type or mimetypes.guess_type(path.name)[0])


def _decode_base64(payload: str) -> bytes:
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError("The image's base64 data does not decode: send the file's bytes base64-encoded.") from exc


def fetch(url: str) -> bytes:
    """The bytes at an http(s) URL.

    Raises:
        ImageError: offline, unreachable, or an HTTP error.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "hf_magic"})
    try:
        with urllib.request.urlopen(request, timeout=URL_TIMEOUT_S) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as exc:
        raise ImageError(f"Fetching the image {url} failed with HTTP {exc.code}: check the URL.") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ImageError(
            f"Cannot fetch the image {url} ({reason}): this machine may be offline; download it and pass a local path."
        ) from exc


def source_bytes(source: ImageSource) -> bytes:
    """The encoded image, fetched when it is a URL."""
    return source.data if source.data is not None else fetch(source.url or "")


def load_image(block: dict[str, Any]) -> Any:
    """The block's image as an RGB ``PIL.Image.Image`` (URLs are fetched).

    Raises:
        ImageError: see ``image_source`` and ``fetch``; or bytes that are not an image Pillow can read.
    """
    source = image_source(block)
    return decode_image(source_bytes(source), source.label)


def decode_image(data: bytes, label: str = "image") -> Any:
    """Encoded bytes as an RGB ``PIL.Image.Image``.

    Raises:
        ImageError: not an image Pillow can read.
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:
        raise ImageError("Reading images needs Pillow: run `pip install pillow`.") from exc
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageError(f"{label} is not an image Pillow can read (PNG, JPEG, WebP, GIF...): check the file.") from exc
    return image.convert("RGB")


def data_url(data: bytes, mime_type: str | None) -> str:
    return f"data:{mime_type or 'image/png'};base64,{base64.b64encode(data).decode('ascii')}"


def to_openai_image_part(block: dict[str, Any]) -> dict[str, Any]:
    """The block as an OpenAI ``image_url`` part: URLs kept (the server fetches them), anything else a data URL.

    Raises:
        ImageError: see ``image_source``.
    """
    source = image_source(block)
    if source.url is not None:
        return {"type": "image_url", "image_url": {"url": source.url}}
    assert source.data is not None
    return {"type": "image_url", "image_url": {"url": data_url(source.data, source.mime_type or _sniff(source.data))}}


def _sniff(data: bytes) -> str:
    """The mime type of common image files from their first bytes (for bytes that came without one)."""
    signatures = {b"\x89PNG": "image/png", b"\xff\xd8": "image/jpeg", b"GIF8": "image/gif", b"RIFF": "image/webp"}
    return next((mime for magic, mime in signatures.items() if data.startswith(magic)), "image/png")


def image_block(value: Any) -> dict[str, Any]:
    """A langchain standard image block for a PIL image, a matplotlib Figure, raw bytes, a URL or a local path.

    Local files are read now, so the block stays valid when the file changes or the transcript is exported.

    Raises:
        ImageError: an unreadable file, or a value that is not an image.
    """
    if isinstance(value, bytes):
        return {"type": "image", "base64": base64.b64encode(value).decode("ascii"), "mime_type": _sniff(value)}
    if isinstance(value, (str, Path)):
        source = source_of_reference(str(value))
        if source.url is not None:
            return {"type": "image", "url": source.url}
        assert source.data is not None
        decode_image(source.data, repr(str(value)))  # refuse a non-image now, not at generation time
        mime = source.mime_type or _sniff(source.data)
        return {"type": "image", "base64": base64.b64encode(source.data).decode("ascii"), "mime_type": mime}
    if callable(getattr(value, "savefig", None)):  # a matplotlib Figure
        buffer = io.BytesIO()
        value.savefig(buffer, format="png", bbox_inches="tight")
        return image_block(buffer.getvalue())
    if callable(getattr(value, "save", None)) and hasattr(value, "mode") and hasattr(value, "size"):  # PIL image
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return image_block(buffer.getvalue())
    raise ImageError(
        f"Cannot make an image of a {type(value).__name__}: pass a path, a URL, a PIL image or a matplotlib Figure."
    )


def is_image_value(value: Any) -> bool:
    """Whether ``value`` is an in-memory image ``image_block`` takes: a PIL image or a matplotlib Figure."""
    is_figure = callable(getattr(value, "savefig", None)) and hasattr(value, "canvas")
    is_pil = type(value).__module__.startswith("PIL.") and hasattr(value, "mode") and hasattr(value, "size")
    return is_figure or is_pil


def block_data_url(block: dict[str, Any], *, fetch_urls: bool = False) -> str | None:
    """The block as a data URL (for export and thumbnails); ``None`` for a remote URL unless ``fetch_urls``."""
    try:
        source = image_source(block)
        if source.url is not None and not fetch_urls:
            return None
        data = source_bytes(source)
    except ImageError:
        return None
    return data_url(data, source.mime_type or _sniff(data))


def thumbnail_data_url(block: dict[str, Any], size: int = 96) -> str | None:
    """A small PNG of the block's image as a data URL (``None`` when it cannot be read without the network)."""
    try:
        source = image_source(block)
        if source.data is None:
            return None
        image = decode_image(source.data, source.label)
    except ImageError:
        return None
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return data_url(buffer.getvalue(), "image/png")


def block_reference(block: dict[str, Any]) -> str:
    """How Markdown export names an image: its URL, or a description of embedded data."""
    try:
        return image_source(block).label
    except ImageError:
        return "image"


def exportable_block(block: dict[str, Any]) -> dict[str, Any]:
    """The block as a self-contained ``{"type": "image", "url": ...}``: a data URL, or the remote URL it names."""
    url = block_data_url(block)
    return {"type": "image", "url": url if url is not None else block_reference(block)}


def embed_local_images(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` with every image part as an OpenAI ``image_url`` that a remote server can read: local files
    and bytes as data URLs, http(s) URLs as they are. Messages without images are returned as they were.

    Raises:
        ImageError: an image file that cannot be read.
    """
    embedded = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list) and content_images(content):
            parts = [to_openai_image_part(part) if is_image_block(part) else part for part in content]
            message = {**message, "content": parts}
        embedded.append(message)
    return embedded
