"""HuggingFacePipeline: a local transformers model as a langchain LLM and as a chat backend.

Generation hands each new token's ids to the consumer and does nothing else per token; decoding,
stop sequences and usage happen on the consumer's side. Sync calls generate on the calling thread (in a
greenlet, so tokens stream out as they come); async calls generate on a worker thread so the event loop
never runs the model. Stopping a stream stops generation at the next token.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import greenlet
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.llms import BaseLLM
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from pydantic import ConfigDict, PrivateAttr

from .. import config
from ..backend import ChatDelta, ChatRequest, GenerationParams, Usage, join_deltas
from ..errors import ContextWindowError, InvalidInputError
from ..progress import ProgressCallback
from ..reasoning import ReplyParser, ReplySplitter, ThinkTagParser, asplit_stream, split_stream
from ..text_completion import astream_chunks, stream_chunks
from .chat_template import render_prompt
from .constraints import constrainer_for, grammar_spec
from .kv_cache import ConversationCache
from .loading import default_device, is_default_model, load_model_and_tokenizer, resolve_model_path, torch_device
from .logprobs import LogprobsRecorder
from .reply_format import reply_parser_for, thinking_template_kwargs
from .stop_sequences import IncrementalDecoder
from .tool_calls import aattach_tool_calls, attach_tool_calls, prompt_messages

DEFAULT_BATCH_SIZE = 2
SUPPORTED_TASKS = ("text-generation",)

_END = object()
_GENERATION_KEYS = ("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "do_sample", "seed")


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


class HuggingFacePipeline(BaseLLM):
    """A local transformers text-generation pipeline, compatible with langchain_huggingface's class.

    Example:
        >>> llm = HuggingFacePipeline.from_model_id("default", task="text-generation",
        ...     pipeline_kwargs={"max_new_tokens": 64, "do_sample": False})
        >>> llm.invoke("The capital of France is")  # only the continuation, never the prompt
    """

    pipeline: Any = None
    model_id: str | None = None
    model_kwargs: dict[str, Any] | None = None
    pipeline_kwargs: dict[str, Any] | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    reuse_kv_cache: bool = True
    """Keep the conversation's KV cache between calls and prefill only the new tokens (with the last reply,
    which was decoded one token at a time, and the last partial prefill chunk). It changes speed, never a reply:
    prompts are prefilled in position-aligned chunks either way, so a reused turn computes exactly what a fresh
    prefill computes (``kv_cache.py``)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())

    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _lock_owner: int | None = PrivateAttr(default=None)
    _kv_cache: ConversationCache = PrivateAttr(default_factory=ConversationCache)

    @classmethod
    def from_model_id(
        cls,
        model_id: str | None = None,
        task: str = "text-generation",
        backend: str = "default",
        device: int | str | None = None,
        device_map: str | dict[str, Any] | None = None,
        model_kwargs: dict[str, Any] | None = None,
        pipeline_kwargs: dict[str, Any] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: ProgressCallback | None = None,
        **kwargs: Any,
    ) -> HuggingFacePipeline:
        """Load ``model_id`` (hub id, local folder, or ``"default"``) into a text-generation pipeline.

        Args:
            model_id: what to load; ``None`` or ``"default"`` is the embedded SmolLM2-135M-Instruct.
            task: only ``"text-generation"`` (chat models are causal LMs).
            backend: accepted for compatibility; only transformers (``"default"``/``"pt"``) is supported.
            device: ``-1``/``"cpu"``, a CUDA index or a torch device string; ``None`` (with no ``device_map``) is
                the GPU when there is one, else the CPU, as transformers' ``pipeline`` chooses.
            device_map: passed to ``from_pretrained`` (e.g. ``"auto"``); excludes ``device``.
            model_kwargs: passed to ``from_pretrained`` (``quantization_config``, ``dtype``...).
            pipeline_kwargs: default generation settings (``max_new_tokens``, ``do_sample``...).
            progress: receives download / conversion / weight-loading events.

        Raises:
            InvalidInputError: an unsupported task or backend, both ``device`` and ``device_map``, or a device
                this machine does not have.
            ModelNotFoundError, QuantizationError: see ``hf_magic.loading``.
        """
        from transformers import pipeline as make_pipeline

        if task not in SUPPORTED_TASKS:
            raise InvalidInputError(f"Task {task!r} is not supported: use task='text-generation'.")
        if backend not in ("default", "pt", "transformers"):
            raise InvalidInputError(f"Backend {backend!r} is not supported: use the default transformers backend.")
        if device is not None and device_map is not None:
            raise InvalidInputError("Pass either device or device_map, not both.")
        params = _params_from_kwargs(pipeline_kwargs or {})  # validate before the (slow) load
        del params
        if device is not None:
            device = torch_device(device)  # a device that is not here fails now, before a download or a load
        elif device_map is None:
            device = default_device()
        path = resolve_model_path(model_id, progress)
        model, tokenizer = load_model_and_tokenizer(
            path, device=device, device_map=device_map, model_kwargs=model_kwargs, progress=progress
        )
        # Where loading put it: transformers' pipeline would move a model without a device map to the GPU (when
        # device="cpu" was asked for), and cannot place a model that has one.
        placed = {} if getattr(model, "hf_device_map", None) else {"device": model.device}
        pipe = make_pipeline(task, model=model, tokenizer=tokenizer, batch_size=batch_size, **placed)
        name = config.DEFAULT_MODEL_NAME if is_default_model(model_id) else model_id
        return cls(
            pipeline=pipe,
            model_id=name,
            model_kwargs=model_kwargs,
            pipeline_kwargs=pipeline_kwargs,
            batch_size=batch_size,
            **kwargs,
        )

    # ----------------------------------------------------------------------------- properties
    @property
    def _llm_type(self) -> str:
        return "huggingface_pipeline"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "model_kwargs": self.model_kwargs, "pipeline_kwargs": self.pipeline_kwargs}

    @property
    def model_name(self) -> str:
        if self.model_id:
            return self.model_id
        return str(getattr(self.model.config, "name_or_path", "") or "local-model")

    @property
    def model(self) -> Any:
        return self.pipeline.model

    @property
    def tokenizer(self) -> Any:
        return self.pipeline.tokenizer

    @property
    def context_length(self) -> int | None:
        """The model's maximum sequence length, when its config says."""
        value = getattr(self.model.config, "max_position_embeddings", None)
        return int(value) if value else None

    def default_params(self) -> GenerationParams:
        """Generation settings given at construction (``pipeline_kwargs``)."""
        return _params_from_kwargs(self.pipeline_kwargs or {})

    def reset_cache(self) -> None:
        """Forget the conversation's KV cache (new chat, model swapped): the next call prefills in full."""
        self._kv_cache.reset()

    # ------------------------------------------------------------------------ chat backend
    def chat(self, request: ChatRequest) -> ChatDelta:
        return join_deltas(list(self.stream_chat(request)))

    async def achat(self, request: ChatRequest) -> ChatDelta:
        return join_deltas([delta async for delta in self.astream_chat(request)])

    def stream_chat(self, request: ChatRequest) -> Iterator[ChatDelta]:
        input_ids, params, processors, splitter = self._prepare(request)
        deltas = self._stream_ids(input_ids, params, processors, splitter.parser.keeps_special_tokens)
        # Thinking is split off first; then tool-call text is held back and arrives parsed on the last delta.
        deltas = split_stream(deltas, splitter)
        if _parses_tool_calls(request) and not splitter.parser.reads_tool_calls:
            return attach_tool_calls(deltas, _tool_names(request))
        return deltas

    def astream_chat(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        input_ids, params, processors, splitter = self._prepare(request)
        deltas = asplit_stream(
            self._astream_ids(input_ids, params, processors, splitter.parser.keeps_special_tokens), splitter
        )
        if _parses_tool_calls(request) and not splitter.parser.reads_tool_calls:
            return aattach_tool_calls(deltas, _tool_names(request))
        return deltas

    def _prepare(self, request: ChatRequest) -> tuple[list[int], GenerationParams, list[Any], ReplySplitter]:
        """The prompt's ids, the generation settings, the logits processors and the reply's splitter."""
        input_ids, splitter = self._chat_input(request)
        params = self.default_params().merged(request.params)
        return input_ids, params, self._logits_processors(request, params), splitter

    def _chat_input_ids(self, request: ChatRequest) -> list[int]:
        """The prompt's token ids (see ``_chat_input``)."""
        return self._chat_input(request)[0]

    def _chat_input(self, request: ChatRequest) -> tuple[list[int], ReplySplitter]:
        """The prompt's token ids, and the splitter that will read the reply to it.

        Raises:
            ContextWindowError: the prompt leaves no room for a reply token in the model's context window.
        """
        prompt = self._render_prompt(request.messages, request)
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        self._check_fits(ids, lambda: self._history_tokens(request))
        if grammar_spec(request.tools, request.tool_choice, request.response_format) is not None:
            parser: ReplyParser = ThinkTagParser()  # the grammar writes JSON from the first token: no thinking
        else:
            parser = reply_parser_for(self.tokenizer, prompt, request.tools if _parses_tool_calls(request) else None)
        return ids, ReplySplitter(parser, self._count_tokens)

    def _count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _render_prompt(self, chat_messages: list[dict[str, Any]], request: ChatRequest) -> str:
        tools = request.tools if request.tool_choice != "none" else None
        messages, tools = prompt_messages(self.tokenizer, chat_messages, tools)
        return render_prompt(self.tokenizer, messages, tools, thinking_template_kwargs(self.tokenizer, request))

    def _render_ids(self, chat_messages: list[dict[str, Any]], request: ChatRequest) -> list[int]:
        prompt = self._render_prompt(chat_messages, request)
        return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def _history_tokens(self, request: ChatRequest) -> int | None:
        """Tokens of the conversation before the new message (what the refusal tells apart from the message)."""
        earlier = list(request.messages)
        while earlier and earlier[-1].get("role") not in ("assistant", "system"):
            earlier.pop()  # the trailing user / tool messages are the new message
        if not earlier or len(earlier) == len(request.messages):
            return None
        return len(self._render_ids(earlier, request))

    def _check_fits(self, input_ids: list[int], history_tokens: Callable[[], int | None] | None = None) -> None:
        """Refuse a prompt that cannot fit, before any prefill: a prompt past the window would prefill for
        minutes and then fail or answer garbage, and cutting it silently would answer a different question."""
        window = self.context_length
        if window is None or len(input_ids) + 1 <= window:
            return
        history = history_tokens() if history_tokens is not None else None
        raise ContextWindowError(len(input_ids), window, model=self.model_name, history_tokens=history)

    def _logits_processors(self, request: ChatRequest, params: GenerationParams) -> list[Any]:
        """Logprob recording and grammar constraints for one generation (none unless asked for).

        Raises:
            SchemaError: the schema or tools cannot be compiled into a grammar.
        """
        processors: list[Any] = []
        if params.logprobs:
            processors.append(LogprobsRecorder(params.top_logprobs or 0))  # before the mask: the model's own
        spec = grammar_spec(request.tools, request.tool_choice, request.response_format)
        if spec is not None:
            constrainer = constrainer_for(self.model, self.tokenizer, _eos_token_ids(self.model, self.tokenizer))
            # The grammar closes the JSON before the budget runs out, so it needs the budget.
            budget = params.max_new_tokens or config.DEFAULT_MAX_NEW_TOKENS
            processors.append(constrainer.logits_processor(spec, budget))
        return processors

    # ---------------------------------------------------------------------- text completion
    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        generations = []
        for prompt in prompts:
            chunks = list(self._stream(prompt, stop=stop, run_manager=run_manager, **kwargs))
            text = "".join(chunk.text for chunk in chunks)
            info = chunks[-1].generation_info if chunks else None
            generations.append([Generation(text=text, generation_info=info)])
        return LLMResult(generations=generations)

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        params = self.default_params().merged(_params_from_kwargs({**kwargs, "stop": stop}))
        input_ids = self.tokenizer(prompt)["input_ids"]
        self._check_fits(input_ids)
        yield from stream_chunks(self._stream_ids(input_ids, params), run_manager)

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        params = self.default_params().merged(_params_from_kwargs({**kwargs, "stop": stop}))
        input_ids = self.tokenizer(prompt)["input_ids"]
        self._check_fits(input_ids)
        async for chunk in astream_chunks(self._astream_ids(input_ids, params), run_manager):
            yield chunk

    # --------------------------------------------------------------------------- generation
    def _stream_ids(
        self,
        input_ids: list[int],
        params: GenerationParams,
        processors: list[Any] | None = None,
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

        def hand_over(ids: list[int]) -> None:
            greenlet.getcurrent().parent.switch(ids)  # resumes the consumer; returns when it wants more

        generation = greenlet.greenlet(lambda: self._run_generate(input_ids, params, hand_over, cancel, processors))
        decoder = self._decoder(params, keep_special)
        try:
            while (ids := generation.switch()) is not None:
                text = decoder.push(ids)
                if decoder.stopped:
                    cancel.set()  # generation ends at its next step
                if text:
                    yield ChatDelta(text=text)
            yield self._final_delta(decoder, input_ids, params, processors)
        finally:
            if not generation.dead:  # the consumer stopped early: unwind generate() now, releasing the model
                cancel.set()
                generation.throw()

    async def _astream_ids(
        self,
        input_ids: list[int],
        params: GenerationParams,
        processors: list[Any] | None = None,
        keep_special: bool = False,
    ) -> AsyncIterator[ChatDelta]:
        """``_stream_ids`` for an event loop: the loop only decodes, generation stays on its thread."""
        loop = asyncio.get_running_loop()
        tokens: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()

        def deliver(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(tokens.put_nowait, item)
            except RuntimeError:  # the loop closed under us: nobody is listening any more
                cancel.set()

        def run() -> None:
            try:
                self._run_generate(input_ids, params, deliver, cancel, processors)
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
            yield self._final_delta(decoder, input_ids, params, processors)
        finally:
            cancel.set()  # on cancellation the worker stops at its next token and releases the model

    def _decoder(self, params: GenerationParams, keep_special: bool = False) -> IncrementalDecoder:
        tokenizer = self.tokenizer
        eos_ids = _eos_token_ids(self.model, tokenizer)

        def decode(ids: list[int]) -> str:
            if keep_special:  # the reply's format is written in special tokens; only the end marker goes
                return tokenizer.decode([i for i in ids if i not in eos_ids], skip_special_tokens=False)
            return tokenizer.decode(ids, skip_special_tokens=True)

        return IncrementalDecoder(decode, params.stop)

    def _final_delta(
        self,
        decoder: IncrementalDecoder,
        input_ids: list[int],
        params: GenerationParams,
        processors: list[Any] | None = None,
    ) -> ChatDelta:
        tail = decoder.finish()
        generated = decoder.tokens_at_stop if decoder.tokens_at_stop is not None else len(decoder.token_ids)
        eos_ids = _eos_token_ids(self.model, self.tokenizer)
        hit_eos = bool(decoder.token_ids) and decoder.token_ids[-1] in eos_ids
        limit = params.max_new_tokens or config.DEFAULT_MAX_NEW_TOKENS
        finish_reason = "length" if not decoder.stopped and not hit_eos and generated >= limit else "stop"
        recorder = next((p for p in processors or [] if isinstance(p, LogprobsRecorder)), None)
        logprobs = None
        if recorder is not None:
            content_ids = decoder.token_ids[:generated]
            if content_ids and content_ids[-1] in eos_ids:  # OpenAI lists the reply's tokens, not the end marker
                content_ids = content_ids[:-1]
            logprobs = recorder.entries(content_ids, self.tokenizer.decode)
        return ChatDelta(
            text=tail,
            finish_reason=finish_reason,
            usage=Usage(input_tokens=len(input_ids), output_tokens=generated),
            logprobs=logprobs,
            model_name=self.model_name,
        )

    def _run_generate(
        self,
        input_ids: list[int],
        params: GenerationParams,
        deliver: Callable[[list[int]], None],
        cancel: threading.Event,
        processors: list[Any] | None = None,
    ) -> None:
        """Run ``model.generate``, handing each new token's ids to ``deliver``; stops once ``cancel`` is set."""
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        generate_kwargs = self._generate_kwargs(params)
        if processors:  # grammar masks and logprob recording, only when a request asks
            generate_kwargs["logits_processor"] = LogitsProcessorList(processors)
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
                    lease = self._kv_cache.take(self.model, input_ids, reuse=self.reuse_kv_cache)
                    output = self.model.generate(
                        input_ids=ids,
                        attention_mask=torch.ones_like(ids),
                        streamer=_QueueStreamer(deliver),
                        stopping_criteria=StoppingCriteriaList([_CancelCriteria(cancel)]),
                        **(lease.generate_kwargs() if lease else {}),
                        **generate_kwargs,
                    )
                if lease is not None and self.reuse_kv_cache:
                    self._kv_cache.keep(
                        self.model, lease, getattr(output, "sequences", output)[0].tolist(), len(input_ids)
                    )
            finally:
                self._lock_owner = None

    def _generate_kwargs(self, params: GenerationParams) -> dict[str, Any]:
        """Keyword arguments for ``model.generate``; unset params keep the model's generation config."""
        kwargs: dict[str, Any] = {"max_new_tokens": params.max_new_tokens or config.DEFAULT_MAX_NEW_TOKENS}
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
        return kwargs


def _parses_tool_calls(request: ChatRequest) -> bool:
    return bool(request.tools) and request.tool_choice != "none"


def _tool_names(request: ChatRequest) -> list[str]:
    return [tool["function"]["name"] for tool in request.tools or []]


def _consume(decoder: IncrementalDecoder, items: list[Any]) -> tuple[str, bool]:
    """Feed queued items to the decoder: the new text, and whether generation has ended."""
    pieces = []
    for item in items:
        if item is _END:
            return "".join(pieces), True
        if isinstance(item, BaseException):
            raise item
        pieces.append(decoder.push(item))
    return "".join(pieces), False


def _eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    ids = getattr(model.generation_config, "eos_token_id", None)
    found = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        found.add(tokenizer.eos_token_id)
    return found


def _params_from_kwargs(kwargs: dict[str, Any]) -> GenerationParams:
    """GenerationParams from pipeline-style keyword arguments (unknown keys are ignored)."""
    values = {key: kwargs[key] for key in _GENERATION_KEYS if kwargs.get(key) is not None}
    stop = kwargs.get("stop") or kwargs.get("stop_sequences") or ()
    if isinstance(stop, str):
        stop = (stop,)
    return GenerationParams(stop=tuple(stop), **values)
