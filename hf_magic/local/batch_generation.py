"""Many independent prompts through one local model at once: left-padded batches of ``model.generate``.

Decoding a small model on a CPU is bound by reading its weights: a step over a batch of rows reads them once, so
a batch costs little more per step than one row (``benchmarks/row_map.py`` measures it). Prompts are sorted by
length before they are cut into batches, so a batch holds prompts of similar length and little padding. Each row
is decoded on its own as its tokens come: it ends at its end-of-sequence token or a stop sequence (a per-row
stopping criterion then stops that row inside ``generate``), and is handed back as soon as it has ended, while the
other rows of its batch go on.

Transformers' continuous batching (``generate_batch``) was measured too and not used: on this CPU it was slower
than padded batches, runs the model on a thread of its own (whose OpenMP pool decodes ~30% slower, see
generation.py) and takes only sampling processors, not the grammar masks that structured output needs.

What a row gets, compared with the same prompt asked alone: the same prompt ids, settings and grammar, but the
matrix products run over a batch (and a padded prompt), so the kernels may round differently; greedy replies can
differ where two tokens are a near tie. README.md ("A prompt over every row") states what is guaranteed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import greenlet

from ..backend import ChatDelta, GenerationParams, Usage
from .generation import _QueueStreamer, eos_token_ids
from .stop_sequences import IncrementalDecoder

DEFAULT_BATCH_SIZE = 32
"""Rows per batch when the caller does not say. 64 short rows, default model, one busy 2-core machine
(benchmarks/row_map.py): batches of 8 / 16 / 32 / 64 rows ran 3.2x / 4.6x / 5.5x / 4.6x the rows/s of one row at a
time; past 32 a batch waits longer for its longest row."""

PROMPT_TOKENS_PER_BATCH = 8192
"""At most this many prompt tokens (padding included) per batch, whatever the batch size: long rows go fewer at a
time, so a batch's prefill and cache stay the size of one long prompt's."""


@dataclass
class _Row:
    """One prompt of a batch and what has been decoded of its reply."""

    index: int
    input_ids: list[int]
    decoder: IncrementalDecoder
    done: bool = False
    hit_eos: bool = False
    text: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BatchReply:
    """A finished row: its index among the prompts, its whole reply, and the token ids generated for it."""

    index: int
    delta: ChatDelta
    token_ids: list[int]


class _RowsDone:
    """Per-row stopping criterion: a row whose stop sequence appeared is done; every row once ``cancel`` is set."""

    def __init__(self, rows: list[_Row], cancel: threading.Event) -> None:
        self._rows = rows
        self._cancel = cancel

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        cancelled = self._cancel.is_set()
        flags = [cancelled or row.done for row in self._rows]
        return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)


def batches(lengths: Sequence[int], batch_size: int, token_budget: int = PROMPT_TOKENS_PER_BATCH) -> list[list[int]]:
    """Prompt indices cut into batches: shortest prompts first, so a batch pads little; at most ``batch_size`` rows
    and ``token_budget`` padded prompt tokens each (a prompt longer than the budget goes alone)."""
    chunks: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lambda index: lengths[index]):
        chunk = chunks[-1] if chunks else None
        # Sorted: this prompt is the longest so far, so the batch would pad every row to its length.
        if chunk is None or len(chunk) >= batch_size or (len(chunk) + 1) * lengths[index] > token_budget:
            chunks.append([index])
        else:
            chunk.append(index)
    return chunks


class BatchGenerator:
    """Generates replies to many prompts with one model, ``batch_size`` rows per ``generate`` call.

    ``lock`` is the model's generation lock (``LocalGenerator.model_lock``): a batch and a single reply never run
    on the model at once.
    """

    def __init__(self, model: Any, tokenizer: Any, model_name: str, lock: threading.Lock) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.lock = lock
        self.eos_ids = eos_token_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_token_id: int = pad if pad is not None else tokenizer.eos_token_id

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def generate(
        self,
        prompts: Sequence[list[int]],
        params: GenerationParams,
        generate_kwargs: dict[str, Any],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        processors: Callable[[], list[Any]] | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[BatchReply]:
        """Each prompt's whole reply, in the order the rows finish.

        ``generate_kwargs`` are ``model.generate``'s sampling settings for ``params``; ``processors`` makes fresh
        logits processors for one batch (a grammar's matchers are per row and per batch). Closing the iterator, an
        exception in the caller or ``cancel`` stops generation at the next token; rows already handed back stay
        handed back.
        """
        cancel = cancel or threading.Event()
        for chunk in batches([len(prompt) for prompt in prompts], batch_size):
            if cancel.is_set():
                return
            rows = [_Row(index, list(prompts[index]), IncrementalDecoder(self._decode, params.stop)) for index in chunk]
            yield from self._batch(rows, params, generate_kwargs, processors() if processors else [], cancel)

    def _batch(
        self,
        rows: list[_Row],
        params: GenerationParams,
        generate_kwargs: dict[str, Any],
        processors: list[Any],
        cancel: threading.Event,
    ) -> Iterator[BatchReply]:
        # Generation runs on this thread in a greenlet, as LocalGenerator.stream does (and for its reason: a worker
        # thread's OpenMP pool decodes slower); each step switches back here with the rows' new tokens.
        def hand_over(step: list[int]) -> None:
            greenlet.getcurrent().parent.switch(step)

        generation = greenlet.greenlet(lambda: self._run(rows, generate_kwargs, processors, hand_over, cancel))
        budget = params.token_budget
        try:
            while (step := generation.switch()) is not None:
                for row, token in zip(rows, step, strict=True):
                    if row.done:
                        continue
                    row.text.append(row.decoder.push([token]))
                    row.hit_eos = token in self.eos_ids
                    if row.hit_eos or row.decoder.stopped or len(row.decoder.token_ids) >= budget:
                        row.done = True  # a stop sequence: the stopping criterion ends the row inside generate
                        yield self._reply(row, budget)
            for row in rows:  # the budget (or cancel) ended generate with these rows still going
                if not row.done and not cancel.is_set():
                    row.done = True
                    yield self._reply(row, budget)
        finally:
            if not generation.dead:  # the caller stopped early: unwind generate() now, releasing the model
                cancel.set()
                generation.throw()

    def _run(
        self,
        rows: list[_Row],
        generate_kwargs: dict[str, Any],
        processors: list[Any],
        deliver: Callable[[list[int]], None],
        cancel: threading.Event,
    ) -> None:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        width = max(len(row.input_ids) for row in rows)
        # Left padding: every row's last prompt token sits in the last column, where generate reads the logits.
        ids = [[self.pad_token_id] * (width - len(row.input_ids)) + row.input_ids for row in rows]
        mask = [[0] * (width - len(row.input_ids)) + [1] * len(row.input_ids) for row in rows]
        extra: dict[str, Any] = {"logits_processor": LogitsProcessorList(processors)} if processors else {}
        with self.lock:
            if cancel.is_set():
                return
            with torch.inference_mode():
                self.model.generate(
                    input_ids=torch.tensor(ids, device=self.model.device),
                    attention_mask=torch.tensor(mask, device=self.model.device),
                    streamer=_QueueStreamer(deliver),  # a (rows,) tensor per step: one new id per row
                    stopping_criteria=StoppingCriteriaList([_RowsDone(rows, cancel)]),
                    **extra,
                    **generate_kwargs,
                )

    def _reply(self, row: _Row, budget: int) -> BatchReply:
        """A finished row: its reply as one delta with text, finish reason and usage (as a single reply's last)."""
        decoder = row.decoder
        text = "".join(row.text) + decoder.finish()
        generated = decoder.tokens_at_stop if decoder.tokens_at_stop is not None else len(decoder.token_ids)
        length = not decoder.stopped and not row.hit_eos and generated >= budget
        delta = ChatDelta(
            text=text,
            finish_reason="length" if length else "stop",
            usage=Usage(input_tokens=len(row.input_ids), output_tokens=generated),
            model_name=self.model_name,
        )
        return BatchReply(row.index, delta, decoder.token_ids[:generated])
