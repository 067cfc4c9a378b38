"""Token generation for one local model: ``model.generate`` hands each new token's ids to the consumer and does
nothing else per token; decoding, stop sequences, usage and the finish reason happen on the consumer's side.

Sync streams generate on the calling thread (in a greenlet, so tokens stream out as they come); async streams
generate on a worker thread so the event loop never runs the model. Stopping a stream stops generation at the
next token.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import greenlet

from ..backend import ChatDelta, GenerationParams, Usage
from ..errors import InvalidInputError
from .fast_decode import fast_decode_for
from .kv_cache import ConversationCache, prefill_earlier_turns
from .logprobs import GenerationLogprobs
from .stop_sequences import IncrementalDecoder
from .vision import VisionPrompt, image_prefill, model_tensors

_END = object()


class _QueueStreamer:
    """A ``generate`` streamer that hands generated token ids to ``deliver`` and does nothing else,
    so streaming costs generation almost nothing."""

    def __init__(self, deliver: Callable[[Any], None]) -> None:
        self._deliver = deliver
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate() first echoes the prompt
            self._prompt_seen = True
            return
        self._deliver(value.reshape(-1).tolist())

    def end(self) -> None:
        return None


class _CancelCriteria:
    """Stops generation once ``event`` is set (Stop button, interrupt, stop sequence found)."""

    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), self._event.is_set(), dtype=torch.bool, device=input_ids.device)


class LocalGenerator:
    """Generates with one model and tokenizer, one generation at a time, reusing ``kv_cache`` between calls."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        model_name: str,
        kv_cache: ConversationCache,
        compile_decode: bool | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.kv_cache = kv_cache
        self.compile_decode = compile_decode
        """Decode through the compiled step (``fast_decode.py``): None follows the machine's default."""
        self._lock = threading.Lock()
        self._lock_owner: int | None = None

    @property
    def model_lock(self) -> threading.Lock:
        """Held while this model generates; batch_generation.py takes it too, so a batch and a reply never overlap."""
        return self._lock

    def stream(
        self,
        input_ids: list[int],
        params: GenerationParams,
        processors: list[Any] | None = None,
        reuse_cache: bool = True,
        prompt: VisionPrompt | None = None,
        keep_special: bool = False,
    ) -> Iterator[ChatDelta]:
        """Generate on the calling thread, inside a greenlet that hands over each token as it comes.

        Why not a worker thread: torch's OpenMP pool belongs to the thread that runs it, and once two
        pools outnumber the cores libgomp stops spin-waiting between kernels, which cost ~30% of decode
        speed on 2 cores (see benchmarks/). A greenlet keeps generation on this thread's pool, and
        Ctrl-C raised during generation reaches the caller as usual.
        """
        if self._lock.locked() and self._lock_owner == threading.get_ident():
            raise InvalidInputError(
                "A reply from this model is still streaming in this thread: finish or close that stream first."
            )
        cancel = threading.Event()
        logprobs = GenerationLogprobs(params.top_logprobs or 0) if params.logprobs else None

        def hand_over(ids: list[int]) -> None:
            greenlet.getcurrent().parent.switch(ids)  # resumes the consumer; returns when it wants more

        generation = greenlet.greenlet(
            lambda: self._run_generate(input_ids, params, hand_over, cancel, processors, reuse_cache, prompt, logprobs)
        )
        decoder = self._decoder(params, keep_special)
        try:
            while (ids := generation.switch()) is not None:
                text = decoder.push(ids)
                if decoder.stopped:
                    cancel.set()  # generation ends at its next step
                if text:
                    yield ChatDelta(text=text)
            yield self._final_delta(decoder, input_ids, params, logprobs)
        finally:
            if not generation.dead:  # the consumer stopped early: unwind generate() now, releasing the model
                cancel.set()
                generation.throw()

    async def astream(
        self,
        input_ids: list[int],
        params: GenerationParams,
        processors: list[Any] | None = None,
        reuse_cache: bool = True,
        prompt: VisionPrompt | None = None,
        keep_special: bool = False,
    ) -> AsyncIterator[ChatDelta]:
        """``stream`` for an event loop: the loop only decodes, generation stays on its thread."""
        loop = asyncio.get_running_loop()
        tokens: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()
        logprobs = GenerationLogprobs(params.top_logprobs or 0) if params.logprobs else None

        def deliver(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(tokens.put_nowait, item)
            except RuntimeError:  # the loop closed under us: nobody is listening any more
                cancel.set()

        def run() -> None:
            try:
                self._run_generate(input_ids, params, deliver, cancel, processors, reuse_cache, prompt, logprobs)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                deliver(exc)
            finally:
                deliver(_END)

        # An event loop must never run the model: generation gets a thread of its own here.
        threading.Thread(target=run, name="hf_magic-generate", daemon=True).start()
        decoder = self._decoder(params, keep_special)
        try:
            while True:
                items = [await tokens.get()]
                while not tokens.empty():
                    items.append(tokens.get_nowait())
                text, finished = _consume(decoder, items)
                if decoder.stopped:
                    cancel.set()
                if text:
                    yield ChatDelta(text=text)
                if finished:
                    break
            yield self._final_delta(decoder, input_ids, params, logprobs)
        finally:
            cancel.set()  # on cancellation the worker stops at its next token and releases the model

    def _decoder(self, params: GenerationParams, keep_special: bool = False) -> IncrementalDecoder:
        """Decodes the reply; ``keep_special`` for formats written in special tokens (gpt-oss channels), whose
        end-of-reply marker still goes."""
        tokenizer = self.tokenizer
        ends = eos_token_ids(self.model, tokenizer) if keep_special else set()

        def decode(ids: list[int]) -> str:
            if keep_special:
                return tokenizer.decode([i for i in ids if i not in ends], skip_special_tokens=False)
            return tokenizer.decode(ids, skip_special_tokens=True)

        return IncrementalDecoder(decode, params.stop)

    def _final_delta(
        self,
        decoder: IncrementalDecoder,
        input_ids: list[int],
        params: GenerationParams,
        logprobs: GenerationLogprobs | None = None,
    ) -> ChatDelta:
        tail = decoder.finish()
        generated = decoder.tokens_at_stop if decoder.tokens_at_stop is not None else len(decoder.token_ids)
        eos_ids = eos_token_ids(self.model, self.tokenizer)
        hit_eos = bool(decoder.token_ids) and decoder.token_ids[-1] in eos_ids
        limit = params.token_budget
        finish_reason = "length" if not decoder.stopped and not hit_eos and generated >= limit else "stop"
        entries = None
        if logprobs is not None:
            content_ids = decoder.token_ids[:generated]
            if content_ids and content_ids[-1] in eos_ids:  # OpenAI lists the reply's tokens, not the end marker
                content_ids = content_ids[:-1]
            entries = logprobs.entries(content_ids, self.tokenizer.decode)
        return ChatDelta(
            text=tail,
            finish_reason=finish_reason,
            usage=Usage(input_tokens=len(input_ids), output_tokens=generated),
            logprobs=entries,
            model_name=self.model_name,
        )

    def _run_generate(
        self,
        input_ids: list[int],
        params: GenerationParams,
        deliver: Callable[[list[int]], None],
        cancel: threading.Event,
        processors: list[Any] | None = None,
        reuse_cache: bool = True,
        prompt: VisionPrompt | None = None,
        logprobs: GenerationLogprobs | None = None,
    ) -> None:
        """Run ``model.generate``, handing each new token's ids to ``deliver``; stops once ``cancel`` is set.

        The prompt is prefilled in passes cut where its earlier generations started (``prompt.turn_starts``): those
        the kept cache does not hold run first (``kv_cache.prefill_earlier_turns``), then ``generate`` prefills the
        last one, from the last cut to the prompt's end, in one pass. A ``prompt`` with images hands their pixels
        to the first pass unless the kept cache already holds them."""
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        generate_kwargs = self._generate_kwargs(params)
        if processors:  # grammar masks, only when a request asks
            generate_kwargs["logits_processor"] = LogitsProcessorList(processors)
        if logprobs is not None:
            generate_kwargs.update(logprobs.generate_kwargs())
        starts = prompt.turn_starts if prompt is not None else ()
        with self._lock:  # one generation at a time per model
            self._lock_owner = threading.get_ident()
            try:
                if cancel.is_set():
                    return
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                ids = torch.tensor([input_ids], device=self.model.device)
                with torch.inference_mode():
                    # Prefill only what the last generation did not see (a failed one leaves no cache).
                    # The compiled step decodes from a static cache sized for this request (fast_decode.py); its
                    # prefill passes are the same turn-boundary cuts as the in-place cache's, run eagerly.
                    fast = fast_decode_for(self.model, self.compile_decode)
                    layout = fast.layout(len(input_ids), params.token_budget) if fast else None
                    lease = self.kv_cache.take(self.model, input_ids, starts, reuse=reuse_cache, layout=layout)
                    image_inputs: dict[str, Any] = {}
                    if prompt is not None:
                        lease, image_inputs = image_prefill(self.kv_cache, self.model, lease, prompt)
                    first_inputs = model_tensors(image_inputs, self.model)
                    if lease is not None and lease.passes:
                        prefill_earlier_turns(self.model, ids, lease, first_inputs, generate_kwargs["pad_token_id"])
                        first_inputs = {}  # the pixels went with the pass from position 0
                    if cancel.is_set():
                        return
                    output = self.model.generate(
                        input_ids=ids,
                        attention_mask=torch.ones_like(ids),
                        streamer=_QueueStreamer(deliver),
                        stopping_criteria=StoppingCriteriaList([_CancelCriteria(cancel)]),
                        **first_inputs,
                        **(lease.generate_kwargs() if lease else {}),
                        **(fast.generate_kwargs() if fast and lease else {}),
                        **generate_kwargs,
                    )
                if logprobs is not None:
                    logprobs.read(self.model, output)
                if lease is not None and reuse_cache:
                    self.kv_cache.keep(
                        self.model, lease, getattr(output, "sequences", output)[0].tolist(), len(input_ids)
                    )
            finally:
                self._lock_owner = None

    def _generate_kwargs(self, params: GenerationParams) -> dict[str, Any]:
        """Keyword arguments for ``model.generate``; unset params keep the model's generation config."""
        kwargs: dict[str, Any] = {"max_new_tokens": params.token_budget}
        pad = self.tokenizer.pad_token_id
        kwargs["pad_token_id"] = pad if pad is not None else self.tokenizer.eos_token_id
        if params.greedy and (params.temperature is not None or params.do_sample is not None):
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        elif not params.greedy:
            kwargs["do_sample"] = True
            for name in ("temperature", "top_p", "top_k"):
                if getattr(params, name) is not None:
                    kwargs[name] = getattr(params, name)
        if params.repetition_penalty is not None:
            kwargs["repetition_penalty"] = params.repetition_penalty
        if params.logit_bias:  # transformers' SequenceBiasLogitsProcessor, one-token sequences: OpenAI's logit_bias
            kwargs["sequence_bias"] = {(token,): bias for token, bias in params.logit_bias.items()}
        return kwargs


def _consume(decoder: IncrementalDecoder, items: list[Any]) -> tuple[str, bool]:
    """Feed queued items to the decoder: the new text, and whether generation has ended."""
    pieces: list[str] = []
    for item in items:
        if item is _END:
            return "".join(pieces), True
        if isinstance(item, BaseException):
            raise item
        pieces.append(decoder.push(item))
    return "".join(pieces), False


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """The token ids that end a reply: the generation config's and the tokenizer's."""
    ids = getattr(model.generation_config, "eos_token_id", None)
    found = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        found.add(tokenizer.eos_token_id)
    return found
