"""What ``%hfchat status`` and ``%hfchat models`` show, as tables."""

from __future__ import annotations

from .render import InfoTable
from .session import ChatSession
from .units import format_bytes


def status_table(session: ChatSession) -> InfoTable:
    """What ``%hfchat status`` shows: the session's model and where and how it runs."""
    spec = session.spec
    loaded_name = getattr(getattr(session.chat_model, "llm", None), "model_name", None)
    rows = [("session", session.name), ("model", loaded_name or spec.model), ("backend", spec.backend)]
    if spec.backend == "endpoint":
        rows.append(("endpoint", spec.endpoint_url or spec.provider or "auto"))
    llm = getattr(session.chat_model, "llm", None)
    model = getattr(llm, "model", None) if spec.backend == "pipeline" else None
    rows.append(("loaded", "yes" if session.loaded else "no"))
    if model is not None:
        rows.append(("device", str(getattr(model, "device", "?"))))
        rows.append(("dtype", str(getattr(model, "dtype", "?")).replace("torch.", "")))
        footprint = getattr(model, "get_memory_footprint", None)
        if callable(footprint):
            rows.append(("memory", format_bytes(float(footprint()))))
    else:
        rows += [(key, value) for key, value in (("device", spec.device), ("dtype", spec.dtype)) if value]
    rows.append(("quantization", spec.quantize or "none"))
    context = session.context_length
    rows.append(("context length", str(context) if context else "unknown"))
    used, _ = session.context_fill()
    rows.append(("turns", f"{len(session.turns)} ({used} tokens in context)"))
    return InfoTable("hf_magic status", rows)


def models_table() -> InfoTable:
    """What ``%hfchat models`` shows: the embedded default model and the models in the hub cache."""
    from .model_catalog import local_choices

    rows = []
    for found in local_choices():
        size = format_bytes(float(found.size_on_disk)) if found.size_on_disk else "not converted yet"
        rows.append((found.model_id, f"{found.source}, {size}" + (f", {found.path}" if found.path else "")))
    return InfoTable("Models available without the network", rows or [("(none)", "")])
