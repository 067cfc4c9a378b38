"""Per-token log-probabilities of a local generation, in OpenAI's shape, from transformers' own scores.

``generate`` returns the model's raw logits of each step (``output_logits``), normalised here with one
log-softmax per step; ``compute_transition_scores`` picks the chosen tokens' log-probabilities out of them.
Raw logits are the model's own numbers: before repetition penalty, the grammar mask and the sampling warpers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# OpenAI reports tokens that could not be produced with this floor instead of -inf (not valid JSON).
_FLOOR = -9999.0


class GenerationLogprobs:
    """What one generation asks ``generate`` for, and the log-probabilities read from its output.

    Example:
        >>> logprobs = GenerationLogprobs(top=3)
        >>> output = model.generate(ids, **logprobs.generate_kwargs())
        >>> logprobs.read(model, output)
        >>> logprobs.entries(generated_ids, tokenizer.decode)
    """

    def __init__(self, top: int = 0) -> None:
        self._top = max(0, top)
        self._chosen: list[float] = []
        self._alternatives: list[list[tuple[int, float]]] = []

    @staticmethod
    def generate_kwargs() -> dict[str, Any]:
        return {"output_logits": True, "return_dict_in_generate": True}

    def read(self, model: Any, output: Any) -> None:
        """Keep the chosen tokens' log-probabilities (and the top alternatives) of ``generate``'s ``output``."""
        import torch

        # One log-softmax per step (in float32: bf16 would round it) serves both the chosen token and the top
        # alternatives, so a greedy token's logprob is exactly its top entry; compute_transition_scores picks the
        # chosen tokens' scores out of it, aligned to the generated part of the sequence.
        steps = tuple(torch.log_softmax(step.float(), dim=-1) for step in output.logits)
        if not steps:
            return
        scores = model.compute_transition_scores(output.sequences, steps, normalize_logits=False)
        self._chosen = scores[0].tolist()
        if self._top:
            self._alternatives = []
            for step in steps:
                values, ids = step[0].topk(min(self._top, step.shape[-1]))
                self._alternatives.append(list(zip(ids.tolist(), values.tolist(), strict=True)))

    def entries(self, generated_ids: list[int], decode: Callable[[list[int]], str]) -> list[dict[str, Any]]:
        """``[{"token", "logprob", "bytes", "top_logprobs": [...]}, ...]`` for the generated tokens."""
        result = []
        for index, (token_id, logprob) in enumerate(zip(generated_ids, self._chosen, strict=False)):
            top = self._alternatives[index] if index < len(self._alternatives) else []
            result.append(
                {
                    **_token_entry(token_id, logprob, decode),
                    "top_logprobs": [_token_entry(alt_id, alt, decode) for alt_id, alt in top],
                }
            )
        return result


def _token_entry(token_id: int, logprob: float, decode: Callable[[list[int]], str]) -> dict[str, Any]:
    text = decode([token_id])
    return {"token": text, "logprob": max(logprob, _FLOOR), "bytes": list(text.encode("utf-8"))}
