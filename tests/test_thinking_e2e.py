"""A reasoning reply in real JupyterLab (headless Chromium): the thinking is folded above the Markdown answer in the
``%%hfchat`` output and in the panel, and opens on a click. The reply is replayed, so no model is loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.jupyterlab import ARTIFACTS, JupyterLab, run_cell

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
# The kernel runs in JupyterLab's temporary root: the repository goes on its path for tests.support.
SETUP_CELL = f"""\
import sys
sys.path.insert(0, {str(REPO)!r})
%load_ext hf_magic
from hf_magic import ChatHuggingFace
from hf_magic.notebook.session import get_session
from tests.support.replay_backend import ReplayBackend
session = get_session("thinking")
pieces = ["<think>Two plus two", " is four.</think>\\n\\n", "The answer is **4**."]
session.use_model(ChatHuggingFace(llm=ReplayBackend(pieces, "stop")))  # the replay stands in for the model"""
MAGIC_CELL = "%%hfchat --session thinking\nWhat is 2+2?"
PANEL_CELL = "%hfchat panel --session thinking"

CELL_OUTPUT = ".jp-Cell:nth-child(2) .jp-OutputArea"
PANEL = ".hf-magic-panel"


def _folded(page: Any, scope: str) -> bool:
    return page.eval_on_selector(f"{scope} details.hfm-thinking", "details => !details.open")


def test_thinking_is_folded_above_the_answer(jupyter_lab: JupyterLab, lab_page: Any) -> None:
    page = lab_page
    jupyter_lab.write_notebook("thinking.ipynb", [SETUP_CELL, MAGIC_CELL, PANEL_CELL])
    jupyter_lab.open_notebook(page, "thinking.ipynb")
    run_cell(page, 0)
    run_cell(page, 1)
    page.wait_for_selector(f"{CELL_OUTPUT} details.hfm-thinking", timeout=120_000)
    page.wait_for_selector(f"{CELL_OUTPUT} strong", timeout=30_000)
    assert page.inner_text(f"{CELL_OUTPUT} strong") == "4"  # the answer, as Markdown
    assert _folded(page, CELL_OUTPUT)
    assert not page.is_visible(f"{CELL_OUTPUT} .hfm-thinking-text")
    assert "<think>" not in page.inner_text(CELL_OUTPUT)

    page.click(f"{CELL_OUTPUT} details.hfm-thinking summary")
    assert not _folded(page, CELL_OUTPUT)
    assert "Two plus two is four." in page.inner_text(f"{CELL_OUTPUT} .hfm-thinking-text")

    run_cell(page, 2)
    page.wait_for_selector(f"{PANEL} .hfm-turn.hfm-done details.hfm-thinking", timeout=120_000)
    assert _folded(page, f"{PANEL} .hfm-turn.hfm-done")
    assert page.inner_text(f"{PANEL} .hfm-turn.hfm-done .hfm-reply strong") == "4"
    assert page.locator(f"{PANEL} .hf-magic-think").count() == 1  # the Thinking toggle

    ARTIFACTS.mkdir(exist_ok=True)
    page.locator(PANEL).screenshot(path=str(ARTIFACTS / "thinking-e2e.png"))
