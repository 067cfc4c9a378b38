"""The tutorial notebooks, executed by nbval (``--nbval-lax``): every cell must run without error, and the
outputs of cells tagged ``nbval-check-output`` must match the committed ones.

The rule for tags: a tagged cell prints only what holds on every machine (types, key names, a validated schema,
a forced tool's name, input token counts, which come from the tokenizer). Text the model generates is never
compared, greedy or not: another CPU's kernels round differently and the greedy words change, and with them the
output token counts, finish reasons and reply lengths. Nor are versions, paths, timings or memory sizes. Cells that
show a reply (``%%hfchat``, ``%hfchat history``, ``print(reply.content)``) run, untagged.

Each notebook runs from a copy outside the repository, as a user who installed the package would run it: the
servers it talks to are started here and passed in the environment, never imported from ``tests``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.olah import OlahMirror, olah_mirror

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))

ENDPOINT_URL_VAR = "HF_MAGIC_ENDPOINT_URL"
"""Where notebook 03 finds its OpenAI-compatible server (it starts one itself when the variable is unset)."""

VISION_MODEL_VAR = "HF_MAGIC_VISION_MODEL"
"""The vision-language model notebook 07 asks about its plot (a hub VLM when unset); here a tiny random LLaVA."""

DOWNLOAD_REPO_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The hub id notebook 05 downloads; the mirror serves the converted default model under it."""

REFRESH_VAR = "HF_MAGIC_REFRESH_NOTEBOOKS"
"""Set to 1, each test first re-executes its notebook (nbconvert) and saves the outputs back into notebooks/, so
what a newcomer sees before running anything is what running gives; nbval then checks the refreshed copy."""

_HUB_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "HF_HOME", "HF_HUB_CACHE", "HF_XET_CACHE")
"""What a notebook's environment sets afresh: it sees only the hub and the (empty) cache given to it."""


@pytest.fixture(scope="session")
def download_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OlahMirror]:
    """olah on 127.0.0.1 serving the converted default model as ``DOWNLOAD_REPO_ID``, for notebook 05."""
    from hf_magic.local.loading import ensure_default_model

    with olah_mirror(ensure_default_model(), DOWNLOAD_REPO_ID, workdir=tmp_path_factory.mktemp("olah")) as mirror:
        yield mirror


@pytest.fixture(scope="session")
def tiny_vision_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight LLaVA with its real processor, for notebook 07 (mechanics only: its words are noise)."""
    from tests.support.tiny_vlms import build_tiny_vlm

    return build_tiny_vlm("llava", tmp_path_factory.mktemp("tiny-llava"))


def notebook_environment(notebook: Path, request: pytest.FixtureRequest, home: Path) -> dict[str, str]:
    """The environment a user would have set for ``notebook``: offline with an empty hub cache, except where the
    notebook needs a server; only the servers a notebook uses are started."""
    env = {name: value for name, value in os.environ.items() if name not in _HUB_VARS}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(home))
    if notebook.stem == "03_endpoint":
        env[ENDPOINT_URL_VAR] = request.getfixturevalue("serve_url")
    if notebook.stem == "07_asking_about_a_plot":
        env[VISION_MODEL_VAR] = str(request.getfixturevalue("tiny_vision_model"))
    if notebook.stem == "05_downloads":
        del env["HF_HUB_OFFLINE"]
        env["HF_ENDPOINT"] = request.getfixturevalue("download_hub").url
    return env


@pytest.mark.integration
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook(notebook: Path, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    # A pytest of its own: nbval collects notebooks, and each notebook gets a fresh kernel in its folder, here
    # a copy outside the repository, so that it needs nothing from the checkout but the installed package.
    workdir = tmp_path / "notebook"
    workdir.mkdir()
    copy = Path(shutil.copy(notebook, workdir))
    env = notebook_environment(notebook, request, tmp_path / "hf_home")
    if os.environ.get(REFRESH_VAR) == "1":
        refresh = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", "--inplace"]
        # Cells nbval skips wait for a person (an approval button), so the refresh skips them too.
        options = ["--ExecutePreprocessor.timeout=1200", "--ExecutePreprocessor.skip_cells_with_tag=nbval-skip"]
        subprocess.run([*refresh, *options, str(copy)], cwd=workdir, env=env, check=True)
        shutil.copy(copy, notebook)
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
        str(workdir),
        str(copy),
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=workdir, env=env)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_every_tutorial_is_collected() -> None:
    assert [path.name[:2] for path in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06", "07", "08", "09"]


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


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_uses_only_the_installed_package(notebook: Path) -> None:
    # A user has the package, not this repository: no test helpers, no path tricks to reach them.
    import nbformat

    reaches_into_repo = re.compile(r"\bsys\.path\b|^\s*(from|import)\s+tests\b", re.MULTILINE)
    cells = nbformat.read(notebook, as_version=4).cells
    assert [cell.source for cell in cells if cell.cell_type == "code" and reaches_into_repo.search(cell.source)] == []
