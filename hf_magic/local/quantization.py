"""Quantization by name ("8bit", "4bit"): the kind this machine runs fastest, through a library's public API.

``%%hfchat --quantize``, the panel's picker and ``model_kwargs={"quantization_config": "8bit"}`` all end here.
Which library serves a name depends on the device and on what the CPU computes natively, from the figures of
``benchmarks/speed_paths.py`` (README "Speed"):

- CPUs with native bf16 (AVX512-BF16, AMX) and CUDA GPUs: torchao's int8 weight-only tensors, and on the CPU its
  int4 tensors for ``_weight_int4pack_mm_for_cpu`` (32-weight groups, a scale and a zero each: the layout of
  the default model's Q4_1 GGUF); both compile into the decode step (``fast_decode.py``). On an AMX CPU
  (ENVIRONMENT.md) torchao int8 with a compiled step decoded 40.3 tok/s, bitsandbytes 8-bit 5.3.
- CPUs without it (AVX2): torch's int8 and int4 CPU kernels have no fast path there (measured on an AVX2 EPYC,
  one matrix-vector product of the default model's MLP: fp32 0.40 ms, int8 3.9 ms, int4 19 ms), so the names
  keep bitsandbytes, which runs everywhere.
- A 4-bit request on a GPU stays with bitsandbytes NF4: torchao's GPU int4 kernel needs the ``mslk`` library.

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
    on_gpu = device is not None and str(device).startswith("cuda")
    fast_torchao = torchao_available() and (on_gpu or _cpu_has_fast_quantized_kernels(device))
    if name == "8bit":
        return "torchao-int8" if fast_torchao else "bitsandbytes-8bit"
    return "torchao-int4" if fast_torchao and not on_gpu else "bitsandbytes-nf4"


def _cpu_has_fast_quantized_kernels(device: str | None) -> bool:
    """Whether the model goes to a CPU whose int8/int4 kernels in torch beat float32: one with native bf16."""
    if device not in (None, "cpu"):
        return False  # Apple's GPU: torchao's tensors have no kernels there
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
