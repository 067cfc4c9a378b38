"""The tutorial notebooks, executed by nbval: every cell must run, and outputs of cells tagged
``nbval-check-output`` (greedy, deterministic text) must match the committed ones."""

from __future__ import annotations

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
