"""Images from the notebook: ``%%hfchat --image`` and ``-i`` with ``{fig}`` / ``{img}``, on a tiny random LLaVA
loaded by ``-m FOLDER`` (detected as a VLM, no flag); thumbnails above the reply; turns, export and reload."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from hf_magic.images import load_image
from hf_magic.notebook.cell_images import ImageFields
from hf_magic.notebook.cell_options import interpolate
from hf_magic.notebook.render import SentImages, Transcript
from hf_magic.notebook.session import ChatSession, get_session
from hf_magic.notebook.turn_drawing import turn_markdown, turn_text
from hf_magic.notebook.turns import Turn
from tests import test_magics
from tests.support.tiny_vlms import build_tiny_vlm
from tests.test_vision import png_bytes, record_pixels

pytest.importorskip("PIL")
matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

ip, magics = test_magics.ip, test_magics.magics  # the shell with the extension loaded; the magic's config restored


@pytest.fixture(scope="module")
def vlm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vlm("llava", tmp_path_factory.mktemp("llava"))


@pytest.fixture
def pictures(tmp_path: Path) -> list[Path]:
    paths = []
    for color in ("red", "blue"):
        path = tmp_path / f"{color}.png"
        path.write_bytes(png_bytes(color))
        paths.append(path)
    return paths


@pytest.fixture
def vlm_session(ip: InteractiveShell, vlm_folder: Path) -> ChatSession:
    name = f"vision-{uuid.uuid4().hex[:8]}"
    ip.run_cell_magic("hfchat", f"--session {name} -m {vlm_folder} --max-new-tokens 3", "Hello?")
    session = get_session(name)
    assert session.loaded and session.chat_model is not None
    assert session.chat_model.llm.reads_images  # a VLM config is detected: no flag
    return session


def figure() -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1.5))
    fig.add_subplot().plot([1, 4, 2, 3])
    return fig


def test_image_fields_take_images_out_of_the_text() -> None:
    from PIL import Image

    fields = ImageFields(first_number=2)
    namespace = {"fig": figure(), "img": Image.new("RGB", (5, 5)), "n": 3}
    text = interpolate("Compare {fig} with {img} ({n} points, {missing})", namespace, fields)
    assert text == "Compare [image 2] with [image 3] (3 points, {missing})"
    assert [load_image(block).size[0] > 0 for block in fields.blocks] == [True, True]
    assert interpolate("{fig}", namespace).startswith("Figure(")  # without the converter: str() as before


def test_image_option_sends_every_image_and_shows_thumbnails(
    ip: InteractiveShell, magics: Any, vlm_session: ChatSession, pictures: list[Path]
) -> None:
    pixels = record_pixels(vlm_session.chat_model.llm.model)
    magics.display_mode = "notebook"
    line = f"--session {vlm_session.name} --max-new-tokens 3 --image {pictures[0]} --image {pictures[1]}"
    with capture_output() as captured:
        ip.run_cell_magic("hfchat", line, "What differs?")
    turn = vlm_session.turns[-1]
    assert turn.user == "What differs?" and len(turn.images) == 2
    assert len(pixels) == 1 and pixels[0].shape[0] == 2  # both images, in one encoder call
    thumbnails = captured.outputs[0]
    assert thumbnails.data["text/html"].count('<img src="data:image/png;base64,') == 2
    assert turn.usage and turn.usage.input_tokens > 2 * 16  # 16 image tokens each, counted


def test_interpolated_figure_and_pil_image_are_sent_as_images(
    ip: InteractiveShell, vlm_session: ChatSession, pictures: list[Path]
) -> None:
    from PIL import Image

    ip.user_ns.update(fig=figure(), img=Image.open(pictures[1]))
    line = f"--session {vlm_session.name} --max-new-tokens 3 -i --image {pictures[0]}"
    ip.run_cell_magic("hfchat", line, "Is {fig} like {img}?")
    turn = vlm_session.turns[-1]
    assert turn.user == "Is [image 2] like [image 3]?"
    assert len(turn.images) == 3
    assert load_image(turn.images[2]).getpixel((0, 0)) == (0, 0, 255)


def test_a_missing_image_is_one_line_and_nothing_is_sent(
    ip: InteractiveShell, vlm_session: ChatSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = list(vlm_session.turns)
    ip.run_cell_magic("hfchat", f"--session {vlm_session.name} --image {tmp_path / 'gone.png'}", "What is it?")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Cannot read the image file" in err and "gone.png" in err
    assert vlm_session.turns == before and vlm_session.loaded


def test_a_text_turn_after_an_image_turn_reuses_the_cache(
    ip: InteractiveShell, vlm_session: ChatSession, pictures: list[Path]
) -> None:
    llm = vlm_session.chat_model.llm
    ip.run_cell_magic("hfchat", f"--session {vlm_session.name} --max-new-tokens 3 --image {pictures[0]}", "What?")
    assert llm.last_prefill_note is not None
    ip.run_cell_magic("hfchat", f"--session {vlm_session.name} --max-new-tokens 3", "And then?")
    assert llm._kv_cache.last_reused > 0 and llm.last_prefill_note is None


def test_turns_keep_images_through_export_and_reload(
    vlm_session: ChatSession, pictures: list[Path], tmp_path: Path
) -> None:
    from hf_magic.images import image_block

    url = {"type": "image", "url": "https://example.com/chart.png"}
    vlm_session.turns.append(Turn(user="About these", reply="ok", images=[image_block(pictures[0]), url]))
    exported = json.loads(vlm_session.export(tmp_path / "chat.json").read_text())
    images = exported["turns"][-1]["images"]
    assert images[0]["url"].startswith("data:image/png;base64,") and images[1] == url
    assert exported["messages"][-2]["content"][0]["image_url"]["url"] == images[0]["url"]
    markdown = vlm_session.export(tmp_path / "chat.md").read_text()
    assert "[image: https://example.com/chart.png]" in markdown and "[image: image/png (" in markdown
    assert "base64," not in markdown  # a reference, not the data
    reloaded = ChatSession(name=f"reload-{uuid.uuid4().hex[:6]}")
    reloaded.load_transcript(tmp_path / "chat.json")
    assert load_image(reloaded.turns[-1].images[0]).tobytes() == load_image(image_block(pictures[0])).tobytes()
    assert reloaded.turns[-1].user_content()[-1] == {"type": "text", "text": "About these"}


def test_renderings_show_or_name_the_images(pictures: list[Path]) -> None:
    from hf_magic.images import image_block

    turn = Turn(user="What is it?", reply="A square.", images=[image_block(pictures[0])])
    html = Transcript([turn])._repr_mimebundle_()["text/html"]
    assert html.index('<img src="data:image/png') < html.index("What is it?")
    assert "[image: image/png (" in turn_markdown(turn) and "User: [image: image/png (" in turn_text(turn)
    assert repr(SentImages(turn.images)).startswith("[image: image/png")


@pytest.mark.integration
def test_an_image_to_the_default_text_model_is_one_line(
    ip: InteractiveShell, pictures: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"text-{uuid.uuid4().hex[:8]}"
    ip.run_cell_magic("hfchat", f"--session {name} --max-new-tokens 2 --image {pictures[0]}", "What is it?")
    err = capsys.readouterr().err
    assert "SmolLM2-135M-Instruct reads text only" in err and "vision-language model" in err
    assert get_session(name).turns == []


def test_restore_from_a_saved_notebook_says_the_images_were_left_out(
    ip: InteractiveShell, pictures: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import nbformat

    from hf_magic.images import image_block
    from hf_magic.notebook.render import Reply

    name = f"restore-{uuid.uuid4().hex[:6]}"
    turn = Turn(user="What is it?", reply="A square.", images=[image_block(pictures[0]), image_block(pictures[1])])
    data, metadata = Reply(turn, session=name)._repr_mimebundle_()
    assert metadata["hf_magic"]["images"] == 2 and "base64" not in str(metadata)  # a count, not the pixels
    cell = nbformat.v4.new_code_cell("%%hfchat --image red.png --image blue.png\nWhat is it?")
    cell.outputs = [nbformat.v4.new_output("display_data", data=data, metadata=metadata)]
    notebook = nbformat.v4.new_notebook(cells=[cell])
    nbformat.write(notebook, tmp_path / "saved.ipynb")
    ip.run_line_magic("hfchat", f"restore {tmp_path / 'saved.ipynb'} --session {name}")
    out = capsys.readouterr().out
    assert "restored 1 turns" in out and "2 image(s) sent in those turns were left out" in out
    assert [t.user for t in get_session(name).turns] == ["What is it?"] and get_session(name).turns[0].images == []
