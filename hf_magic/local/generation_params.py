"""Generation settings as the local pipeline takes them: pipeline-style keyword arguments, and what it refuses."""

from __future__ import annotations

from typing import Any

from ..backend import GenerationParams
from ..errors import InvalidInputError

GENERATION_KEYS = (
    "max_new_tokens",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "do_sample",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
)


def supported(params: GenerationParams) -> GenerationParams:
    """``params``, after refusing what local generation cannot do (rather than ignoring it).

    Raises:
        InvalidInputError: ``presence_penalty`` or ``frequency_penalty`` (transformers has neither).
    """
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(params, name) is not None:
            raise InvalidInputError(
                f"{name} is not supported by the local pipeline: use repetition_penalty (e.g. 1.1, transformers' "
                "penalty on tokens already generated), or an endpoint, which sends it to the server."
            )
    return params


def params_from_kwargs(kwargs: dict[str, Any]) -> GenerationParams:
    """GenerationParams from pipeline-style keyword arguments (unknown keys are ignored)."""
    values = {key: kwargs[key] for key in GENERATION_KEYS if kwargs.get(key) is not None}
    stop = kwargs.get("stop") or kwargs.get("stop_sequences") or ()
    if isinstance(stop, str):
        stop = (stop,)
    return GenerationParams(stop=tuple(stop), **values)
