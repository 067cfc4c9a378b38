"""Image blocks: reading every accepted form, making blocks from notebook objects, and the endpoint's image parts
(to a recording server, and to a real ``transformers serve`` of a tiny LLaVA)."""

from __future__ import annotations

import base64
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

from hf_magic import ChatHuggingFace, HuggingFaceEndpoint
from hf_magic.errors import ImageError
from hf_magic.images import (
    block_data_url,
    block_reference,
    embed_local_images,
    image_block,
    is_image_value,
    load_image,
    thumbnail_data_url,
    to_openai_image_part,
)
from tests.support.http_recorder import Reply, completion
from tests.test_vision import png_bytes

PNG = png_bytes("red", (20, 10))
PNG_B64 = base64.b64encode(PNG).decode()
DATA_URL = f"data:image/png;base64,{PNG_B64}"


@pytest.fixture
def png_file(tmp_path: Path) -> Path:
    path = tmp_path / "plot.png"
    path.write_bytes(PNG)
    return path


@pytest.fixture
def image_server(tmp_path: Path) -> Iterator[str]:
    """A plain HTTP server on 127.0.0.1 serving ``plot.png``."""
    (tmp_path / "plot.png").write_bytes(PNG)
    handler = lambda *args: http.server.SimpleHTTPRequestHandler(*args, directory=str(tmp_path))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def every_form(png_file: Path, url: str) -> list[dict]:
    return [
        {"type": "image", "base64": PNG_B64, "mime_type": "image/png"},
        {"type": "image", "source_type": "base64", "data": PNG_B64, "mime_type": "image/png"},
        {"type": "image", "url": DATA_URL},
        {"type": "image_url", "image_url": {"url": DATA_URL}},
        {"type": "image_url", "image_url": DATA_URL},
        {"type": "image", "url": str(png_file)},
        {"type": "image", "url": png_file.as_uri()},
        {"type": "image", "path": str(png_file)},
        {"type": "image", "url": f"{url}/plot.png"},
        {"type": "image", "source_type": "url", "url": f"{url}/plot.png"},
    ]


def test_every_accepted_form_reads_as_the_same_pixels(png_file: Path, image_server: str) -> None:
    images = [load_image(block) for block in every_form(png_file, image_server)]
    assert all(image.size == (20, 10) and image.mode == "RGB" for image in images)
    assert len({image.tobytes() for image in images}) == 1


def test_openai_parts_keep_http_urls_and_embed_everything_else(png_file: Path) -> None:
    for block in every_form(png_file, "https://example.com")[:-2]:
        assert to_openai_image_part(block) == {"type": "image_url", "image_url": {"url": DATA_URL}}
    url_block = {"type": "image", "url": "https://example.com/plot.png"}
    assert to_openai_image_part(url_block)["image_url"]["url"] == "https://example.com/plot.png"


def test_bad_blocks_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="base64 data does not decode"):
        load_image({"type": "image", "base64": "not base64!", "mime_type": "image/png"})
    with pytest.raises(ImageError, match="file_id"):
        load_image({"type": "image", "file_id": "file-123"})
    with pytest.raises(ImageError, match="no image in it"):
        load_image({"type": "image"})
    with pytest.raises(ImageError, match="check the path"):
        image_block(tmp_path / "nothing.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ImageError, match="not an image"):
        image_block(tmp_path / "text.png")
    with pytest.raises(ImageError, match="PIL image or a matplotlib Figure"):
        image_block(42)


def test_blocks_from_pil_images_figures_and_paths(png_file: Path) -> None:
    from PIL import Image

    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(2, 1))
    figure.add_subplot().plot([1, 3, 2])
    picture = Image.new("RGB", (8, 4), "blue")
    assert is_image_value(figure) and is_image_value(picture) and not is_image_value("plot.png")
    for value in (figure, picture, png_file, str(png_file)):
        block = image_block(value)
        assert block["type"] == "image" and block["mime_type"] == "image/png"
        assert load_image(block).size[0] > 0
    assert load_image(image_block(picture)).size == (8, 4)
    assert image_block("https://example.com/a.png") == {"type": "image", "url": "https://example.com/a.png"}


def test_thumbnails_export_and_references(png_file: Path) -> None:
    from hf_magic.images import decode_image

    block = image_block(png_file)
    thumbnail = thumbnail_data_url(block, size=8)
    assert thumbnail is not None and thumbnail.startswith("data:image/png;base64,")
    assert max(decode_image(base64.b64decode(thumbnail.split(",")[1])).size) == 8
    assert block_data_url(block) == DATA_URL
    remote = {"type": "image", "url": "https://example.com/a.png"}
    assert block_data_url(remote) is None and thumbnail_data_url(remote) is None
    assert block_reference(remote) == "https://example.com/a.png"
    assert "image/png" in block_reference(block)


def test_messages_to_the_endpoint_embed_local_files(png_file: Path, recorder) -> None:
    recorder.default = Reply(body=completion("ok"))
    model = ChatHuggingFace(llm=HuggingFaceEndpoint(endpoint_url=recorder.url, max_new_tokens=4))
    model.invoke([HumanMessage(content=[{"type": "image", "url": str(png_file)}, {"type": "text", "text": "What?"}])])
    sent = recorder.posts()[0].body["messages"][0]["content"]
    assert sent == [{"type": "image_url", "image_url": {"url": DATA_URL}}, {"type": "text", "text": "What?"}]
    remote = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    local = {"type": "image", "path": str(png_file)}
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [remote, local]}]
    embedded = embed_local_images(messages)
    assert embedded[0] is messages[0]
    assert embedded[1]["content"] == [remote, {"type": "image_url", "image_url": {"url": DATA_URL}}]


@pytest.mark.integration
def test_a_real_server_sees_the_image(tmp_path_factory: pytest.TempPathFactory, png_file: Path) -> None:
    """``transformers serve`` of a tiny LLaVA: the image's tokens count in the server's prompt, as they do in the
    local pipeline's for the same message (one chat template, one processor)."""
    from hf_magic import HuggingFacePipeline
    from tests.support.serve import serve_transformers
    from tests.support.tiny_vlms import build_tiny_vlm

    folder = build_tiny_vlm("llava", tmp_path_factory.mktemp("served-llava"))
    with_image = HumanMessage(content=[{"type": "image", "url": str(png_file)}, {"type": "text", "text": "What?"}])
    text_only = HumanMessage(content=[{"type": "text", "text": "What?"}])
    messages = {"image": with_image, "text": text_only}
    local = ChatHuggingFace(llm=HuggingFacePipeline.from_model_id(str(folder)), max_tokens=3, temperature=0)
    with serve_transformers(folder) as url:
        served = ChatHuggingFace(llm=HuggingFaceEndpoint(endpoint_url=url), max_tokens=3, temperature=0)
        replies = {name: served.invoke([message]) for name, message in messages.items()}
        streamed = list(served.stream([with_image]))
    usage = {name: reply.usage_metadata for name, reply in replies.items()}
    assert usage["image"] and usage["text"]
    image_tokens = usage["image"]["input_tokens"] - usage["text"]["input_tokens"]
    local_usage = {name: local.invoke([message]).usage_metadata for name, message in messages.items()}
    assert local_usage["image"] and local_usage["text"]
    assert image_tokens == local_usage["image"]["input_tokens"] - local_usage["text"]["input_tokens"] > 1
    assert "".join(str(chunk.content) for chunk in streamed) == replies["image"].content


def test_a_local_vlm_fetches_http_urls(image_server: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    from hf_magic import HuggingFacePipeline
    from tests.support.tiny_vlms import build_tiny_vlm

    folder = build_tiny_vlm("llava", tmp_path_factory.mktemp("url-llava"))
    chat = ChatHuggingFace(llm=HuggingFacePipeline.from_model_id(str(folder)), max_tokens=3, temperature=0)
    by_url = chat.invoke([HumanMessage(content=[{"type": "image", "url": f"{image_server}/plot.png"}, "What?"])])
    by_data = chat.invoke([HumanMessage(content=[{"type": "image", "url": DATA_URL}, "What?"])])
    assert by_url.content == by_data.content and by_url.usage_metadata == by_data.usage_metadata
