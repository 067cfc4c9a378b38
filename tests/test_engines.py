"""The engine manager's process handling, on a real child process that needs no model: Python's own http.server
(serving a folder with a ``health`` file, so ``GET /health`` answers 200 as an engine's would).

Real engines (vLLM, llama.cpp) are started in test_vllm_endpoint.py, test_engine_magic.py and test_llama_cpp.py.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from hf_magic.errors import EngineError, InvalidInputError
from hf_magic.remote.engines import EngineLaunch, ManagedEngine, running_engines, start_engine
from tests.support.processes import alive, descendants, wait_gone


@pytest.fixture
def http_launch(tmp_path: Path) -> EngineLaunch:
    (tmp_path / "health").write_text("ok")
    return EngineLaunch(
        engine="vllm",
        module="http.server",
        args=("--directory", str(tmp_path)),
        served_name="fake",
        address_args=("--bind", "{host}", "{port}"),
    )


def test_an_engine_starts_reports_progress_and_stops_with_all_it_started(http_launch: EngineLaunch) -> None:
    events = []
    engine = start_engine(http_launch, progress=events.append, timeout=60)
    try:
        assert engine.url.startswith("http://127.0.0.1:")
        assert engine in running_engines()
        assert events[0].stage == "load" and events[-1].done and events[-1].fraction == 1.0
        server = descendants(engine.process.pid)
        assert len(server) == 1 and alive(server[0])
    finally:
        engine.stop()
    assert not alive(engine.process.pid) and wait_gone(server) == []
    assert engine not in running_engines()
    engine.stop()  # a second stop is harmless


def test_the_engine_stops_when_the_process_that_started_it_is_killed(http_launch: EngineLaunch, tmp_path: Path) -> None:
    # A kernel killed with SIGKILL runs no exit handler: the guard sees its stdin close and stops the engine.
    script = textwrap.dedent(
        f"""
        import sys, time
        from hf_magic.remote.engines import EngineLaunch, start_engine
        launch = EngineLaunch(engine="vllm", module="http.server", args=("--directory", {str(tmp_path)!r}),
                              served_name="fake", address_args=("--bind", "{{host}}", "{{port}}"))
        engine = start_engine(launch, timeout=60)
        print(engine.process.pid, flush=True)
        time.sleep(600)
        """
    )
    launcher = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert launcher.stdout is not None
        guard = int(launcher.stdout.readline())
        server = descendants(guard)
        assert server and all(alive(pid) for pid in server)
    finally:
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
    assert wait_gone([guard, *server]) == []


def test_a_failed_start_is_one_line_with_the_log_tail(http_launch: EngineLaunch) -> None:
    launch = replace(http_launch, args=(*http_launch.args, "--no-such-flag"))
    with pytest.raises(EngineError) as caught:
        start_engine(launch, timeout=60)
    message = str(caught.value)
    assert "\n" not in message and "exited while starting" in message and "--no-such-flag" in message
    assert running_engines() == []


def test_an_engine_python_without_the_engine_says_how_to_install_it() -> None:
    launch = EngineLaunch(
        engine="vllm", module="no_such_engine_module.server", args=(), served_name="x", install_hint="pip install it"
    )
    with pytest.raises(EngineError, match="has no vllm installed: pip install it"):
        start_engine(launch)


def test_an_engine_python_that_does_not_exist_is_refused(http_launch: EngineLaunch) -> None:
    with pytest.raises(InvalidInputError, match="engine_python"):
        start_engine(http_launch, python="/no/such/python")


def test_a_stopped_engine_reads_as_exited(http_launch: EngineLaunch) -> None:
    engine: ManagedEngine = start_engine(http_launch, timeout=60)
    engine.stop()
    assert not engine.running and "exited" in repr(engine)


def test_the_engine_stops_when_its_guard_is_killed(http_launch: EngineLaunch) -> None:
    engine = start_engine(http_launch, timeout=60)
    server = descendants(engine.process.pid)
    engine.process.kill()  # SIGKILL: the guard runs no handler; the parent-death signal reaches the server
    try:
        assert wait_gone(server, timeout=30) == []
    finally:
        engine.stop()
