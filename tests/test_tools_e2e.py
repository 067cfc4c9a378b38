"""Approval in real JupyterLab, driven through headless Chromium: the default model is made to call a function that
asks first (a forced tool choice); the buttons show in the cell while it runs, and clicking Run runs the function
once, clicking Skip runs nothing and the model hears the user declined. The cell's output shows the call's block."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.jupyterlab import ARTIFACTS, JupyterLab, notebook_cells, run_cell, start_cell, wait_until_run

pytestmark = pytest.mark.integration

REPLY_TIMEOUT_MS = 420_000
SETUP_CELL = '''\
notes = []

def record(note: str) -> str:
    """Record a note for the user.

    Args:
        note: the note to record.
    """
    notes.append(note)
    return f"Recorded: {note}"

%load_ext hf_magic
%hfchat tools add record --approve'''
RUN_CELL = "%%hfchat --tool-choice record --max-steps 1 --max-new-tokens 32\nRecord a note that says hello."
SKIP_CELL = "%%hfchat --tool-choice record --max-steps 1 --max-new-tokens 32\nRecord a note that says goodbye."
CHECK_CELL = "print(len(notes))"


def _answer(page: Any, cell: int, button: str) -> None:
    """Click ``button`` of the question that shows in ``cell``'s output while the cell runs."""
    question = page.locator(".jp-Cell").nth(cell).locator(".hfm-approval")
    question.wait_for(timeout=REPLY_TIMEOUT_MS)
    assert "The model wants to run" in question.inner_text() and "record" in question.inner_text()
    # By its text: a button's accessible name also holds its icon's glyph.
    question.locator("button").filter(has_text=button).click()


def _text(cell: dict[str, Any]) -> str:
    return "\n".join(
        str(output.get("data", {}).get("text/plain", "")) + str(output.get("text", "")) for output in cell["outputs"]
    )


def test_run_and_skip_are_clicked_in_the_cell(jupyter_lab: JupyterLab, lab_page: Any) -> None:
    page = lab_page
    jupyter_lab.write_notebook("tools.ipynb", [SETUP_CELL, RUN_CELL, SKIP_CELL, CHECK_CELL])
    jupyter_lab.open_notebook(page, "tools.ipynb")
    run_cell(page, 0)
    wait_until_run(page, 0, REPLY_TIMEOUT_MS)

    # Run: the function runs once; the buttons give way to the answer, and the call shows as a block.
    start_cell(page, 1)
    _answer(page, 1, "Run")
    wait_until_run(page, 1, REPLY_TIMEOUT_MS)
    page.locator(".jp-Cell").nth(1).locator(".hfm-tool-ok").wait_for(timeout=30_000)
    ran = _text(notebook_cells(page)[1])
    assert "record: approved once" in ran and "[tool] record" in ran and "-> ✓" in ran

    # Skip: nothing runs, and the block says so.
    start_cell(page, 2)
    _answer(page, 2, "Skip")
    wait_until_run(page, 2, REPLY_TIMEOUT_MS)
    page.locator(".jp-Cell").nth(2).locator(".hfm-tool-declined").wait_for(timeout=30_000)
    assert "record: skipped" in _text(notebook_cells(page)[2])

    run_cell(page, 3)
    wait_until_run(page, 3, 60_000)
    assert _text(notebook_cells(page)[3]).strip() == "1"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "tools-approval-e2e.png"), full_page=True)
