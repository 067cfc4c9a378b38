"""Shared fixtures. Fixtures that start real servers live in tests/support/ and are registered here."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The turn log of every session and kernel the tests start goes to a folder of this test run, never the user's.
os.environ["HF_MAGIC_HOME"] = tempfile.mkdtemp(prefix="hf_magic_home_")
atexit.register(shutil.rmtree, os.environ["HF_MAGIC_HOME"], ignore_errors=True)
# Kernels, notebooks and the many tiny models decode eagerly: compiling each one would add minutes to the suite.
# The session's default model below and tests/test_fast_decode.py ask for the compiled step explicitly.
os.environ.setdefault("HF_MAGIC_COMPILE", "0")

pytest_plugins: list[str] = [
    "tests.support.olah",
    "tests.support.serve",
    "tests.support.http_recorder",
    "tests.support.jupyterlab",
    "tests.support.mcp_server",
    "tests.support.vllm",
    "tests.support.log_files",
]


@pytest.fixture(scope="session")
def default_llm():
    """The embedded default model in a real transformers pipeline, loaded once per test session, decoding through
    the compiled step where this machine can compile it (README "Speed"), so the integration tests run that path."""
    from hf_magic import HuggingFacePipeline

    return HuggingFacePipeline.from_model_id(
        "default",
        task="text-generation",
        pipeline_kwargs={"max_new_tokens": 64, "do_sample": False},
        compile_decode=True,
    )


@pytest.fixture(scope="session")
def chat_model(default_llm):
    from hf_magic import ChatHuggingFace

    return ChatHuggingFace(llm=default_llm)


@pytest.fixture(scope="session")
def hf_shell():
    """This process's IPython shell (a singleton) with hf_magic loaded."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "hf_magic")
    return shell
