"""A real JupyterLab on 127.0.0.1 (token-less, throw-away config) and headless Debian Chromium driven by Playwright.

``jupyter_lab`` starts the server in a temporary directory and stops it; ``lab_page`` opens a browser page on
it. Notebooks are written with ``JupyterLab.write_notebook``, opened with ``JupyterLab.open_notebook`` and their
cells run with ``run_cell``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.olah import free_port
from tests.support.processes import stop_process, wait_until_answers

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

# Lab settings that keep first-run pop-ups (news, update checks) from covering the notebook.
_USER_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}


@dataclass(frozen=True)
class JupyterLab:
    url: str
    root: Path
    log: Path

    def write_notebook(self, name: str, cells: list[str]) -> Path:
        """A notebook of code cells in the server's root directory."""
        import nbformat

        notebook = nbformat.v4.new_notebook()
        notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        path = self.root / name
        nbformat.write(notebook, path)
        return path

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}"

    @property
    def workspaces(self) -> Path:
        """Where the server keeps workspaces (the tabs a page reopens): see the ``jupyter_lab`` fixture."""
        return self.root.parent / "workspaces"

    def open_notebook(self, page: Any, name: str, timeout_ms: int = 180_000) -> None:
        """Open ``name`` in ``page`` and wait until its kernel is ready (running a cell before that is lost).

        The saved workspace is dropped first: otherwise the page reopens an earlier test's notebook beside this
        one, and ``currentWidget`` or a ``.jp-Cell`` locator may find that notebook instead of this one.
        """
        shutil.rmtree(self.workspaces, ignore_errors=True)
        page.goto(self.notebook_url(name))
        page.wait_for_function(
            "(name) => window.jupyterapp && window.jupyterapp.shell.currentWidget"
            " && window.jupyterapp.shell.currentWidget.sessionContext"
            " && window.jupyterapp.shell.currentWidget.context.path === name",
            arg=name,
            timeout=timeout_ms,
        )
        page.evaluate(
            "async () => { const panel = window.jupyterapp.shell.currentWidget;"
            " await panel.context.ready; await panel.sessionContext.ready; }"
        )


def start_cell(page: Any, index: int) -> None:
    """Start running one cell and return at once: ``run_cell`` waits until the cell has run, which a cell that waits
    for a click in its own output never does."""
    page.evaluate(
        """(index) => {
            const notebook = window.jupyterapp.shell.currentWidget.content;
            notebook.activeCellIndex = index;
            void window.jupyterapp.commands.execute('notebook:run-cell');
        }""",
        index,
    )


def run_cell(page: Any, index: int) -> None:
    """Run one cell of the open notebook with JupyterLab's own command (the fixture exposes the app)."""
    page.evaluate(
        """(index) => {
            const notebook = window.jupyterapp.shell.currentWidget.content;
            notebook.activeCellIndex = index;
            return window.jupyterapp.commands.execute('notebook:run-cell');
        }""",
        index,
    )


@pytest.fixture(scope="session")
def jupyter_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterLab]:
    """JupyterLab on 127.0.0.1 with no token, its config, data, runtime and settings in a temporary directory."""
    if shutil.which("jupyter-lab", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("JupyterLab is not installed: pip install -e '.[lab]'")
    base = tmp_path_factory.mktemp("jupyterlab")
    root, settings = base / "notebooks", base / "user-settings"
    root.mkdir()
    for name, values in _USER_SETTINGS.items():
        target = settings / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(base / "config"),
        "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
        "IPYTHONDIR": str(base / "ipython"),
    }
    port = free_port()
    log = base / "jupyterlab.log"
    command = [
        str(Path(sys.executable).parent / "jupyter-lab"),
        "--no-browser",
        "--allow-root",  # CI containers run as root; harmless otherwise
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--ServerApp.root_dir={root}",
        "--IdentityProvider.token=",
        "--ServerApp.password=",
        "--ServerApp.disable_check_xsrf=True",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=",
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=output, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_answers(f"{url}/api/status", process, "JupyterLab", 120, lambda: f"see {log}")
            yield JupyterLab(url, root, log)
        finally:
            stop_process(process, timeout=20)


@pytest.fixture
def lab_page(jupyter_lab: JupyterLab, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A Playwright page in headless system Chromium (Playwright's own browser download does not work here).

    The page is saved as ``test-artifacts/<test>-page.png`` when the test ends, passed or failed.
    """
    playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[lab]'")
    if not Path(CHROMIUM).is_file():
        pytest.skip("Chromium is not installed: apt-get install chromium chromium-driver")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            yield page
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-page.png"), full_page=True)
        finally:
            browser.close()


def notebook_cells(page: Any) -> list[dict[str, Any]]:
    """The open notebook's cells as JupyterLab's model holds them: source, execution count and outputs."""
    return json.loads(
        page.evaluate(
            """() => {
                const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
                const out = [];
                for (let i = 0; i < cells.length; i++) {
                    const cell = cells.get(i);
                    out.push({source: cell.sharedModel.getSource(), count: cell.executionCount ?? null,
                              outputs: cell.outputs ? cell.outputs.toJSON() : []});
                }
                return JSON.stringify(out);
            }"""
        )
    )


def wait_until_run(page: Any, index: int, timeout_ms: int) -> None:
    """Wait until cell ``index`` has run and the kernel is idle again."""
    page.wait_for_function(
        """(index) => {
            const panel = window.jupyterapp.shell.currentWidget;
            const cell = panel.content.model.cells.get(index);
            return cell.executionCount !== null && panel.sessionContext.session.kernel.status === 'idle';
        }""",
        arg=index,
        timeout=timeout_ms,
    )
