"""EngineEndpoint: a HuggingFaceEndpoint that owns the engine hf_magic started for it, and stops it on ``close()``.

Example:
    >>> with EngineEndpoint.start("vllm", "default", engine_python="~/vllm/bin/python") as llm:
    ...     ChatHuggingFace(llm=llm).invoke("What is the capital of France?")
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

from pydantic import PrivateAttr

from ..errors import InvalidInputError
from ..progress import ProgressCallback
from .endpoint import HuggingFaceEndpoint
from .engine_launch import engine_launch
from .engines import DEFAULTS, ENGINES, READY_TIMEOUT_S, EngineName, ManagedEngine, engine_args, start_engine


class EngineEndpoint(HuggingFaceEndpoint):
    """The endpoint of an engine (vLLM, llama.cpp) that hf_magic started as a child process on 127.0.0.1.

    Requests go through HuggingFaceEndpoint unchanged: the engine is one more OpenAI-compatible server. ``close()``
    stops it (``ChatSession`` calls it on unload and on a model switch); so does garbage collection of the endpoint,
    the interpreter's exit, and the death of this process.
    """

    _engine: ManagedEngine | None = PrivateAttr(default=None)

    @classmethod
    def start(
        cls,
        engine: str,
        model: str = "default",
        *,
        gguf_file: str | None = None,
        engine_python: str | None = None,
        engine_arguments: str | Sequence[str] | None = None,
        progress: ProgressCallback | None = None,
        timeout: float = READY_TIMEOUT_S,
        **endpoint_kwargs: Any,
    ) -> EngineEndpoint:
        """Start ``engine`` on ``model`` and return its endpoint once the engine is healthy.

        Args:
            engine: ``"vllm"`` or ``"llama.cpp"``.
            model: ``"default"``, a hub id or a local folder (vLLM); for llama.cpp also a ``.gguf`` path, or a GGUF
                repo with ``gguf_file``.
            gguf_file: the file of a GGUF repo to run (llama.cpp only).
            engine_python: the Python that has the engine installed (default: ``engines.DEFAULTS.python``, else
                ``HF_MAGIC_ENGINE_PYTHON``, else this one).
            engine_arguments: more arguments for the engine's server (a shell-quoted string or a list; default:
                ``engines.DEFAULTS.arguments[engine]``).
            progress: receives the model's download events and the engine's start-up as ``load`` events.
            endpoint_kwargs: HuggingFaceEndpoint fields (``max_new_tokens``, ``temperature``, ``timeout``...).

        Raises:
            InvalidInputError: an unknown engine, or a model the engine cannot run.
            ModelNotFoundError: the model or GGUF file does not exist.
            EngineError: the engine is not installed in ``engine_python``, or failed to start (with its log's tail).
        """
        name = _engine_name(engine)
        arguments = engine_args(engine_arguments if engine_arguments is not None else DEFAULTS.arguments.get(name))
        launch = engine_launch(name, model, gguf_file, arguments, progress)
        managed = start_engine(launch, engine_python, progress, timeout)
        try:
            fields = {**managed.launch.endpoint_fields, **endpoint_kwargs}
            llm = cls(endpoint_url=managed.url, repo_id=managed.served_name, **fields)
        except BaseException:
            managed.stop()
            raise
        llm._engine = managed
        # A safety net for endpoints dropped without close(): the engine goes with the last reference.
        weakref.finalize(llm, managed.stop)
        return llm

    @property
    def engine(self) -> ManagedEngine | None:
        """The running engine (``None`` after ``close()``)."""
        return self._engine

    def close(self) -> None:
        """Stop the engine and everything it started; the endpoint cannot answer afterwards."""
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.stop()

    def __enter__(self) -> EngineEndpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _engine_name(engine: str) -> EngineName:
    for name in ENGINES:
        if engine == name:
            return name
    raise InvalidInputError(f"Unknown engine {engine!r}: use {' or '.join(repr(n) for n in ENGINES)}.")
