"""Benchmark sections for a prompt over every row (``--map``), hooked into benchmarks/run.py as ``map`` and
``map_vllm``: 64 short rows asked one at a time (what a loop of ``invoke`` does) against the same rows through
``run_map`` (batched on the local model, concurrent against vLLM), on the same model in the same run.

Run alone: ``benchmarks/.venv/bin/python benchmarks/run.py --only map,map_vllm --tag map``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

ROWS = 64
NEW_TOKENS = 16
TEMPLATE = "Is this review positive or negative? Answer in one word.\nReview: {review}"
_OPENINGS = [
    "Great product", "Broke after a day", "Does what it says", "Terrible support", "I love it",
    "Would not buy again", "Exceeded my expectations", "Arrived late and damaged",
]  # fmt: skip
_ENDINGS = ["", ", really", " for the price", ", sadly", "!", " overall", " so far", ", to be honest"]
LOCAL_BATCH_SIZES = (8, 16, 32, 64)
VLLM_CONCURRENCY = 32


def reviews() -> Any:
    """64 short, different reviews (8 openings x 8 endings) as a pandas DataFrame."""
    import pandas as pd

    return pd.DataFrame({"review": [opening + ending for opening in _OPENINGS for ending in _ENDINGS][:ROWS]})


def _one_at_a_time(chat: Any, frame: Any) -> tuple[float, list[str]]:
    """Rows asked in a plain loop of ``invoke``: seconds, replies."""
    from langchain_core.messages import HumanMessage

    started = time.perf_counter()
    replies = [
        str(chat.invoke([HumanMessage(content=TEMPLATE.format(review=review))], max_tokens=NEW_TOKENS).content)
        for review in frame["review"]
    ]
    return time.perf_counter() - started, replies


def _mapped(chat: Any, frame: Any, concurrency: int) -> Any:
    """The rows through ``run_map`` with a fresh store (nothing resumed): its MapRun."""
    from hf_magic.notebook.row_map import ResultStore, plan_map, run_map

    plan = plan_map(frame, TEMPLATE, concurrency=concurrency)
    return run_map(plan, chat, store=ResultStore(), max_new_tokens=NEW_TOKENS, temperature=0)


def _continuous_batching(models: Any, frame: Any) -> float:
    """Transformers' own continuous batching (``generate_batch``) over the same prompts: rows/s, raw ids only. On the
    plain model (transformers' SDPA): continuous batching takes only its own attention implementations."""
    from transformers import GenerationConfig

    tokenizer = models.tokenizer
    prompts = [
        models.prompt_ids([{"role": "user", "content": TEMPLATE.format(review=review)}]) for review in frame["review"]
    ]
    config = GenerationConfig(
        max_new_tokens=NEW_TOKENS,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    started = time.perf_counter()
    models.model.generate_batch(prompts, generation_config=config)
    return len(prompts) / (time.perf_counter() - started)


def section_map(models: Any, report: Any) -> None:
    """Local: 64 short rows one at a time vs batched ``--map``, and how many batched replies equal their row's."""
    from hf_magic import ChatHuggingFace

    chat = ChatHuggingFace(llm=models.llm, temperature=0)
    frame = reviews()
    chat.invoke(TEMPLATE.format(review="warm-up"), max_tokens=4)
    alone_s, alone = _one_at_a_time(chat, frame)
    alone_rate = ROWS / alone_s
    report.add(
        "map", f"{ROWS} rows one at a time (invoke in a loop, {NEW_TOKENS} new tokens max)", f"{alone_rate:.2f} rows/s"
    )
    best: tuple[float, int, Any] | None = None
    for size in LOCAL_BATCH_SIZES:
        run = _mapped(chat, frame, size)
        rate = run.rows_per_second or 0.0
        same = sum(1 for a, b in zip(alone, run.frame["reply"], strict=True) if a == b)
        report.add(
            "map",
            f"{ROWS} rows batched, --concurrency {size} ({run.output_tokens} new tokens)",
            f"{rate:.2f} rows/s ({rate / alone_rate:.1f}x one at a time); {same}/{ROWS} replies equal the row's alone",
        )
        if best is None or rate > best[0]:
            best = (rate, size, run)
    assert best is not None
    report.add(
        "map",
        f"best batched vs one at a time (--concurrency {best[1]})",
        f"{best[0] / alone_rate:.1f}x",
        ">= 4x",
        best[0] / alone_rate >= 4,
    )
    try:
        rate = _continuous_batching(models, frame)
        report.add(
            "map", "transformers generate_batch (continuous batching), same prompts, ids only", f"{rate:.2f} rows/s"
        )
    except Exception as exc:  # recorded, not fatal: it is the alternative we measured, not what --map uses
        report.add("map", "transformers generate_batch (continuous batching)", f"failed: {type(exc).__name__}: {exc}")


def section_map_vllm(models: Any, report: Any) -> None:
    """vLLM (CPU) serving the default model: 64 sequential requests vs ``--map`` with concurrent requests.

    vLLM runs in the dtype hf_magic would pick for this CPU: float32 where bf16 is emulated. In emulated bf16 the
    engine is bound by arithmetic, and concurrency gained nothing (measured on an AVX2 CPU: 32 concurrent requests
    1.1x sequential in bf16, 3.8x in float32)."""
    from hf_magic import ChatHuggingFace, HuggingFaceEndpoint
    from hf_magic.local.loading import cpu_computes_bf16
    from tests.support.vllm import serve_vllm

    frame = reviews()
    dtype = "bfloat16" if cpu_computes_bf16() else "float32"
    with serve_vllm("default", "--dtype", dtype) as server:
        chat = ChatHuggingFace(llm=HuggingFaceEndpoint(endpoint_url=server.url), temperature=0)
        chat.invoke(TEMPLATE.format(review="warm-up"), max_tokens=4)
        sequential = _mapped(chat, frame, 1)
        concurrent = _mapped(chat, frame, VLLM_CONCURRENCY)
    one, many = sequential.rows_per_second or 0.0, concurrent.rows_per_second or 0.0
    report.add("map_vllm", f"{ROWS} rows, sequential requests (--concurrency 1), vLLM in {dtype}", f"{one:.2f} rows/s")
    report.add(
        "map_vllm",
        f"{ROWS} rows, --concurrency {VLLM_CONCURRENCY}",
        f"{many:.2f} rows/s ({many / one:.1f}x sequential)",
        ">= 3x",
        many / one >= 3,
    )


SECTIONS: dict[str, Callable[[Any, Any], None]] = {"map": section_map, "map_vllm": section_map_vllm}
