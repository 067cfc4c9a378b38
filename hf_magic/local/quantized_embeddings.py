"""The token embedding table and the output projection in int8 rows, for the named torchao quantizations.

transformers' ``TorchAoConfig`` leaves both in the model's dtype. On a small model they are a large share of what a
decode step reads: the default model's tied 49152x576 table is 57 MB of its 269 MB in bf16, read in full for every token
by the output projection, and after int4 it is the largest share of the bytes left. In int8 rows (a scale per
token), ``--quantize 4bit`` decoded the default model at 58.2 tok/s instead of 51.3 and held 91 MiB instead of 117
(A/B in one process: ``benchmarks/run.py --only embeddings``, README "Speed").

torchao looks an ``Int8Tensor`` embedding up by dequantizing the whole table first: in an eager prefill that put a
short prompt's first text at about 270 ms instead of 150 (one try, 4bit). ``Int8RowsEmbedding`` dequantizes only
the rows it looks up, with torchao's own ``dequantize_affine``, so each row equals the whole-table dequantization
bit for bit (tests/test_quantization.py).
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
        with quiet_torchao():
            from torchao.quantization.quant_primitives import dequantize_affine

        table: Any = self.weight
        ids = input.reshape(-1)
        zero_point = None if table.zero_point is None else table.zero_point[ids]
        rows = dequantize_affine(
            table.qdata[ids], table.block_size, table.scale[ids], zero_point, torch.int8, output_dtype=table.dtype
        )
        return rows.view(*input.shape, self.embedding_dim)


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
    return True
