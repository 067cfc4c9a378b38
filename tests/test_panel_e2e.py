"""The chat panel in real JupyterLab, driven through headless Chromium: load, send, Shift+Enter, stop, %%hfchat."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.support.jupyterlab import ARTIFACTS, JupyterLab, run_cell

pytestmark = pytest.mark.integration

# Generous: the kernel loads the real default model on the first message, on a 2-core machine shared with others.
REPLY_TIMEOUT_MS = 420_000
PANEL = ".hf-magic-panel"

SETUP_CELL = """\
%load_ext hf_magic
from hf_magic.notebook.session import get_session
from hf_magic.notebook.turns import Settings
get_session().settings = Settings(max_new_tokens=24, temperature=0)"""
PANEL_CELL = "%hfchat panel"
MAGIC_CELL = "%%hfchat\nName one colour of the rainbow."


def _turn_count(page: Any, state: str) -> int:
    return page.locator(f"{PANEL} .hfm-turn.{state}").count()


def test_panel_in_jupyterlab(jupyter_lab: JupyterLab, lab_page: Any) -> None:
    page = lab_page
    jupyter_lab.write_notebook("panel.ipynb", [SETUP_CELL, PANEL_CELL, MAGIC_CELL])
    jupyter_lab.open_notebook(page, "panel.ipynb")
    run_cell(page, 0)
    run_cell(page, 1)
    page.wait_for_selector(f"{PANEL} .hf-magic-send", timeout=180_000)
    assert "not loaded" in page.inner_text(f"{PANEL} .hfm-status")

    # 1. Type a message and press Send: the model loads (progress in the panel) and the reply arrives.
    page.fill(f"{PANEL} .hf-magic-input textarea", "What is the capital of France?")
    page.click(f"{PANEL} .hf-magic-send")
    page.wait_for_selector(f"{PANEL} .hfm-turn.hfm-done", timeout=REPLY_TIMEOUT_MS)
    reply = page.inner_text(f"{PANEL} .hfm-turn.hfm-done .hfm-reply")
    assert reply.strip()
    assert "● loaded" in page.inner_text(f"{PANEL} .hfm-status")
    usage = page.inner_text(f"{PANEL} .hfm-usage")
    assert re.search(r"in \d+ · out \d+ · total \d+", usage) and "context " in usage
    assert page.locator(f"{PANEL} .hf-magic-progress").count() >= 1  # the weight-loading bar of the first load

    # 2. Raise max tokens in the Generation settings, ask for a long reply with Shift+Enter, stop it mid-stream.
    page.locator(PANEL).get_by_text("Generation", exact=True).click()
    max_tokens = page.locator(f"{PANEL} .widget-text", has_text="Max tokens").locator("input")
    max_tokens.fill("400")
    max_tokens.press("Enter")
    page.fill(f"{PANEL} .hf-magic-input textarea", "Write a very long story about a dragon who learns to bake bread.")
    page.press(f"{PANEL} .hf-magic-input textarea", "Shift+Enter")
    page.wait_for_function(
        """(panel) => {
            const reply = document.querySelector(panel + ' .hfm-turn.hfm-streaming .hfm-reply');
            return reply && reply.innerText.replace('▍', '').trim().length > 20;
        }""",
        arg=PANEL,
        timeout=REPLY_TIMEOUT_MS,
    )
    assert page.is_enabled(f"{PANEL} .hf-magic-stop")
    assert page.is_disabled(f"{PANEL} .hf-magic-send")
    page.click(f"{PANEL} .hf-magic-stop")
    page.wait_for_selector(f"{PANEL} .hfm-turn.hfm-stopped", timeout=120_000)
    stopped = page.locator(f"{PANEL} .hfm-turn.hfm-stopped")
    assert "stopped" in stopped.locator(".hfm-badge").inner_text()
    assert len(stopped.locator(".hfm-reply").inner_text().strip()) > 20  # the partial reply is kept
    assert "stopped after" in stopped.locator(".hfm-meta").inner_text()
    assert len(stopped.locator(".hfm-reply").inner_text().split()) < 100  # far from the 400 tokens allowed
    assert page.is_enabled(f"{PANEL} .hf-magic-send")

    # 3. A %%hfchat cell talks to the same session: its turn shows up in the panel.
    run_cell(page, 2)
    page.wait_for_function(
        "(panel) => document.querySelectorAll(panel + ' .hfm-turn.hfm-done').length >= 2",
        arg=PANEL,
        timeout=REPLY_TIMEOUT_MS,
    )
    assert "Name one colour of the rainbow." in page.inner_text(f"{PANEL} .hf-magic-transcript")
    assert _turn_count(page, "hfm-stopped") == 1
    page.wait_for_selector(f"{PANEL} .hf-magic-send:not([disabled])", timeout=30_000)
    assert page.is_disabled(f"{PANEL} .hf-magic-stop")
    assert "● loaded" in page.inner_text(f"{PANEL} .hfm-status")
    assert page.locator(f"{PANEL} .hfm-error").count() == 0

    ARTIFACTS.mkdir(exist_ok=True)
    page.locator(PANEL).screenshot(path=str(ARTIFACTS / "panel-e2e.png"))
