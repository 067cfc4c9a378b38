"""``%%hfchat -f code`` in real JupyterLab, driven through headless Chromium: the reply's code lands in a new cell."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hf_magic.notebook.code_blocks import code_cell_text
from tests.support.jupyterlab import ARTIFACTS, JupyterLab, notebook_cells, run_cell, wait_until_run

pytestmark = pytest.mark.integration

REPLY_TIMEOUT_MS = 420_000
REPO = Path(__file__).resolve().parents[1]
REPLAYED = "Here you go:\n\n```python\ndef square(x):\n    return x * x\n```\n\nTry `square(3)`."

# A replayed model makes the first reply hold a code block on every machine; the default model answers the second.
SETUP_CELL = f"""\
import sys
sys.path.insert(0, {str(REPO)!r})
import hf_magic.notebook.model_slot as model_slot
from hf_magic.chat_models import ChatHuggingFace
from tests.support.replay_backend import ReplayBackend

real_load = model_slot.load_chat_model
model_slot.load_chat_model = lambda spec, progress=None: (
    ChatHuggingFace(llm=ReplayBackend([{REPLAYED!r}])) if spec.model == "replay" else real_load(spec, progress)
)
%load_ext hf_magic"""
REPLAYED_CELL = "%%hfchat -m replay --session replay -f code\nWrite a square function."
MODEL_CELL = "%%hfchat -f code --max-new-tokens 64\nWrite a Python function that adds two numbers."


def _reply(cell: dict[str, Any]) -> str:
    return next(o["metadata"]["hf_magic"]["reply"] for o in cell["outputs"] if "hf_magic" in o.get("metadata", {}))


def test_format_code_creates_a_cell_with_the_replys_code(jupyter_lab: JupyterLab, lab_page: Any) -> None:
    page = lab_page
    jupyter_lab.write_notebook("code.ipynb", [SETUP_CELL, REPLAYED_CELL, MODEL_CELL])
    jupyter_lab.open_notebook(page, "code.ipynb")
    run_cell(page, 0)
    wait_until_run(page, 0, REPLY_TIMEOUT_MS)

    # 1. The reply's code block becomes a new cell right below the %%hfchat cell; the reply still shows.
    run_cell(page, 1)
    page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget.content.model.cells.length === 4", timeout=REPLY_TIMEOUT_MS
    )
    cells = notebook_cells(page)
    assert cells[2]["source"] == code_cell_text(_reply(cells[1])) == "def square(x):\n    return x * x"
    assert cells[3]["source"] == MODEL_CELL
    assert "Here you go" in page.locator(".jp-Cell").nth(1).inner_text()

    # 2. The default model: the new cell holds exactly the code blocks of the reply shown, or, with none, the cell
    #    says so and no cell is added.
    run_cell(page, 3)
    wait_until_run(page, 3, REPLY_TIMEOUT_MS)
    page.wait_for_timeout(1000)  # the payload's cell is inserted after the reply arrives
    cells = notebook_cells(page)
    code = code_cell_text(_reply(cells[3]))
    if code is None:
        assert len(cells) == 4
        assert "The reply has no code block: no cell was added." in page.locator(".jp-Cell").nth(3).inner_text()
    else:
        assert len(cells) == 5 and cells[4]["source"] == code

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "code-cell-e2e.png"), full_page=True)
