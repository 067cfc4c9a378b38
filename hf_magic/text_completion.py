"""Backend deltas as langchain text-completion chunks, for the ``LLM`` interface both backends offer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.outputs import GenerationChunk

from .backend import ChatDelta


def generation_chunk(delta: ChatDelta) -> GenerationChunk:
    """One delta as a chunk; the last one carries finish reason and usage in ``generation_info``."""
    info = None
    if delta.finish_reason is not None:
        usage = delta.usage.as_usage_metadata() if delta.usage else None
        info = {"finish_reason": delta.finish_reason, "usage": usage}
    return GenerationChunk(text=delta.text, generation_info=info)


def stream_chunks(
    deltas: Iterator[ChatDelta], run_manager: CallbackManagerForLLMRun | None
) -> Iterator[GenerationChunk]:
    """Chunks for ``deltas``, reporting each new piece of text to the run's callbacks."""
    for delta in deltas:
        chunk = generation_chunk(delta)
        if run_manager and delta.text:
            run_manager.on_llm_new_token(delta.text, chunk=chunk)
        yield chunk


async def astream_chunks(
    deltas: AsyncIterator[ChatDelta], run_manager: AsyncCallbackManagerForLLMRun | None
) -> AsyncIterator[GenerationChunk]:
    """``stream_chunks`` for async streams."""
    async for delta in deltas:
        chunk = generation_chunk(delta)
        if run_manager and delta.text:
            await run_manager.on_llm_new_token(delta.text, chunk=chunk)
        yield chunk
