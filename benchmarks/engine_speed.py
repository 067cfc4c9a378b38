"""Benchmark sections for the engines hf_magic starts (hooked into benchmarks/run.py):

- ``llamacpp``: decode speed of the default model's GGUF through hf_magic (the llama.cpp engine, reached by
  HuggingFaceEndpoint) against raw llama-cpp-python in this process; goal >= 0.95x.
- ``vllm``: HuggingFaceEndpoint invoke against raw InferenceClient on one vLLM server; goal <= 1.03x.

Both sides run in the same process and alternate pair by pair, so a machine that gets busier mid-run slows both.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

STORY = [{"role": "user", "content": "Write a long story about a lighthouse keeper who finds a message in a bottle."}]
QUESTION = [
    {"role": "system", "content": "You're a helpful assistant"},
    {"role": "user", "content": "Name three colors."},
]


def _decode_rate(pieces: Iterable[Any], text_of: Callable[[Any], str]) -> tuple[float, int]:
    """Tokens per second after the first token (decode only, prefill excluded) and how many pieces came; each
    streamed piece of both servers and llama-cpp-python is one token."""
    first: float | None = None
    count = 0
    for piece in pieces:
        if not text_of(piece):
            continue
        count += 1
        if first is None:
            first = time.perf_counter()
    if first is None or count < 2:
        return 0.0, count
    return (count - 1) / (time.perf_counter() - first), count


def section_llama_cpp(models: Any, report: Any, new_tokens: int = 128, pairs: int = 5) -> None:
    """hf_magic's llama.cpp engine vs raw llama-cpp-python on the embedded model's GGUF, greedy."""
    from llama_cpp import Llama

    from hf_magic import ChatHuggingFace
    from hf_magic.local.loading import default_gguf_path
    from hf_magic.remote.engine_endpoint import EngineEndpoint

    # The thread count llama-cpp-python's server takes by default (half the logical CPUs), for both sides.
    threads = max(multiprocessing.cpu_count() // 2, 1)
    raw = Llama(model_path=str(default_gguf_path()), n_threads=threads, n_ctx=4096, verbose=False)

    def raw_rate() -> tuple[float, int]:
        stream = raw.create_chat_completion(STORY, max_tokens=new_tokens, temperature=0, stream=True)
        return _decode_rate(stream, lambda chunk: chunk["choices"][0]["delta"].get("content") or "")

    with EngineEndpoint.start("llama.cpp", "default", max_new_tokens=new_tokens, temperature=0) as llm:
        chat = ChatHuggingFace(llm=llm)

        def hf_rate() -> tuple[float, int]:
            return _decode_rate(chat.stream(STORY), lambda chunk: str(chunk.content))

        raw_rate(), hf_rate()  # warm-up both
        raw_rates, hf_rates, counts = [], [], set()
        for _ in range(pairs):
            rate, count = raw_rate()
            raw_rates.append(rate)
            counts.add(count)
            rate, count = hf_rate()
            hf_rates.append(rate)
            counts.add(count)
    raw_s, hf_s = statistics.median(raw_rates), statistics.median(hf_rates)
    report.add(
        "llamacpp", f"raw llama-cpp-python in-process, {threads} thread(s), median of {pairs}", f"{raw_s:.1f} tok/s"
    )
    report.add(
        "llamacpp",
        f"hf_magic --engine llama.cpp (server + HuggingFaceEndpoint stream), tokens per reply {sorted(counts)}",
        f"{hf_s:.1f} tok/s ({hf_s / raw_s:.3f}x raw)",
        ">= 0.95x raw",
        hf_s / raw_s >= 0.95,
    )


def section_vllm(models: Any, report: Any, new_tokens: int = 32, pairs: int = 12) -> None:
    """hf_magic HuggingFaceEndpoint.invoke vs raw InferenceClient.chat_completion on one vLLM (CPU) server."""
    from huggingface_hub import InferenceClient, constants

    from hf_magic import ChatHuggingFace, HuggingFaceEndpoint
    from tests.support.vllm import serve_vllm

    if constants.HF_HUB_OFFLINE:
        raise RuntimeError("huggingface_hub refuses even a local server when HF_HUB_OFFLINE is set: unset it.")
    with serve_vllm("default") as server:
        client = InferenceClient(base_url=server.url)
        chat = ChatHuggingFace(
            llm=HuggingFaceEndpoint(endpoint_url=server.url, max_new_tokens=new_tokens, temperature=0)
        )

        def raw_call() -> Any:
            return client.chat_completion(QUESTION, model=server.model, max_tokens=new_tokens, temperature=0)

        raw_call(), chat.invoke(QUESTION)  # warm-up both
        raw_times, hf_times, tokens = [], [], set()
        for _ in range(pairs):
            started = time.perf_counter()
            tokens.add(raw_call().usage.completion_tokens)
            raw_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            tokens.add(chat.invoke(QUESTION).usage_metadata["output_tokens"])
            hf_times.append(time.perf_counter() - started)
    raw_s, hf_s = statistics.median(raw_times), statistics.median(hf_times)
    report.add("vllm", f"raw InferenceClient.chat_completion, median of {pairs} pairs", f"{raw_s * 1000:.0f} ms")
    report.add(
        "vllm",
        f"hf_magic HuggingFaceEndpoint via ChatHuggingFace.invoke (tokens per reply {sorted(tokens)})",
        f"{hf_s * 1000:.0f} ms ({hf_s / raw_s:.3f}x raw)",
        "<= 1.03x raw",
        hf_s / raw_s <= 1.03,
    )


SECTIONS = {"llamacpp": section_llama_cpp, "vllm": section_vllm}
