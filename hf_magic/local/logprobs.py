"""Per-token log-probabilities of a local generation, recorded by a logits processor, in OpenAI's shape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# OpenAI reports tokens that could not be produced with this floor instead of -inf (not valid JSON).
_FLOOR = -9999.0


class LogprobsRecorder:
    """A ``generate`` logits processor that changes nothing and remembers the model's log-probabilities.

    Each step keeps the top ``top`` alternatives and the whole row until the next step reveals which
    token was chosen; ``entries`` is called once generation has ended, with the generated ids.
    It sits before the grammar mask and the sampling warpers, so the numbers are the model's own.
    """

    def __init__(self, top: int = 0) -> None:
        self._top = max(0, top)
        self._chosen: list[float] = []
        self._alternatives: list[list[tuple[int, float]]] = []
        self._previous: Any = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        row = torch.log_softmax(scores[0].float(), dim=-1)
        if self._previous is not None:
            self._chosen.append(float(self._previous[int(input_ids[0, -1])]))
        self._previous = row
        if self._top:
            values, ids = row.topk(min(self._top, row.shape[-1]))
            self._alternatives.append(list(zip(ids.tolist(), values.tolist(), strict=True)))
        return scores

    def entries(self, generated_ids: list[int], decode: Callable[[list[int]], str]) -> list[dict[str, Any]]:
        """``[{"token", "logprob", "bytes", "top_logprobs": [...]}, ...]`` for the generated tokens."""
        chosen = list(self._chosen)
        if self._previous is not None and len(chosen) < len(generated_ids):
            chosen.append(float(self._previous[generated_ids[len(chosen)]]))
        result = []
        for index, (token_id, logprob) in enumerate(zip(generated_ids, chosen, strict=False)):
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
