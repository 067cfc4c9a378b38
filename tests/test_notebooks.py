"""The tutorial notebooks, executed by nbval (``--nbval-lax``): every cell must run without error, and the
outputs of cells tagged ``nbval-check-output`` must match the committed ones.

The rule for tags: a tagged cell prints only what holds on every machine (types, key names, a validated schema,
a forced tool's name, input token counts, which come from the tokenizer). Text the model generates is never
compared, greedy or not: another CPU's kernels round differently and the greedy words change, and with them the
output token counts, finish reasons and reply lengths. Nor are versions, paths, timings or memory sizes. Cells that
show a reply (``%%hfchat``, ``%hfchat history``, ``print(reply.content)``) run, untagged."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.integration
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook(notebook: Path) -> None:
    # A pytest of its own: nbval collects notebooks, and each notebook gets a fresh kernel in its folder.
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--nbval-lax",
        "--nbval-current-env",
        "--rootdir",
        str(notebook.parent),
        str(notebook),
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=notebook.parent)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_every_tutorial_is_collected() -> None:
    assert [path.name[:2] for path in NOTEBOOKS] == ["01", "02", "03", "04", "05"]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_no_reply_is_compared(notebook: Path) -> None:
    # The cells that show generated text by construction; what else a tagged cell prints is for review to judge.
    import nbformat

    shows_reply = re.compile(r"^\s*%%hfchat|%hfchat history|print\(\w+\.content\)", re.MULTILINE)
    tagged = [
        cell.source
        for cell in nbformat.read(notebook, as_version=4).cells
        if "nbval-check-output" in cell.metadata.get("tags", [])
    ]
    assert [source for source in tagged if shows_reply.search(source)] == []
