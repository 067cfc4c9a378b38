"""Quantization by name ("8bit", "4bit"): the kind this machine runs fastest, through a library's public API.

``%%hfchat --quantize``, the panel's picker and ``model_kwargs={"quantization_config": "8bit"}`` all end here.
Which library serves a name depends on the device and on what the CPU computes natively (README "Speed";
figures from benchmarks/speed_paths.py and the probes named below):

- 8bit: torchao's int8 weight-only tensors (``Int8WeightOnlyConfig`` through transformers' ``TorchAoConfig``)
  everywhere torchao is installed. On an AMX CPU (ENVIRONMENT.md) with the compiled step: 40.3 tok/s, against
  5.3 for bitsandbytes 8-bit; on an AVX2 EPYC, eager, one decode step took about half bitsandbytes' time.
- 4bit on a CPU with native bf16 (AVX512-BF16, AMX): torchao's CPU int4 tensors (torch's
  ``_weight_int4pack_mm_for_cpu``: 32-weight groups with a scale and a zero each, the layout of the default
  model's Q4_1 GGUF), compiled into the decode step.
- 4bit elsewhere: bitsandbytes NF4. torch's int4 CPU kernel has no fast float32 path (one matrix-vector product
  of the default model's MLP on the AVX2 EPYC: 19 ms, against 0.40 ms unquantized), and torchao's GPU int4
  kernel needs the ``mslk`` library.

With either torchao kind, the token embedding table and the output projection become int8 rows as well
(``quantized_embeddings.py``): transformers leaves them in the model's dtype, and on a small model they are the
largest share of the bytes a decode step reads.

An explicit config object (``BitsAndBytesConfig``, ``TorchAoConfig``...) in ``model_kwargs`` is used as given.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Iterator
from typing import Any, Literal

from ..errors import InvalidInputError

QuantizeName = Literal["4bit", "8bit"]
QUANTIZE_NAMES: tuple[QuantizeName, ...] = ("4bit", "8bit")

INT4_GROUP = 32
"""Weights per int4 group: the block of the default model's Q4_1 GGUF (a scale and a minimum per 32 weights)."""


def quantization_config(name: str, device: str | None = None) -> Any:
    """The quantization config that serves ``name`` ("8bit" or "4bit") fastest where the model goes.

    Args:
        name: "8bit" or "4bit".
        device: where the model is loaded (``None`` or "cpu": the CPU; "cuda", "cuda:N": a GPU).

    Raises:
        InvalidInputError: ``name`` is not one of ``QUANTIZE_NAMES``.
    """
    kind = quantization_kind(name, device)
    if kind == "torchao-int8":
        from transformers import TorchAoConfig

        with quiet_torchao():
            from torchao.quantization import Int8WeightOnlyConfig

            return TorchAoConfig(Int8WeightOnlyConfig())
    if kind == "torchao-int4":
        from transformers import TorchAoConfig

        with quiet_torchao():
            # torchao 0.18 keeps its CPU int4 tensor (torch's own kernel) under this name.
            from torchao.prototype.quantization.int4.inference_workflow import PrototypeInt4WeightOnlyConfig

            return TorchAoConfig(PrototypeInt4WeightOnlyConfig(group_size=INT4_GROUP))
    from transformers import BitsAndBytesConfig

    if kind == "bitsandbytes-8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype="bfloat16", bnb_4bit_use_double_quant=True
    )


QuantizationKind = Literal["torchao-int8", "torchao-int4", "bitsandbytes-8bit", "bitsandbytes-nf4"]


def quantization_kind(name: str, device: str | None = None) -> QuantizationKind:
    """Which library and format serve ``name`` on ``device`` (see the module's docstring for why)."""
    if name not in QUANTIZE_NAMES:
        raise InvalidInputError(f"Unknown quantization {name!r}: use '4bit' or '8bit'.")
    placement = "cpu" if device is None else str(device).split(":")[0]
    torchao = torchao_available() and placement in ("cpu", "cuda")  # Apple's GPU: no torchao kernels
    if name == "8bit":
        return "torchao-int8" if torchao else "bitsandbytes-8bit"
    return "torchao-int4" if torchao and placement == "cpu" and _cpu_computes_bf16() else "bitsandbytes-nf4"


def _cpu_computes_bf16() -> bool:
    from .loading import cpu_computes_bf16

    return cpu_computes_bf16()


def torchao_available() -> bool:
    return importlib.util.find_spec("torchao") is not None


def resolve_model_kwargs(model_kwargs: dict[str, Any], device: str | None) -> dict[str, Any]:
    """``model_kwargs`` with a named quantization (``quantization_config="8bit"``) replaced by its config."""
    named = model_kwargs.get("quantization_config")
    if not isinstance(named, str):
        return model_kwargs
    return {**model_kwargs, "quantization_config": quantization_config(named, device)}


class _TorchaoImportNoise(logging.Filter):
    """What torchao and torch log when torchao is first imported, whoever imports it (transformers does, with its
    first model class, quantized or not): the CPU wheel's CUDA kernels that cannot load here, and torch's
    deprecation note for each enum torchao registers. Neither concerns a user, and both landed in notebooks."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return not (text.startswith("Failed to load") or "is an Enum subclass" in text)


def silence_torchao_import_noise() -> None:
    """Drop torchao's import-time noise from now on (``import hf_magic`` calls this; it imports nothing)."""
    for name in ("torchao", "torch.utils._pytree"):
        logger = logging.getLogger(name)
        if not any(isinstance(existing, _TorchaoImportNoise) for existing in logger.filters):
            logger.addFilter(_TorchaoImportNoise())


@contextlib.contextmanager
def quiet_torchao() -> Iterator[None]:
    """Import torchao without its start-up noise: its CPU wheel ships CUDA kernels that cannot load on a machine
    without a GPU, and it logs a warning per library (and torch one per enum it registers) on first import."""
    loggers = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        if torchao_available():
            import torchao  # noqa: F401  (imported here once, quietly; transformers imports it on every load)
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def weight_bytes(model: Any) -> int:
    """Bytes the model's parameters and buffers hold, counting the packed data inside quantized tensors
    (``get_memory_footprint`` counts a torchao tensor at its nominal dtype, as if it were not quantized)."""
    import torch

    def size(tensor: Any) -> int:
        flatten = getattr(tensor, "__tensor_flatten__", None)
        if flatten is not None and type(tensor) is not torch.nn.Parameter:
            names, _ = flatten()
            return sum(size(getattr(tensor, name)) for name in names if getattr(tensor, name) is not None)
        if isinstance(tensor, torch.nn.Parameter) and type(tensor.data) is not torch.Tensor:
            return size(tensor.data)
        return int(tensor.nelement() * tensor.element_size())

    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) not in seen:  # tied weights count once
            seen.add(id(tensor))
            total += size(tensor)
    return total
