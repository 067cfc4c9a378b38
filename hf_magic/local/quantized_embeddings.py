"""The token embedding table and the output projection in int8 rows, for the named torchao quantizations.

transformers' ``TorchAoConfig`` leaves both in the model's dtype. On a small model they are a large share of what a
decode step reads: the default model's tied 49152x576 table is 57 MB of its 269 MB in bf16, read in full for every token
by the output projection, and after int4 it is the largest share of the bytes left. In int8 rows (a scale per
token), ``--quantize 4bit`` decoded the default model at 57.4 tok/s instead of 51.4 and held 91 MiB instead of 117,
with the first text 3 ms later (A/B in one process: ``benchmarks/run.py --only embeddings``, README "Speed").

torchao looks an ``Int8Tensor`` embedding up by dequantizing the whole table first, on every eager prefill pass.
``Int8RowsEmbedding`` dequantizes only the rows it looks up, with torchao's own ``dequantize_affine``, so each row
equals the whole-table dequantization bit for bit (tests/test_quantization.py).
"""

from __future__ import annotations

from typing import Any

import torch

from .quantization import quiet_torchao


class Int8RowsEmbedding(torch.nn.Embedding):
    """An ``nn.Embedding`` over a torchao ``Int8Tensor`` weight (one scale per row) that dequantizes only the rows
    it looks up. The weight may be the output projection's too (tied, as in the default model)."""

    def __init__(self, weight: torch.nn.Parameter, padding_idx: int | None = None) -> None:
        torch.nn.Module.__init__(self)  # nn.Embedding's own __init__ would allocate a float table
        self.num_embeddings, self.embedding_dim = weight.shape
        self.padding_idx = padding_idx
        self.max_norm, self.norm_type, self.scale_grad_by_freq, self.sparse = None, 2.0, False, False
        self.weight = weight

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # nn.Embedding's argument name
        # torchao is imported by now (quantize_embeddings did, quietly): no logging context on this hot path,
        # which in the compiled step would also be traced
        from torchao.quantization.quant_primitives import dequantize_affine

        table: Any = self.weight
        ids = input.reshape(-1)
        zero_point = None if table.zero_point is None else table.zero_point[ids]
        rows = dequantize_affine(
            table.qdata[ids], table.block_size, table.scale[ids], zero_point, torch.int8, output_dtype=table.dtype
        )
        return rows.view(*input.shape, self.embedding_dim)


FEW_ROWS = 8
"""Up to this many rows, the eager output projection uses torch's int8 matrix-vector kernel; past it, torchao's
product (which converts the table to the model's dtype, then multiplies) is faster: on a Zen 4 the kernel won at 1
and 32 rows of the 49152x576 table and lost at 300 (benchmarks/run.py --only embeddings times one row)."""


class Int8RowsOutput(torch.nn.Linear):
    """The output projection over an int8-rows table, fast for the prefill's last row.

    A prefill runs eagerly and projects only its last position, and torchao's eager product converts the whole
    49152-row table to compute it (24 ms of a short prompt's first text). For a few rows this calls
    ``torch._weight_int8pack_mm``, torch's CPU kernel for int8 weights with a scale per row: the op inductor's
    compiled code uses for the same product (torch/_inductor/fx_passes/quantization.py). Compiled code (the decode
    step) and more rows go through torchao as before. Only logits change path, never keys or values, and the
    choice rests on shapes alone, so a reused turn still computes what a fresh prefill does.
    """

    def __init__(self, weight: Any, bias: torch.nn.Parameter | None) -> None:
        torch.nn.Module.__init__(self)  # nn.Linear's own __init__ would allocate a float matrix
        self.out_features, self.in_features = weight.shape
        self.weight = weight
        self.register_parameter("bias", bias)  # nn.Linear declares it a Parameter, never None

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # nn.Linear's argument name
        table: Any = self.weight
        rows = input.reshape(-1, self.in_features)
        if torch.compiler.is_compiling() or rows.shape[0] > FEW_ROWS or input.device.type != "cpu":
            return torch.nn.functional.linear(input, self.weight, self.bias)
        scale = table.scale.reshape(-1).to(input.dtype)
        out = torch._weight_int8pack_mm(rows.contiguous(), table.qdata, scale)
        if self.bias is not None:
            out = out + self.bias
        return out.view(*input.shape[:-1], self.out_features)


def _symmetric_rows(weight: Any) -> bool:
    """Whether ``weight`` is an ``Int8Tensor`` with one scale per row and no zero point (what the kernel takes)."""
    zero = getattr(weight, "zero_point", None)
    return (
        type(weight).__name__ == "Int8Tensor"
        and list(weight.block_size) == [1, weight.shape[-1]]
        and (zero is None or not bool(zero.any()))
        and hasattr(torch, "_weight_int8pack_mm")
    )


def quantize_embeddings(model: Any) -> bool:
    """Put ``model``'s token embedding table, and its output projection, in int8 rows (tied ones stay tied).

    Returns False, changing nothing, where the table is not a plain ``nn.Embedding`` (Gemma's scaled embedding,
    for one, multiplies in its own forward) or is quantized already.
    """
    with quiet_torchao():
        from torchao import quantize_
        from torchao.quantization import Int8WeightOnlyConfig

    embedding = model.get_input_embeddings()
    output = model.get_output_embeddings()
    if type(embedding) is not torch.nn.Embedding or type(embedding.weight) is not torch.nn.Parameter:
        return False
    tied = output is not None and output.weight is embedding.weight

    def everything(module: torch.nn.Module, fqn: str) -> bool:
        return True  # quantize_ takes Linear layers only unless told otherwise

    quantize_(embedding, Int8WeightOnlyConfig(), filter_fn=everything)
    model.set_input_embeddings(Int8RowsEmbedding(embedding.weight, embedding.padding_idx))
    if tied:
        output.weight = embedding.weight
    elif isinstance(output, torch.nn.Linear) and type(output.weight) is torch.nn.Parameter:
        quantize_(output, Int8WeightOnlyConfig(), filter_fn=everything)
    if type(output) is torch.nn.Linear and _symmetric_rows(output.weight):
        model.set_output_embeddings(Int8RowsOutput(output.weight, output.bias))
    return True
