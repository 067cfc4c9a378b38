"""The panel's image attachments: FileUpload entries become the turn's images, thumbnails before and after."""

from __future__ import annotations

import datetime
import uuid
from pathlib import Path
from typing import Any

import pytest

from hf_magic import ChatPanel
from hf_magic.notebook.model_spec import ModelSpec
from hf_magic.notebook.panel_images import attached_images, attachment_summary
from hf_magic.notebook.session import ChatSession
from tests.support.tiny_vlms import build_tiny_vlm
from tests.test_vision import png_bytes, record_pixels

pytest.importorskip("PIL")


def upload(name: str, content: bytes) -> dict[str, Any]:
    """One ``FileUpload.value`` entry, as the browser sends it."""
    return {
        "name": name, "type": "image/png", "size": len(content), "content": memoryview(content),
        "last_modified": datetime.datetime.now(datetime.timezone.utc),
    }  # fmt: skip


def test_uploads_become_image_blocks_and_a_bad_one_is_named() -> None:
    blocks = attached_images([upload("red.png", png_bytes("red")), upload("blue.png", png_bytes("blue"))])
    assert [block["mime_type"] for block in blocks] == ["image/png", "image/png"]
    assert attachment_summary([upload("red.png", png_bytes())]).count("<img ") == 1
    with pytest.raises(Exception, match=r"notes\.png is not an image: attach a PNG"):
        attached_images([upload("notes.png", b"plain text")])
    assert "notes.png is not an image" in attachment_summary([upload("notes.png", b"plain text")])


@pytest.fixture(scope="module")
def vlm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vlm("idefics3", tmp_path_factory.mktemp("idefics3"))


def test_attached_images_go_with_the_message_and_show_in_the_transcript(vlm_folder: Path) -> None:
    session = ChatSession(f"panel-vision-{uuid.uuid4().hex[:6]}", spec=ModelSpec(model=str(vlm_folder)))
    session.settings.max_new_tokens = 3
    session.load()
    pixels = record_pixels(session.chat_model.llm.model)
    panel = ChatPanel(session)
    try:
        panel.view.attach.value = (upload("red.png", png_bytes("red")),)
        assert panel.view.attachments.value.count("<img ") == 1
        panel.view.input.value = "What colour is this?"
        panel.send()
        assert panel.wait(120)
        assert panel.view.attach.value == () and panel.view.attachments.value == ""  # sent: nothing left attached
        turn = session.turns[-1]
        assert len(turn.images) == 1 and turn.user == "What colour is this?" and turn.reply
        assert len(pixels) == 1
        transcript = "".join(getattr(child, "value", "") for child in panel.view.transcript.children)
        assert transcript.count('<img src="data:image/png;base64,') == 1
    finally:
        panel.close()
