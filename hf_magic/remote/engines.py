"""Serving engines hf_magic starts for you: vLLM or llama.cpp's server as a child process on 127.0.0.1, reached
through HuggingFaceEndpoint like any OpenAI-compatible server.

An engine runs under ``engine_guard.py`` in a process group of its own: ``ManagedEngine.stop()`` (unload, a model
switch), the exit handler and the death of this process (a killed kernel) all stop it with its helpers. Its start
reports ``ProgressEvent``s (stage ``"load"``) as its log passes known milestones, and a failed start is one
``EngineError`` line with the log's last lines.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from .. import config
from ..errors import EngineError, InvalidInputError
from ..progress import ProgressCallback, ProgressEvent

EngineName = Literal["vllm", "llama.cpp"]
ENGINES: tuple[EngineName, ...] = ("vllm", "llama.cpp")

READY_TIMEOUT_S = 600.0
"""vLLM-CPU is healthy ~60 s after start on 2 idle cores; a first start on a GPU compiles kernels for minutes."""
_STOP_TIMEOUT_S = 30.0
_GUARD = Path(__file__).with_name("engine_guard.py")
_LOG_TAIL_LINES = 8


@dataclass(frozen=True)
class EngineLaunch:
    """How to start one engine on one model: the module to run and its arguments (host and port added later)."""

    engine: EngineName
    module: str
    """Run as ``python -m MODULE``."""
    args: tuple[str, ...]
    served_name: str
    """The model name requests use (what ``/v1/models`` lists)."""
    milestones: tuple[str, ...] = ()
    """Log substrings in the order the engine prints them while it starts: each one reached is a progress step."""
    env: dict[str, str] = field(default_factory=dict)
    """Set for the engine unless the user's environment sets them already."""
    health_path: str = "/health"
    """Answers 200 once the engine serves (llama-cpp-python's server has no /health: /v1/models)."""
    address_args: tuple[str, ...] = ("--host", "{host}", "--port", "{port}")
    """Appended to ``args`` with the address filled in: how this engine is told where to listen."""
    feature_args: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(a file in the engine's package, arguments): added when that file exists, i.e. when the installed version
    has the feature, unless ``args`` already sets the first argument."""
    endpoint_fields: dict[str, Any] = field(default_factory=dict)
    """HuggingFaceEndpoint fields that suit this engine (a caller's own win)."""
    install_hint: str = ""
    """What to run when the engine's Python lacks ``module``."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ManagedEngine:
    """One engine process hf_magic started. ``url`` is its base URL; ``stop()`` ends it (idempotent)."""

    def __init__(self, launch: EngineLaunch, python: str, port: int, log_path: Path) -> None:
        self.launch = launch
        self.python = python
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = log_path.open("ab")
        address = [arg.format(host="127.0.0.1", port=port) for arg in launch.address_args]
        command = [python, str(_GUARD), python, "-m", launch.module, *launch.args, *address]
        env = {**launch.env, **os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("VIRTUAL_ENV", None)  # the engine's Python may be another venv's
        # A session of its own: a kernel interrupt (SIGINT to the kernel's group) must not reach the engine.
        # stdin stays a pipe only we hold: the guard stops the engine when it closes, however we end.
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=self._log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip
        self.started_at = time.monotonic()
        _RUNNING.add(self)
        global _LAST_STARTED
        _LAST_STARTED = self

    @property
    def engine(self) -> EngineName:
        return self.launch.engine

    @property
    def served_name(self) -> str:
        return self.launch.served_name

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        """Everything the engine has logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        kept = [line.strip() for line in self.log_text().splitlines() if line.strip()]
        return " | ".join(kept[-lines:])

    def wait_ready(self, progress: ProgressCallback | None = None, timeout: float = READY_TIMEOUT_S) -> None:
        """Block until ``GET /health`` answers 200, reporting the log's milestones as progress.

        Raises:
            EngineError: the engine exited, or was not healthy within ``timeout`` s (it is stopped then).
        """
        milestones = self.launch.milestones
        total = len(milestones) + 1
        label = f"Starting {self.engine} on {self.served_name}"
        reached = 0

        def report(done: bool = False) -> None:
            if progress:
                progress(ProgressEvent(stage="load", label=label, current=total if done else reached, total=total,
                                       done=done, bar_id=id(self)))  # fmt: skip

        report()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                code = self.process.returncode
                self.stop()
                raise EngineError(f"{self.engine} exited while starting (code {code}): {self.log_tail()}")
            if _answers(self.url + self.launch.health_path):
                report(done=True)
                return
            text = self.log_text()
            while reached < len(milestones) and milestones[reached] in text:
                reached += 1
                report()
            time.sleep(0.25)
        self.stop()
        raise EngineError(
            f"{self.engine} was not ready within {timeout:.0f} s (see %hfchat engine log): {self.log_tail()}"
        )

    def stop(self, timeout: float = _STOP_TIMEOUT_S) -> None:
        """Stop the engine and everything it started; returns once they are gone."""
        _RUNNING.discard(self)
        if self.process.stdin and not self.process.stdin.closed:
            try:
                self.process.stdin.close()  # the guard's cue
            except OSError:
                pass
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if not self._log.closed:
            self._log.close()

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited ({self.process.returncode})"
        return f"ManagedEngine({self.engine}, {self.served_name!r}, {self.url}, {state})"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


class _Running:
    """The engines this process started and has not stopped: stopped at interpreter exit."""

    def __init__(self) -> None:
        self._engines: list[ManagedEngine] = []
        self._lock = threading.Lock()

    def add(self, engine: ManagedEngine) -> None:
        with self._lock:
            self._engines.append(engine)

    def discard(self, engine: ManagedEngine) -> None:
        with self._lock:
            if engine in self._engines:
                self._engines.remove(engine)

    def all(self) -> list[ManagedEngine]:
        with self._lock:
            return list(self._engines)


_RUNNING = _Running()
_LAST_STARTED: ManagedEngine | None = None


def last_started() -> ManagedEngine | None:
    """The engine this process started last, running or not (a failed start's log is read from it)."""
    return _LAST_STARTED


def running_engines() -> list[ManagedEngine]:
    """Engines started by this process that are not stopped yet, oldest first."""
    return _RUNNING.all()


def stop_all() -> None:
    """Stop every engine this process started (also run at interpreter exit)."""
    for engine in running_engines():
        engine.stop()


atexit.register(stop_all)


@dataclass
class EngineDefaults:
    """What engines start with when a caller names nothing: ``%config HfChatMagics.engine_python`` and
    ``engine_args`` set these, so cells and the panel start engines alike."""

    python: str | dict[str, str] | None = None
    """The Python that runs engines, or one per engine name (``{"vllm": "~/vllm/bin/python"}``); unset:
    ``HF_MAGIC_ENGINE_PYTHON``, else the kernel's own."""
    arguments: dict[str, str] = field(default_factory=dict)
    """Extra server arguments per engine name, shell-quoted (``{"vllm": "--tensor-parallel-size 2"}``)."""


DEFAULTS = EngineDefaults()


def engine_python(python: str | None, engine: str | None = None) -> str:
    """The Python that runs ``engine``: ``python`` if given (a path, or a command on PATH), else the configured
    one (for this engine), else ``HF_MAGIC_ENGINE_PYTHON``, else this one."""
    configured = DEFAULTS.python.get(engine or "") if isinstance(DEFAULTS.python, dict) else DEFAULTS.python
    python = python or configured or config.engine_python()
    if not python:
        return sys.executable
    candidate = Path(python).expanduser()
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(python)
    if found:
        return found
    raise InvalidInputError(
        f"The engine Python {python!r} does not exist: set %config HfChatMagics.engine_python to a Python "
        "executable (e.g. '~/vllm-venv/bin/python')."
    )


def engine_package_dirs(launch: EngineLaunch, python: str) -> list[Path]:
    """Where ``python`` has the engine's package, found without importing it (vLLM takes seconds to import).

    Raises:
        EngineError: ``python`` cannot run, or has no such package; the message says how to install it.
    """
    probe = (
        "import importlib.util, json, sys; spec = importlib.util.find_spec(sys.argv[1]); "
        "print(json.dumps(list(spec.submodule_search_locations or []) if spec else None))"
    )
    top = launch.module.split(".")[0]
    try:
        result = subprocess.run([python, "-c", probe, top], capture_output=True, text=True, timeout=60)
        found = json.loads(result.stdout) if result.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise EngineError(f"Cannot run the engine Python {python} ({exc}): check engine_python.") from exc
    if found is None:
        raise EngineError(
            f"{python} has no {launch.engine} installed: {launch.install_hint} and point "
            "%config HfChatMagics.engine_python (or engine_python=) at that Python."
        )
    return [Path(folder) for folder in found]


def _with_features(launch: EngineLaunch, package_dirs: list[Path]) -> EngineLaunch:
    """``launch`` plus the arguments of the optional features this version of the engine has."""
    extra: list[str] = []
    for module_file, args in launch.feature_args:
        if args[0] not in launch.args and any((folder / module_file).is_file() for folder in package_dirs):
            extra += args
    return replace(launch, args=(*launch.args, *extra)) if extra else launch


def start_engine(
    launch: EngineLaunch,
    python: str | None = None,
    progress: ProgressCallback | None = None,
    timeout: float = READY_TIMEOUT_S,
) -> ManagedEngine:
    """Start ``launch`` under ``python`` on a free port of 127.0.0.1 and wait until it is healthy.

    Raises:
        InvalidInputError: ``python`` does not exist.
        EngineError: the engine is not installed there, exited, or did not become healthy in time.
    """
    executable = engine_python(python, launch.engine)
    launch = _with_features(launch, engine_package_dirs(launch, executable))
    log_dir = config.cache_dir() / "engine-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    fd, log_name = tempfile.mkstemp(prefix=f"{launch.engine}-", suffix=".log", dir=log_dir)
    os.close(fd)
    engine = ManagedEngine(launch, executable, free_port(), Path(log_name))
    engine.wait_ready(progress, timeout)
    return engine


def engine_args(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """Extra engine arguments given as one shell-quoted string or as a list."""
    if not text:
        return ()
    if isinstance(text, str):
        import shlex

        return tuple(shlex.split(text))
    return tuple(text)
