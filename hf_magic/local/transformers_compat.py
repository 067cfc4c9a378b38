"""The one place hf_magic reads or sets a transformers internal, each with a test that fails on the release that
changes it (tests/test_transformers_compat.py).

- transformers has no public way to ask whether a model can generate from a default ``DynamicCache``: its own
  ``generate`` asks ``_supports_default_dynamic_cache`` (False for models with caches of their own: RWKV,
  xLSTM, Reformer, XLNet, the first MiniMax), and a name list of ours would drift from it.
- ``generate`` compiles the decode step only on accelerators unless a ``CompileConfig`` carries
  ``_compile_all_devices`` ("useful for testing purposes", says its comment); on a CPU it is what the compiled
  decode step of ``fast_decode.py`` needs.
"""

from __future__ import annotations

from typing import Any


def supports_default_dynamic_cache(model: Any) -> bool:
    """Whether ``generate`` would give ``model`` a ``DynamicCache`` of its own accord (True when the hook is gone:
    the caller's other checks, and ``ConversationCache.keep``'s refusal of a cache left unfilled, still apply)."""
    hook = getattr(model, "_supports_default_dynamic_cache", None)
    return bool(hook()) if callable(hook) else True


def compile_on_every_device(compile_config: Any) -> Any:
    """``compile_config`` (a ``transformers.CompileConfig``) marked so that ``generate`` compiles on the CPU too."""
    if not hasattr(type(compile_config), "_compile_all_devices"):
        raise AttributeError("transformers.CompileConfig no longer has _compile_all_devices")
    compile_config._compile_all_devices = True
    return compile_config
