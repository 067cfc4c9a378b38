"""hf_magic's speed against raw transformers, langchain_huggingface and huggingface_hub, side by side in one run.

Usage (after ``benchmarks/setup.sh``)::

    benchmarks/.venv/bin/python benchmarks/run.py                 # every section
    benchmarks/.venv/bin/python benchmarks/run.py --only tokens,turns
    python benchmarks/run.py --device cuda --model FOLDER --tag cuda --only load,tokens,ttft,turns,prefill,memory

Prints a Markdown table (also written to benchmarks/results/results.md, or results-TAG.md) and plots the
latency of each turn to benchmarks/results/turn_latency.png (turn_latency-TAG.png). Greedy decoding on the
embedded default model throughout, unless --model names another folder.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import io
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.support.serve, and hf_magic when not installed
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import row_map  # noqa: E402  (beside this script: the --map sections)
import speed_paths  # noqa: E402  (beside this script: issue 21's local speed paths)
from engine_speed import SECTIONS as ENGINE_SECTIONS  # noqa: E402  (benchmarks/, beside this script)
from log_write import section_log  # noqa: E402  (benchmarks/, beside this script)

RESULTS = ROOT / "benchmarks" / "results"
SECTIONS = ("load", "tokens", "ttft", "turns", "prefill", "switch", "magic", "endpoint", "memory", "invariance", "log")
SECTIONS += tuple(row_map.SECTIONS)  # map, map_vllm
SECTIONS += tuple(ENGINE_SECTIONS)  # benchmarks/engine_speed.py: llama.cpp and vLLM engines
SECTIONS += tuple(speed_paths.SECTIONS)  # paths, quality, large, embeddings
SYSTEM = "You're a helpful assistant"
STORY = "Write a long story about a lighthouse keeper who finds a message in a bottle."
TOPICS = [
    "rivers", "volcanoes", "bees", "the moon", "glaciers", "owls", "deserts", "coral reefs", "comets", "forests",
    "whales", "lightning", "tea", "bridges", "clocks", "maps", "salt", "kites", "islands", "rain",
]  # fmt: skip


@dataclass
class Target:
    """What the sections run: a model (``"default"`` or a local folder) on a device. Named even for the CPU:
    hf_magic alone would pick a GPU when there is one, and the plain model would not."""

    model: str = "default"
    device: str = "cpu"

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")

    def folder(self) -> Path:
        from hf_magic.local.loading import ensure_default_model

        return ensure_default_model() if self.model == "default" else Path(self.model)


TARGET = Target()


def synchronize() -> None:
    """Wait for the GPU's queued work, so wall-clock times cover it."""
    import torch

    if TARGET.on_gpu:
        torch.cuda.synchronize()


@dataclass
class Row:
    section: str
    measure: str
    value: str
    goal: str = ""
    verdict: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    turn_series: dict[str, list[float]] = field(default_factory=dict)

    def add(self, section: str, measure: str, value: str, goal: str = "", ok: bool | None = None) -> None:
        verdict = "" if ok is None else ("met" if ok else "NOT met")
        self.rows.append(Row(section, measure, value, goal, verdict))
        print(f"  {measure}: {value}" + (f"  (goal {goal}: {verdict})" if goal else ""), flush=True)

    def markdown(self) -> str:
        lines = ["| section | measure | value | goal | |", "|---|---|---|---|---|"]
        lines += [f"| {r.section} | {r.measure} | {r.value} | {r.goal} | {r.verdict} |" for r in self.rows]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- shared setup
@dataclass
class Models:
    """hf_magic on the default model, and the same folder loaded the plain transformers way (its default
    attention) for raw ``generate`` and langchain_huggingface: what a user would otherwise run."""

    llm: Any  # hf_magic.HuggingFacePipeline
    chat: Any  # hf_magic.ChatHuggingFace
    plain: Any  # transformers.pipeline over AutoModelForCausalLM.from_pretrained(folder)

    @property
    def model(self) -> Any:
        return self.plain.model

    @property
    def tokenizer(self) -> Any:
        return self.llm.tokenizer

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]


def load_plain(folder: Path) -> tuple[Any, Any]:
    """Tokenizer and model as the transformers docs load them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    placement = {} if TARGET.device == "cpu" else {"device_map": TARGET.device}  # the CPU: as the docs load it
    model = AutoModelForCausalLM.from_pretrained(folder, dtype="auto", **placement)
    return AutoTokenizer.from_pretrained(folder), model.eval()


def load_models() -> Models:
    from transformers import pipeline

    from hf_magic import ChatHuggingFace, HuggingFacePipeline

    llm = HuggingFacePipeline.from_model_id(TARGET.model, device=TARGET.device, pipeline_kwargs={"do_sample": False})
    tokenizer, model = load_plain(TARGET.folder())
    plain = pipeline("text-generation", model=model, tokenizer=tokenizer)
    return Models(llm=llm, chat=ChatHuggingFace(llm=llm), plain=plain)


@contextlib.contextmanager
def exact_new_tokens(models: Models, count: int) -> Iterator[None]:
    """Every contender generates exactly ``count`` tokens (EOS held back), so tokens/s compare like with like."""
    configs = [models.llm.model.generation_config, models.plain.model.generation_config]
    saved = [config.min_new_tokens for config in configs]
    for config in configs:
        config.min_new_tokens = count
    try:
        yield
    finally:
        for config, value in zip(configs, saved, strict=True):
            config.min_new_tokens = value


def lc_chat(models: Models) -> Any | None:
    """langchain_huggingface's ChatHuggingFace over the plainly loaded model, when installed."""
    try:
        from langchain_huggingface import ChatHuggingFace as LcChat
        from langchain_huggingface import HuggingFacePipeline as LcPipeline
    except ImportError:
        return None
    llm = LcPipeline(pipeline=models.plain, model_id=str(models.model.name_or_path))
    return LcChat(llm=llm, tokenizer=models.tokenizer, model_id=str(models.model.name_or_path))


def lc_messages(messages: list[dict[str, str]]) -> list[Any]:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    return [kinds[m["role"]](content=m["content"]) for m in messages]


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    synchronize()
    start = time.perf_counter()
    result = action()
    synchronize()
    return time.perf_counter() - start, result


def raw_generate(models: Models, ids: list[int], new_tokens: int, model: Any = None) -> Any:
    """Plain ``generate`` (its own cache, one prefill pass) on the plainly loaded model, or on ``model``."""
    import torch

    model = model if model is not None else models.model
    tensor = torch.tensor([ids], device=model.device)
    with torch.inference_mode():
        return model.generate(
            input_ids=tensor,
            attention_mask=torch.ones_like(tensor),
            max_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=models.tokenizer.eos_token_id,
        )


def hf_stream(models: Models, messages: list[dict[str, str]], new_tokens: int) -> tuple[str, float | None, int]:
    """Stream a reply through hf_magic's ChatHuggingFace: its text, time to first text, output tokens."""
    start, first, pieces, usage = time.perf_counter(), None, [], None
    for chunk in models.chat.stream(lc_messages(messages), max_tokens=new_tokens):
        if chunk.content and first is None:
            first = time.perf_counter() - start
        pieces.append(str(chunk.content))
        usage = chunk.usage_metadata or usage
    return "".join(pieces), first, usage["output_tokens"] if usage else 0


def lc_stream(chat: Any, messages: list[dict[str, str]], new_tokens: int) -> tuple[str, float | None]:
    start, first, pieces = time.perf_counter(), None, []
    kwargs = {"pipeline_kwargs": {"max_new_tokens": new_tokens, "do_sample": False}}
    for chunk in chat.stream(lc_messages(messages), **kwargs):
        if chunk.content and first is None:
            first = time.perf_counter() - start
        pieces.append(str(chunk.content))
    return "".join(pieces), first


# --------------------------------------------------------------------------------- sections
def section_tokens(models: Models, report: Report, new_tokens: int = 128, repeats: int = 3) -> None:
    """Tokens/s of a streamed reply: raw generate vs hf_magic stream vs langchain stream, interleaved."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": STORY}]
    ids = models.prompt_ids(messages)
    lc = lc_chat(models)
    times: dict[str, list[float]] = {"raw": [], "hf_magic": [], "langchain": []}
    raw_generate(models, ids, 8)  # warm-up: first-call allocations
    with exact_new_tokens(models, new_tokens):
        for _ in range(repeats):
            seconds, output = timed(lambda: raw_generate(models, ids, new_tokens))
            assert output.shape[1] - len(ids) == new_tokens
            times["raw"].append(seconds)
            models.llm.reset_cache()  # a fair race: hf_magic may not reuse the previous run's prefill
            seconds, (_, _, produced) = timed(lambda: hf_stream(models, messages, new_tokens))
            assert produced == new_tokens, produced
            times["hf_magic"].append(seconds)
            if lc is not None:
                times["langchain"].append(timed(lambda: lc_stream(lc, messages, new_tokens))[0])
    rate = {name: new_tokens / statistics.median(values) for name, values in times.items() if values}
    detail = f"{len(ids)}-token prompt, {new_tokens} new tokens, median of {repeats}"
    report.add("tokens/s", f"raw model.generate ({detail})", f"{rate['raw']:.1f} tok/s")
    # Ratios per interleaved round, then their median: a load spike on a shared machine hits one round, not one side.
    ratio = statistics.median(raw / hf for raw, hf in zip(times["raw"], times["hf_magic"], strict=True))
    report.add(
        "tokens/s",
        "hf_magic ChatHuggingFace.stream",
        f"{rate['hf_magic']:.1f} tok/s ({ratio:.3f}x raw, median of per-round ratios)",
        ">= 0.97x raw",
        ratio >= 0.97,
    )
    if "langchain" in rate:
        lc_ratio = statistics.median(lc / hf for lc, hf in zip(times["langchain"], times["hf_magic"], strict=True))
        report.add(
            "tokens/s",
            "langchain_huggingface ChatHuggingFace.stream",
            f"{rate['langchain']:.1f} tok/s; hf_magic = {lc_ratio:.2f}x langchain",
            ">= 1.0x langchain",
            lc_ratio >= 1.0,
        )
    else:
        report.add("tokens/s", "langchain_huggingface", "not installed: run benchmarks/setup.sh")


def section_ttft(models: Models, report: Report, repeats: int = 5) -> None:
    """First streamed text of a fresh single-turn prompt vs a plain one-pass prefill of the same prompt: ``generate``
    of one token on the same model (hf_magic's: same dtype and attention), interleaved rounds. What is left over is
    what hf_magic adds before the first text: the chat template, tokenizing, the cache, streaming, decoding."""
    filler = " ".join(f"Note {i}: the {topic} chapter needs a summary." for i, topic in enumerate(TOPICS * 3))
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"{filler}\n\n{STORY}"}]
    ids = models.prompt_ids(messages)
    model = models.llm.model
    prefill, first = [], []
    raw_generate(models, ids, 1, model)  # warm-up both
    hf_stream(models, messages, 2)
    for _ in range(repeats):
        prefill.append(timed(lambda: raw_generate(models, ids, 1, model))[0])
        models.llm.reset_cache()  # measure a fresh prefill, not a reused one
        first.append(hf_stream(models, messages, 4)[1] or float("nan"))
    prefill_ms, first_ms = statistics.median(prefill) * 1000, statistics.median(first) * 1000
    # Per-round differences, then their median: a load spike on a shared machine hits one round, not one side.
    extra_ms = statistics.median(f - p for f, p in zip(first, prefill, strict=True)) * 1000
    report.add(
        "time to first token",
        f"plain one-pass prefill: generate of 1 token ({len(ids)}-token prompt, {model.dtype}, median of {repeats})",
        f"{prefill_ms:.0f} ms",
    )
    report.add(
        "time to first token",
        "hf_magic stream, fresh prompt: first text (+ median of per-round differences)",
        f"{first_ms:.0f} ms (+{extra_ms:.0f} ms)",
        "<= prefill + 50 ms",
        extra_ms <= 50,
    )


def _conversation(turns: int, notes: int = 12) -> list[str]:
    """User messages of about 150 tokens each (``notes`` sentences and a question), one per turn."""
    messages = []
    for turn in range(turns):
        topic = TOPICS[turn % len(TOPICS)]
        lines = " ".join(f"Note {i + 1}: the {topic} chapter needs a summary." for i in range(notes))
        messages.append(f"Turn {turn + 1}. Here are my notes on {topic}. {lines} Tell me one fact about {topic}.")
    return messages


Turn = tuple[float, float, int]  # latency and time to first text (seconds), minor page faults of one turn


def _minor_faults() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _run_conversation(ask: Callable[[list[dict[str, str]]], tuple[str, float | None]], turns: int) -> list[Turn]:
    """Latency, time to first text and page faults of each turn, each reply appended to the history."""
    messages = [{"role": "system", "content": SYSTEM}]
    measured = []
    for question in _conversation(turns):
        messages.append({"role": "user", "content": question})
        faults = _minor_faults()
        seconds, (reply, first) = timed(lambda: ask(messages))
        measured.append((seconds, first if first is not None else float("nan"), _minor_faults() - faults))
        messages.append({"role": "assistant", "content": reply})
    return measured


def section_turns(models: Models, report: Report, turns: int = 10, new_tokens: int = 24, repeats: int = 3) -> None:
    """Latency of turns 1..N of a scripted chat of ~150-token messages: hf_magic (cache reuse) vs fresh prefill
    vs langchain. A reused turn prefills one pass (the last reply, the new message, the assistant header).

    Each conversation runs ``repeats`` times, interleaved with the others; each turn's latency is the median
    of its runs, so one load spike on a shared machine does not decide a turn."""
    contenders: dict[str, Callable[[list[dict[str, str]]], str]] = {}

    def with_reuse(messages: list[dict[str, str]]) -> tuple[str, float | None]:
        return hf_stream(models, messages, new_tokens)[:2]

    def fresh(messages: list[dict[str, str]]) -> tuple[str, float | None]:
        models.llm.reset_cache()
        return hf_stream(models, messages, new_tokens)[:2]

    contenders["hf_magic (KV cache reuse)"] = with_reuse
    contenders["hf_magic, fresh prefill each turn"] = fresh
    lc = lc_chat(models)
    if lc is not None:
        contenders["langchain_huggingface"] = lambda messages: lc_stream(lc, messages, new_tokens)
    runs: dict[str, list[list[Turn]]] = {name: [] for name in contenders}
    with exact_new_tokens(models, new_tokens):
        for _ in range(repeats):
            for name, ask in contenders.items():
                models.llm.reset_cache()
                runs[name].append(_run_conversation(ask, turns))
    for name, series in runs.items():
        latencies = [statistics.median(run[0] for run in turn) for turn in zip(*series, strict=True)]
        firsts = [statistics.median(run[1] for run in turn) for turn in zip(*series, strict=True)]
        report.turn_series[name] = latencies
        growth = latencies[-1] / latencies[0]
        goal = (f"turn {turns} <= 1.1x turn 1", growth <= 1.1) if name.startswith("hf_magic (") else ("", None)
        report.add(
            "turn latency",
            f"{name}: turn 1 / turn {turns} (median of {repeats} runs)",
            f"{latencies[0] * 1000:.0f} ms / {latencies[-1] * 1000:.0f} ms ({growth:.2f}x); "
            f"total {sum(latencies):.1f} s",
            goal[0],
            goal[1],
        )
        if name.startswith("hf_magic ("):  # where the growth is: the prefill of the new tokens, or the decoding
            per_token = [
                (total - first) / (new_tokens - 1) * 1000 for total, first in zip(latencies, firsts, strict=True)
            ]
            report.add(
                "turn latency",
                f"{name}: first text, then ms per further token, turn 1 vs turn {turns}",
                f"{firsts[0] * 1000:.0f} ms vs {firsts[-1] * 1000:.0f} ms; "
                f"{per_token[0]:.1f} vs {per_token[-1]:.1f} ms",
            )
            # Fresh zeroed pages are what a cache that reallocates as it grows costs: transformers' DynamicCache
            # concatenates each step's keys and values onto the context's.
            report.add(
                "turn latency",
                f"{name}: minor page faults during turn {turns}, each run",
                ", ".join(str(run[-1][2]) for run in series),
            )
    history = [{"role": "system", "content": SYSTEM}]
    for question in _conversation(turns):
        history.append({"role": "user", "content": question})
        history.append({"role": "assistant", "content": "x " * new_tokens})
    last_prompt = models.prompt_ids(history[:-1])
    report.add(
        "turn latency", f"context at turn {turns}", f"~{len(last_prompt)} prompt tokens, {new_tokens} new per turn"
    )


def section_magic(models: Models, report: Report, cells: int = 4) -> None:
    """Time from running a second (third...) %%hfchat cell to the start of model.generate."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "hf_magic")
    with contextlib.redirect_stdout(io.StringIO()):
        shell.run_cell_magic("hfchat", "--session bench --max-new-tokens 4", "Hi!")  # cell 1 loads the model
    from hf_magic.notebook.magics import HfChatMagics

    magics = shell.magics_manager.registry[HfChatMagics.__name__]
    session = magics._session("bench")
    model = session.chat_model.llm.model
    started: list[float] = []
    original = model.generate

    def stamped_generate(*args: Any, **kwargs: Any) -> Any:
        started.append(time.perf_counter())
        return original(*args, **kwargs)

    model.generate = stamped_generate  # instance attribute: only this benchmark's model is observed
    overheads = []
    try:
        for cell in range(cells):
            begin = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                shell.run_cell_magic("hfchat", "--session bench --max-new-tokens 4", f"Cell {cell + 2}: hello again!")
            overheads.append(started[-1] - begin)
    finally:
        del model.generate
    overhead_ms = statistics.median(overheads) * 1000
    report.add(
        "second %%hfchat cell",
        f"cell start -> model.generate (median of cells 2..{cells + 1})",
        f"{overhead_ms:.1f} ms",
        "<= 50 ms",
        overhead_ms <= 50,
    )


def section_endpoint(models: Models, report: Report, new_tokens: int = 32, repeats: int = 3) -> None:
    """hf_magic HuggingFaceEndpoint vs raw InferenceClient on one local `transformers serve`; abatch of 8."""
    from huggingface_hub import InferenceClient, constants

    from hf_magic import ChatHuggingFace, HuggingFaceEndpoint
    from tests.support.serve import serve_transformers

    if constants.HF_HUB_OFFLINE:
        raise RuntimeError("huggingface_hub refuses even a local server when HF_HUB_OFFLINE is set: unset it.")
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Name three colors."}]
    model_dir = TARGET.folder()
    with serve_transformers(model_dir) as url:
        client = InferenceClient(base_url=url)
        chat = ChatHuggingFace(llm=HuggingFaceEndpoint(endpoint_url=url, max_new_tokens=new_tokens, temperature=0))
        served = str(model_dir)  # the name `transformers serve` lists for the folder it serves
        raw_times, hf_times, raw_tokens, hf_tokens = [], [], 0, 0

        def raw_call() -> Any:
            return client.chat_completion(messages, model=served, max_tokens=new_tokens, temperature=0)

        raw_call()
        chat.invoke(lc_messages(messages))  # warm-up both
        for _ in range(repeats):
            seconds, output = timed(raw_call)
            raw_times.append(seconds)
            raw_tokens = output.usage.completion_tokens
            seconds, reply = timed(lambda: chat.invoke(lc_messages(messages)))
            hf_times.append(seconds)
            hf_tokens = reply.usage_metadata["output_tokens"]
        raw_s, hf_s = statistics.median(raw_times), statistics.median(hf_times)
        report.add(
            "endpoint",
            f"raw InferenceClient.chat_completion ({raw_tokens} tokens, median of {repeats})",
            f"{raw_s * 1000:.0f} ms",
        )
        report.add(
            "endpoint",
            f"hf_magic HuggingFaceEndpoint via ChatHuggingFace.invoke ({hf_tokens} tokens)",
            f"{hf_s * 1000:.0f} ms ({hf_s / raw_s:.3f}x raw)",
            "<= 1.05x raw",
            hf_s / raw_s <= 1.05,
        )
    # A server that runs one request at a time gains nothing from concurrency: batch on one that batches.
    with serve_transformers(model_dir, None, "--continuous-batching") as url:
        chat = ChatHuggingFace(llm=HuggingFaceEndpoint(endpoint_url=url, max_new_tokens=new_tokens, temperature=0))
        batch = [lc_messages(messages)] * 8
        chat.invoke(batch[0])  # warm-up
        sequential, one_by_one = timed(lambda: [chat.invoke(item).content for item in batch])
        concurrent, together = timed(lambda: [reply.content for reply in asyncio.run(chat.abatch(batch))])
        report.add(
            "endpoint",
            "8 requests to `transformers serve --continuous-batching`: sequential invoke vs concurrent abatch",
            f"{sequential:.2f} s vs {concurrent:.2f} s ({sequential / concurrent:.2f}x faster; "
            f"replies {'identical' if one_by_one == together else 'differ'})",
        )


def section_memory(models: Models, report: Report) -> None:
    """Weights footprint of the default model in bf16 vs bitsandbytes 4-bit NF4."""
    from transformers import BitsAndBytesConfig

    from hf_magic import HuggingFacePipeline

    bf16 = models.model.get_memory_footprint()
    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype="float16", bnb_4bit_use_double_quant=True
    )
    seconds, quantized = timed(
        lambda: HuggingFacePipeline.from_model_id(
            TARGET.model, device=TARGET.device, model_kwargs={"quantization_config": quantization}
        )
    )
    four_bit = quantized.model.get_memory_footprint()
    del quantized
    gc.collect()
    report.add("memory", "bf16 footprint (get_memory_footprint)", f"{bf16 / 2**20:.1f} MiB")
    report.add(
        "memory",
        f"4-bit NF4 footprint (load {seconds:.0f} s)",
        f"{four_bit / 2**20:.1f} MiB ({four_bit / bf16:.2f}x bf16)",
        "<= 0.45x",
        four_bit / bf16 <= 0.45,
    )


def section_load(models: Models, report: Report, repeats: int = 8) -> None:
    """Loading the default model: hf_magic (with its progress events) vs a plain from_pretrained of the folder.
    Eight interleaved rounds: with three, one slow load on a shared machine moved the ratio by 5%."""
    from hf_magic import HuggingFacePipeline

    folder = TARGET.folder()
    plain, ours = [], []
    for _ in range(repeats):  # interleaved, each load dropped before the next
        plain.append(timed(lambda: load_plain(folder))[0])
        gc.collect()
        # Loading alone: what compiling the decode step adds is the "compile" rows of the paths section.
        ours.append(timed(lambda: HuggingFacePipeline.from_model_id(TARGET.model, device=TARGET.device,
                                                                    compile_decode=False))[0])  # fmt: skip
        gc.collect()
    ratio = statistics.median(o / p for o, p in zip(ours, plain, strict=True))
    report.add("load", f"plain AutoTokenizer + AutoModelForCausalLM.from_pretrained (median of {repeats})",
               f"{statistics.median(plain) * 1000:.0f} ms")  # fmt: skip
    report.add(
        "load",
        f"hf_magic HuggingFacePipeline.from_model_id({TARGET.model!r})",
        f"{statistics.median(ours) * 1000:.0f} ms ({ratio:.2f}x plain, median of per-round ratios)",
        "<= 1.05x plain (no slower, within noise)",
        ratio <= 1.05,
    )


REPLY = "Here is one fact about them, in two short sentences."


def _chat_history(turns: int, reply: str = REPLY) -> list[dict[str, str]]:
    """The messages of ``turns`` turns of the scripted chat, replies filled with ``reply``, ending with a question."""
    messages = [{"role": "system", "content": SYSTEM}]
    for question in _conversation(turns):
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
    return messages[:-1]


def section_prefill(models: Models, report: Report, turns: int = 10, repeats: int = 3) -> None:
    """What cutting costs where it happens: a fresh prefill of a whole conversation (after a reset, an edit of
    an early turn, a model switch) runs one pass per turn, as the turns first ran; vs one pass over it all.
    Fresh single-turn prompts and reused turns are one pass, so this is the only place the cuts cost."""
    import torch

    from hf_magic.backend import ChatRequest
    from hf_magic.local.kv_cache import ConversationCache, prefill_earlier_turns

    model = models.llm.model
    prompt = models.llm._chat_prompt(ChatRequest(messages=_chat_history(turns)))
    ids = torch.tensor([prompt.input_ids], device=model.device)
    pad = models.tokenizer.eos_token_id

    def one_pass() -> None:
        raw_generate(models, prompt.input_ids, 1, model)

    def cut() -> None:
        lease = ConversationCache().take(model, prompt.input_ids, prompt.turn_starts)
        assert lease is not None
        with torch.inference_mode():
            prefill_earlier_turns(model, ids, lease, pad_token_id=pad)
            model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, do_sample=False, pad_token_id=pad,
                **lease.generate_kwargs(),
            )  # fmt: skip

    one_pass()  # warm-up
    costs: dict[str, list[float]] = {"one": [], "cut": []}
    for _ in range(repeats):  # interleaved, so a load spike hits both
        costs["one"].append(timed(one_pass)[0])
        costs["cut"].append(timed(cut)[0])
    whole, passes = statistics.median(costs["one"]), statistics.median(costs["cut"])
    report.add(
        "prefill",
        f"fresh {turns}-turn prompt, {len(prompt.input_ids)} tokens: one pass vs cut at its "
        f"{len(prompt.turn_starts)} turn starts (median of {repeats})",
        f"{whole * 1000:.0f} ms vs {passes * 1000:.0f} ms ({passes / whole:.2f}x)",
    )


def section_switch(models: Models, report: Report, turns: int = 4, quantize: str = "4bit", repeats: int = 3) -> None:
    """First text right after a model switch (default -> 4-bit -> default in one session, the conversation kept)
    vs the same prompt on another freshly loaded default model with no quantized one in between (what a fresh
    kernel's first cell pays: the first call), vs again after ``reset_cache`` (warm), vs one plain pass. The new
    model holds no cache, so the whole conversation is prefilled, cut at its turn starts; anything slow a switch
    left behind (threads, allocator, the old model's caches) would put the first figure above the second."""
    import torch

    from hf_magic.notebook.model_spec import ModelSpec, load_chat_model
    from hf_magic.notebook.session import ChatSession
    from hf_magic.notebook.turns import Settings

    session = ChatSession("bench-switch", ModelSpec(), Settings(system_prompt=SYSTEM, max_new_tokens=24))
    session.use_model(models.chat, ModelSpec())  # the conversation, on the benchmark's loaded model
    questions = _conversation(turns + 2)
    for question in questions[:turns]:
        session.send(question)
    session.load(ModelSpec(quantize=quantize))  # type: ignore[arg-type]
    session.send(questions[turns], max_new_tokens=8)

    def first_text(reset: bool = False) -> float:
        """The next turn's time to first text; the same turn sent again when one was sent already."""
        if session.turns[-1].user == questions[turns + 1]:
            session.turns.pop()
        if reset:
            session.chat_model.llm.reset_cache()
        start, first = time.perf_counter(), []

        def on_token(_text: str) -> None:
            if not first:
                first.append(time.perf_counter() - start)

        session.send(questions[turns + 1], on_token=on_token, max_new_tokens=2)
        return first[0] * 1000

    session.load(ModelSpec())
    after_switch = first_text()
    session.use_model(load_chat_model(ModelSpec()), ModelSpec())  # a fresh load, nothing quantized before it
    fresh_load = first_text()
    warm = statistics.median(first_text(reset=True) for _ in range(repeats))
    llm = session.chat_model.llm
    ids = torch.tensor([llm._kv_cache._token_ids], device=llm.model.device)
    passes = len(llm._kv_cache.pass_ends)

    def one_pass() -> None:
        with torch.inference_mode():
            llm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, do_sample=False,
                               pad_token_id=models.tokenizer.eos_token_id)  # fmt: skip

    plain = statistics.median(timed(one_pass)[0] for _ in range(repeats)) * 1000
    report.add(
        "model switch",
        f"first text right after default -> {quantize} -> default ({ids.shape[1]}-token prompt, {passes} passes)",
        f"{after_switch:.0f} ms",
    )
    report.add(
        "model switch",
        "the same turn: on another freshly loaded default model; warm after reset_cache "
        f"(median of {repeats}); one plain pass over the prompt",
        f"{fresh_load:.0f} ms ({after_switch / fresh_load:.2f}x); {warm:.0f} ms; {plain:.0f} ms",
        "switch <= 1.1x fresh load",
        after_switch <= 1.1 * fresh_load,
    )


def section_invariance(
    models: Models, report: Report, length: int = 900, cuts: tuple[int, ...] = (100, 500, 897), kept: int = 512
) -> None:
    """Do logits depend on how a sequence is cut into prefills (what cache reuse does)? The model in pieces with
    its KV cache vs in one pass, at arbitrary cuts; and what hf_magic compares: a reused turn (an earlier,
    different prompt's cache cropped at a turn start both share, then one pass) vs a fresh prefill cut at the
    same turn starts."""
    import torch

    from hf_magic.local.kv_cache import cache_keyword, new_cache

    model = models.llm.model
    dtype = model.dtype
    torch.manual_seed(0)
    ids = torch.randint(100, model.config.vocab_size, (1, length), device=model.device)
    earlier = ids.clone()  # an earlier turn: the same first ``kept`` tokens, then something else
    earlier[:, kept:] = torch.randint(100, model.config.vocab_size, (1, length - kept), device=model.device)
    starts = [kept // 3, kept]  # turn starts both prompts share

    def run(tokens: Any, ends: list[int], cache: Any = None, start: int = 0) -> tuple[Any, Any]:
        cache, out = cache if cache is not None else new_cache(model), []
        with torch.inference_mode():
            for end in ends:
                out.append(model(tokens[:, start:end], **{cache_keyword(model): cache}, use_cache=True).logits.float())
                start = end
        return torch.cat(out, dim=1), cache

    try:
        for as_type in (torch.bfloat16, torch.float32):
            model.to(as_type)
            name = str(as_type).removeprefix("torch.")
            whole, _ = run(ids, [length])
            pieces, _ = run(ids, [*cuts, length])
            fresh, _ = run(ids, [*starts, length])
            _, cache = run(earlier, [*starts, length - 100])
            cache.crop(kept - cache.get_seq_length())  # by a negative count: what crop accepts
            reused, _ = run(ids, [length], cache, kept)
            for what, difference in (
                (f"cut at {list(cuts)} vs one pass", (pieces - whole).abs().max().item()),
                (
                    f"a reused turn ({kept} cached positions of another prompt, cut at {starts}, then one pass) "
                    "vs a fresh prefill cut at the same points",
                    (reused - fresh[:, kept:]).abs().max().item(),
                ),
            ):
                report.add(
                    "split invariance",
                    f"{model.config._attn_implementation}, {name}, {length} tokens: {what}",
                    "bitwise equal" if difference == 0 else f"largest logit difference {difference:.3g}",
                )
    finally:
        model.to(dtype)


SECTION_FUNCTIONS: dict[str, Callable[[Models, Report], None]] = {
    "load": section_load,
    "prefill": section_prefill,
    "switch": section_switch,
    "tokens": section_tokens,
    "ttft": section_ttft,
    "turns": section_turns,
    "magic": section_magic,
    "endpoint": section_endpoint,
    "memory": section_memory,
    "invariance": section_invariance,
    "log": section_log,  # benchmarks/log_write.py: what the turn log costs a reply
    **row_map.SECTIONS,  # --map: benchmarks/row_map.py
    **ENGINE_SECTIONS,
    **speed_paths.SECTIONS,  # issue 21: the local speed paths against llama.cpp, their quality, a 1.5B-class model
}


# ------------------------------------------------------------------------------- output
def plot_turns(series: dict[str, list[float]], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for name, latencies in series.items():
        axes.plot(range(1, len(latencies) + 1), latencies, marker="o", label=name)
    axes.set_xlabel("turn")
    axes.set_ylabel("latency (s)")
    axes.set_title("Chat turn latency, default model, greedy, fixed new tokens per turn")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def machine() -> str:
    import torch
    import transformers

    gpu = f"{torch.cuda.get_device_name()}, " if TARGET.on_gpu else ""
    return (
        f"{gpu}{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} "
        f"threads), transformers {transformers.__version__}, Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {', '.join(SECTIONS)}")
    parser.add_argument("--model", default="default", help="a local model folder (default: the embedded model)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: the CPU)")
    parser.add_argument("--tag", default="", help="results-TAG.md and turn_latency-TAG.png instead of the defaults")
    options = parser.parse_args(argv)
    TARGET.model, TARGET.device = options.model, options.device
    suffix = f"-{options.tag}" if options.tag else ""
    chosen = [name.strip() for name in options.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}: choose from {', '.join(SECTIONS)}")
    began = time.perf_counter()
    report = Report()
    load_s, models = timed(load_models)
    print(f"Loaded {TARGET.model} in {load_s:.1f} s", flush=True)
    for name in chosen:
        print(f"== {name}", flush=True)
        section_start = time.perf_counter()
        try:
            SECTION_FUNCTIONS[name](models, report)
        except Exception as exc:  # one broken section must not hide the others
            report.add(name, "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        print(f"   ({time.perf_counter() - section_start:.0f} s)", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    header = f"Machine: {machine()}. Sections: {', '.join(chosen)}. Total {time.perf_counter() - began:.0f} s."
    table = f"{header}\n\n{report.markdown()}\n"
    plot = plot_turns(report.turn_series, RESULTS / f"turn_latency{suffix}.png") if report.turn_series else None
    if plot:
        table += f"\nTurn latency plot: {plot.relative_to(ROOT)}\n"
    (RESULTS / f"results{suffix}.md").write_text(table)
    print("\n" + table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
