"""The one place hf_magic reads a transformers internal, each with a test that fails on the release that changes it.

transformers has no public way to ask whether a model can generate from a default ``DynamicCache``: its own
``generate`` asks ``_supports_default_dynamic_cache`` (False for models with caches of their own: RWKV,
xLSTM, Reformer, XLNet, the first MiniMax), and a name list of ours would drift from it.
tests/test_transformers_compat.py checks the hook is still there and still answers.
"""

from __future__ import annotations

from typing import Any


def supports_default_dynamic_cache(model: Any) -> bool:
    """Whether ``generate`` would give ``model`` a ``DynamicCache`` of its own accord (True when the hook is gone:
    the caller's other checks, and ``ConversationCache.keep``'s refusal of a cache left unfilled, still apply)."""
    hook = getattr(model, "_supports_default_dynamic_cache", None)
    return bool(hook()) if callable(hook) else True
