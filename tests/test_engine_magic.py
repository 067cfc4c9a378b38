"""``%%hfchat --engine vllm|llama.cpp``: options, bad input as one line, and a real kernel (nbclient) that starts
engines, switches between them, unloads, and is killed, leaving no process behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

from hf_magic.notebook.cell_options import spec_from_options
from hf_magic.notebook.magics import HfChatMagics
from hf_magic.notebook.model_spec import ModelSpec
from hf_magic.remote.engines import DEFAULTS, running_engines
from tests.support.processes import descendants, wait_gone
from tests.support.vllm import CPU_ARGS, vllm_python


@pytest.fixture(scope="module")
def ip() -> InteractiveShell:
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "hf_magic")
    return shell


@pytest.fixture
def magics(ip: InteractiveShell):
    instance = ip.magics_manager.registry["HfChatMagics"]
    saved = (instance.engine_python, dict(instance.engine_args))
    yield instance
    instance.engine_python, instance.engine_args = saved


def _error_line(ip: InteractiveShell, capsys: pytest.CaptureFixture[str], line: str) -> str:
    ip.run_cell_magic("hfchat", f"--session engine-{uuid.uuid4().hex[:8]} {line}", "Hello")
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ----------------------------------------------------------------------------------- options
def test_engine_options_make_an_engine_spec(magics: HfChatMagics) -> None:
    spec = spec_from_options(ModelSpec(), magics.parse_cell_options("--engine vllm"))
    assert (spec.engine, spec.backend, spec.endpoint_url) == ("vllm", "endpoint", None)
    assert spec.label() == "default (vllm)"
    gguf = spec_from_options(ModelSpec(), magics.parse_cell_options("-m org/Model-GGUF --gguf-file m.Q4_K_M.gguf"))
    assert (gguf.engine, gguf.gguf_file, gguf.model) == ("llama.cpp", "m.Q4_K_M.gguf", "org/Model-GGUF")
    local = spec_from_options(ModelSpec(), magics.parse_cell_options("-m ./model.gguf"))
    assert local.engine == "llama.cpp"
    # Back to the pipeline, or to a server of one's own: the engine is left.
    assert spec_from_options(spec, magics.parse_cell_options("--backend pipeline")).engine is None
    url = spec_from_options(spec, magics.parse_cell_options("--endpoint-url http://127.0.0.1:9"))
    assert (url.engine, url.backend) == (None, "endpoint")
    # Another model on the same engine keeps the engine.
    assert spec_from_options(spec, magics.parse_cell_options("-m org/other")).engine == "vllm"


def test_config_sets_the_engine_python_and_arguments(ip: InteractiveShell, magics: HfChatMagics) -> None:
    ip.run_line_magic("config", "HfChatMagics.engine_python = '/opt/vllm/bin/python'")
    ip.run_line_magic("config", "HfChatMagics.engine_args = {'vllm': '--max-model-len 2048'}")
    assert DEFAULTS.python == "/opt/vllm/bin/python" and DEFAULTS.arguments == {"vllm": "--max-model-len 2048"}
    ip.run_line_magic("config", "HfChatMagics.engine_python = {'vllm': '/opt/vllm/bin/python'}")
    assert DEFAULTS.python == {"vllm": "/opt/vllm/bin/python"}


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ("--engine tgi", "Unknown engine 'tgi': use vllm or llama.cpp"),
        ("--engine vllm --endpoint-url http://127.0.0.1:9", "give one of them"),
        ("--engine vllm -m ./model.gguf", "use --engine llama.cpp"),
        ("--engine vllm --gguf-file m.gguf", "add --engine llama.cpp"),
        ("--engine llama.cpp -m /no/such/model.gguf", "No GGUF file at '/no/such/model.gguf'"),
        ("--engine llama.cpp -m org/Model-GGUF", "needs --gguf-file NAME.gguf"),
        ("--engine llama.cpp -m org/Model-GGUF --gguf-file model.bin", "is not a .gguf file name"),
        ("--engine llama.cpp --gguf-file other.gguf", "runs on its own GGUF"),
        ("--engine vllm --quantize 4bit", "Quantization applies to local models only"),
    ],
)
def test_bad_engine_input_is_one_line(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str], line: str, said: str
) -> None:
    assert said in _error_line(ip, capsys, line)
    assert running_engines() == []


def test_an_engine_python_without_vllm_says_how_to_install_it(
    ip: InteractiveShell, magics: HfChatMagics, capsys: pytest.CaptureFixture[str]
) -> None:
    magics.engine_python = sys.executable  # the project's venv: no vLLM there
    err = _error_line(ip, capsys, "--engine vllm")
    assert f"{sys.executable} has no vllm installed" in err and "pip install vllm" in err
    assert "HfChatMagics.engine_python" in err


def test_an_engine_python_that_does_not_exist_is_one_line(
    ip: InteractiveShell, magics: HfChatMagics, capsys: pytest.CaptureFixture[str]
) -> None:
    magics.engine_python = "/no/such/python"
    assert "The engine Python '/no/such/python' does not exist" in _error_line(ip, capsys, "--engine vllm")


def test_engine_log_before_any_engine(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    ip.run_line_magic("hfchat", "engine frobnicate")
    assert "Unknown %hfchat engine 'frobnicate'" in capsys.readouterr().err


# ------------------------------------------------------------------------------ a real kernel
def _code(cell: dict[str, Any]) -> str:
    """A cell's text outputs (stdout, stderr, text/plain and text/html of displays) as one string."""
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        data = output.get("data", {})
        parts += [data.get("text/plain", ""), data.get("text/html", "")]
    return "\n".join(parts)


class Kernel:
    """A fresh IPython kernel driven as JupyterLab drives it (nbclient), one cell at a time."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.count = 0

    def run(self, source: str) -> str:
        import nbformat

        cell = nbformat.v4.new_code_cell(source)
        self.client.nb.cells.append(cell)
        self.client.execute_cell(cell, self.count)
        self.count += 1
        return _code(cell)

    def values(self, source: str) -> Any:
        return json.loads(self.run(f"import json\nprint(json.dumps({source}))").strip().splitlines()[-1])


@contextlib.contextmanager
def kernel(folder: Path) -> Iterator[Kernel]:
    import nbformat
    from nbclient import NotebookClient

    client = NotebookClient(
        nbformat.v4.new_notebook(), timeout=900, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    )
    with client.setup_kernel():
        yield Kernel(client)


ENGINE_PIDS = "[e.process.pid for e in __import__('hf_magic.remote.engines').remote.engines.running_engines()]"


def _engine_processes(kernel: Kernel) -> list[int]:
    guards = kernel.values(ENGINE_PIDS)
    return [pid for guard in guards for pid in (guard, *descendants(guard))]


@pytest.mark.integration
@pytest.mark.timeout(1800)
def test_engines_start_chat_switch_unload_and_die_with_a_killed_kernel(tmp_path: Path) -> None:
    vllm = vllm_python()
    with kernel(tmp_path) as k:
        kernel_pid = k.values("__import__('os').getpid()")
        k.run(
            "%load_ext hf_magic\n"
            f"%config HfChatMagics.engine_python = {{'vllm': {str(vllm)!r}}}\n"
            f"%config HfChatMagics.engine_args = {{'vllm': {' '.join(CPU_ARGS)!r}}}"
        )
        # vLLM started by the cell: its start-up as progress, then the reply.
        out = k.run("%%hfchat --engine vllm --max-new-tokens 8 --temperature 0\nWhat is the capital of France?")
        assert "Error" not in out and "Starting vllm on SmolLM2-135M-Instruct 5/5" in out, out
        log = k.run("%hfchat engine log")
        assert "vllm serving SmolLM2-135M-Instruct at http://127.0.0.1:" in log and "Starting vLLM" in log
        vllm_processes = _engine_processes(k)
        assert len(vllm_processes) >= 3, vllm_processes  # the guard, the API server, its engine core
        # A model switch: llama.cpp on the default GGUF (the kernel's own Python), and vLLM stops.
        out = k.run("%%hfchat --engine llama.cpp --max-new-tokens 8 --temperature 0\nHi")
        assert "Error" not in out and "Starting llama.cpp on SmolLM2-135M-Instruct" in out, out
        assert wait_gone(vllm_processes) == []
        llama_processes = _engine_processes(k)
        assert len(llama_processes) == 2
        # Unload stops it.
        assert "model unloaded" in k.run("%hfchat unload")
        assert wait_gone(llama_processes) == [] and _engine_processes(k) == []
        assert "stopped" in k.run("%hfchat engine status")
        # Started again, then the kernel dies by SIGKILL: no exit handler runs, the guard stops the engine.
        k.run("%%hfchat --engine llama.cpp --max-new-tokens 4\nHi")
        llama_processes = _engine_processes(k)
        assert llama_processes
        os.kill(kernel_pid, signal.SIGKILL)
    assert wait_gone([kernel_pid, *llama_processes]) == []


@pytest.mark.integration
def test_an_engine_stops_when_its_kernel_shuts_down(tmp_path: Path) -> None:
    with kernel(tmp_path) as k:
        k.run("%load_ext hf_magic")
        out = k.run("%%hfchat --engine llama.cpp --max-new-tokens 4\nHi")
        assert "Error" not in out, out
        processes = _engine_processes(k)
        assert processes
    # setup_kernel's exit shut the kernel down the polite way (what closing a notebook does).
    assert wait_gone(processes) == []


def test_a_failed_engine_start_is_one_line_with_the_logs_last_lines(
    ip: InteractiveShell, magics: HfChatMagics, capsys: pytest.CaptureFixture[str]
) -> None:
    magics.engine_args = {"llama.cpp": "--no_such_setting 1"}
    err = _error_line(ip, capsys, "--engine llama.cpp")
    assert "llama.cpp exited while starting" in err and "no_such_setting" in err
    ip.run_line_magic("hfchat", "engine log")
    log = capsys.readouterr().out
    assert "llama.cpp serving SmolLM2-135M-Instruct" in log and "stopped" in log and "no_such_setting" in log
