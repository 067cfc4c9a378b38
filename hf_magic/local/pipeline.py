"""HuggingFacePipeline: a local transformers model as a langchain LLM and as a chat backend.

It carries both interfaces (langchain's LLM, sync and async, and the backend contract) for one model. A request
becomes prompt ids in prompt.py (chat template, tools, context-window check) and logits processors here (grammar
constraints); ``generation.LocalGenerator`` generates and streams the reply, which reasoning.py and tool_calls.py read.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.llms import BaseLLM
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from pydantic import ConfigDict, PrivateAttr, ValidationError, model_validator

from .. import config
from ..backend import ChatDelta, ChatRequest, GenerationParams, join_deltas
from ..errors import HfMagicError, InvalidInputError, input_error
from ..progress import ProgressCallback
from ..reasoning import ReplyParser, ReplySplitter, ThinkTagParser, asplit_stream, split_stream
from ..text_completion import astream_chunks, stream_chunks
from .batch_generation import DEFAULT_BATCH_SIZE, BatchGenerator
from .constraints import constrainer_for, grammar_spec
from .fast_decode import prepare_fast_decode
from .generation import LocalGenerator, eos_token_ids
from .generation_params import params_from_kwargs, supported
from .kv_cache import ConversationCache
from .loading import default_device, is_default_model, load_model_and_tokenizer, resolve_model_path, torch_device
from .prompt import PromptRenderer
from .reply_format import reply_parser_for
from .tool_calls import aattach_tool_calls, attach_tool_calls
from .vision import TASK as VISION_TASK
from .vision import VisionPrompt, is_vision_language

SUPPORTED_TASKS = ("text-generation", VISION_TASK)

_END = object()

_Prepared = tuple[int, GenerationParams, VisionPrompt, ReplySplitter]
"""A request of a batch, ready: its index, settings, prompt and what reads its reply."""


@dataclass(frozen=True)
class LoadedModel:
    """A loaded model and its tokenizer: the two things of a transformers pipeline generation uses; for a
    vision-language model also its processor (whose tokenizer ``tokenizer`` is)."""

    model: Any
    tokenizer: Any
    processor: Any = None


class HuggingFacePipeline(BaseLLM):
    """A local transformers text-generation pipeline, compatible with langchain_huggingface's class.

    Example:
        >>> llm = HuggingFacePipeline.from_model_id("default", task="text-generation",
        ...     pipeline_kwargs={"max_new_tokens": 64, "do_sample": False})
        >>> llm.invoke("The capital of France is")  # only the continuation, never the prompt
    """

    pipeline: Any = None
    """What holds the model and its tokenizer (``.model``, ``.tokenizer``): a ``LoadedModel`` from ``from_model_id``,
    or a transformers text-generation pipeline passed in. Never called: ``LocalGenerator`` generates."""
    model_id: str | None = None
    model_kwargs: dict[str, Any] | None = None
    pipeline_kwargs: dict[str, Any] | None = None
    batch_size: int | None = None
    """Accepted for compatibility, and only as 1: prompts are generated one at a time."""
    reuse_kv_cache: bool = True
    """Keep the conversation's KV cache between calls and prefill only the new tokens (the last reply, which was
    decoded one token at a time, the new message and the assistant header). It changes speed, never a reply: a chat
    prompt is prefilled in passes cut where its earlier generations started either way, so a reused turn computes
    exactly what a fresh prefill computes (``kv_cache.py``); with images too, the images going with the pass that
    starts at position 0 (``vision.py``). Text completion prompts (``invoke("...")``) have no turns: each is one
    pass, from scratch."""

    compile_decode: bool | None = None
    """Decode through a compiled step (``fast_decode.py``): ``None`` does what this machine gains from (README
    "Speed"; ``HF_MAGIC_COMPILE=0`` turns it off everywhere), ``False`` never, ``True`` wherever the model allows."""

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())

    _kv_cache: ConversationCache = PrivateAttr(default_factory=ConversationCache)
    _local_generator: LocalGenerator | None = PrivateAttr(default=None)

    def __init__(self, **kwargs: Any) -> None:
        try:
            super().__init__(**kwargs)
        except ValidationError as exc:
            raise input_error(exc, "HuggingFacePipeline") from exc

    @model_validator(mode="after")
    def _check_batch_size(self) -> HuggingFacePipeline:
        if self.batch_size not in (None, 1):
            raise InvalidInputError(
                f"batch_size={self.batch_size} is not supported: prompts are generated one at a time (each streams "
                "and reuses the conversation's KV cache); leave batch_size out."
            )
        return self

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
        batch_size: int | None = None,
        progress: ProgressCallback | None = None,
        **kwargs: Any,
    ) -> HuggingFacePipeline:
        """Load ``model_id`` (hub id, local folder, or ``"default"``) into a text-generation pipeline.

        Args:
            model_id: what to load; ``None`` or ``"default"`` is the embedded SmolLM2-135M-Instruct.
            task: ``"text-generation"``, or ``"image-text-to-text"`` for a vision-language model; a VLM is
                recognised from its config and loaded with its processor whichever is given.
            backend: accepted for compatibility; only transformers (``"default"``/``"pt"``) is supported.
            device: ``-1``/``"cpu"``, a CUDA index or a torch device string; ``None`` (with no ``device_map``) is
                the GPU when there is one, else the CPU, as transformers' ``pipeline`` chooses.
            device_map: passed to ``from_pretrained`` (e.g. ``"auto"``); excludes ``device``.
            model_kwargs: passed to ``from_pretrained`` (``quantization_config``, ``dtype``...);
                ``quantization_config="8bit"`` or ``"4bit"`` picks the fastest kind for the machine
                (``local/quantization.py``).
            pipeline_kwargs: default generation settings (``max_new_tokens``, ``do_sample``...).
            batch_size: only 1 (or None): prompts are generated one at a time, so each streams and reuses the
                conversation's KV cache.
            progress: receives download / conversion / weight-loading events.

        Raises:
            InvalidInputError: an unsupported task, backend or batch size, both ``device`` and ``device_map``,
                or a device this machine does not have.
            ModelNotFoundError, QuantizationError: see ``hf_magic.loading``.
        """
        if task not in SUPPORTED_TASKS:
            raise InvalidInputError(
                f"Task {task!r} is not supported: use task='text-generation' (or 'image-text-to-text' for a VLM)."
            )
        if backend not in ("default", "pt", "transformers"):
            raise InvalidInputError(f"Backend {backend!r} is not supported: use the default transformers backend.")
        if device is not None and device_map is not None:
            raise InvalidInputError("Pass either device or device_map, not both.")
        supported(params_from_kwargs(pipeline_kwargs or {}))  # validate before the (slow) load
        if device is not None:
            device = torch_device(device)  # a device that is not here fails now, before a download or a load
        elif device_map is None:
            device = default_device()
        path = resolve_model_path(model_id, progress)
        vision = is_vision_language(path)
        if task == VISION_TASK and not vision:
            raise InvalidInputError(
                f"{model_id!r} is not a vision-language model: load it with task='text-generation', or pick a VLM."
            )
        model, tokenizer = load_model_and_tokenizer(
            path, device=device, device_map=device_map, model_kwargs=model_kwargs, progress=progress, vision=vision
        )
        prepare_fast_decode(model, kwargs.get("compile_decode"), progress)  # compiles now, with progress
        # A VLM comes with its processor, whose tokenizer decodes the replies.
        loaded = LoadedModel(model, tokenizer.tokenizer, tokenizer) if vision else LoadedModel(model, tokenizer)
        name = config.DEFAULT_MODEL_NAME if is_default_model(model_id) else model_id
        return cls(
            pipeline=loaded,
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
    def processor(self) -> Any:
        """A vision-language model's processor (``None`` for a text model)."""
        return getattr(self.pipeline, "processor", None)

    @property
    def reads_images(self) -> bool:
        """Whether the model is a vision-language model, loaded with its processor."""
        return self.processor is not None

    @property
    def last_prefill_note(self) -> str | None:
        """Why the latest turn prefilled in full though a cache was kept (a new image), else ``None``."""
        return self._kv_cache.last_note

    @property
    def context_length(self) -> int | None:
        """The model's maximum sequence length, when its config says (a VLM's: its language model's)."""
        model_config = self.model.config
        value = getattr(model_config, "max_position_embeddings", None)
        if value is None and hasattr(model_config, "get_text_config"):
            value = getattr(model_config.get_text_config(), "max_position_embeddings", None)
        return int(value) if value else None

    def default_params(self) -> GenerationParams:
        """Generation settings given at construction (``pipeline_kwargs``)."""
        return params_from_kwargs(self.pipeline_kwargs or {})

    def reset_cache(self) -> None:
        """Forget the conversation's KV cache (new chat, model swapped): the next call prefills in full."""
        self._kv_cache.reset()

    # ------------------------------------------------------------------------ chat backend
    def chat(self, request: ChatRequest) -> ChatDelta:
        return join_deltas(list(self.stream_chat(request)))

    async def achat(self, request: ChatRequest) -> ChatDelta:
        return join_deltas([delta async for delta in self.astream_chat(request)])

    def stream_chat(self, request: ChatRequest) -> Iterator[ChatDelta]:
        params, prompt, processors, splitter = self._prepare(request)
        deltas = self._stream_ids(prompt.input_ids, params, processors, prompt, splitter.parser.keeps_special_tokens)
        return self._read_reply(deltas, request, splitter)

    def _read_reply(
        self, deltas: Iterator[ChatDelta], request: ChatRequest, splitter: ReplySplitter
    ) -> Iterator[ChatDelta]:
        # Thinking is split off first; then tool-call text is held back and arrives parsed on the last delta.
        deltas = split_stream(deltas, splitter)
        if _parses_tool_calls(request) and not splitter.parser.reads_tool_calls:
            return attach_tool_calls(deltas, _tool_names(request))
        return deltas

    def batch_chat(
        self, requests: Sequence[ChatRequest], *, batch_size: int | None = None, cancel: threading.Event | None = None
    ) -> Iterator[tuple[int, ChatDelta | HfMagicError]]:
        """Whole replies to many independent requests, generated ``batch_size`` at a time (``batch_generation.py``),
        as ``(index, reply)`` in the order they finish. A request that cannot run (a prompt over the context window,
        a schema xgrammar refuses) comes back as its error and never stops the others. Requests with images,
        logprobs or a reply format written in special tokens are answered one at a time. The conversation's KV
        cache is neither used nor changed. ``cancel`` (or closing the iterator) stops at the next token.
        """
        groups: dict[str, list[_Prepared]] = {}
        for index, request in enumerate(requests):
            try:
                params, prompt, _, splitter = self._prepare(request)
            except HfMagicError as exc:
                yield index, exc
                continue
            if self.reads_images or params.logprobs or splitter.parser.keeps_special_tokens:
                yield index, self.chat(request)
                continue
            spec = grammar_spec(request.tools, request.tool_choice, request.response_format)
            groups.setdefault(f"{params!r}|{spec.key if spec else ''}", []).append((index, params, prompt, splitter))
        for group in groups.values():
            yield from self._batch_group(requests, group, batch_size or DEFAULT_BATCH_SIZE, cancel)

    def _batch_group(
        self, requests: Sequence[ChatRequest], group: list[_Prepared], batch_size: int, cancel: threading.Event | None
    ) -> Iterator[tuple[int, ChatDelta | HfMagicError]]:
        """Requests that share settings and grammar, batched; a batch that breaks fails its unfinished rows."""
        generator, params, first = self._generator(), group[0][1], requests[group[0][0]]
        batcher = BatchGenerator(self.model, self.tokenizer, self.model_name, generator.model_lock)
        pending = {member[0] for member in group}
        try:
            for finished in batcher.generate(
                [member[2].input_ids for member in group],
                params,
                generator._generate_kwargs(params),
                batch_size=batch_size,
                processors=lambda: self._logits_processors(first, params),
                cancel=cancel,
            ):
                index, splitter = group[finished.index][0], group[finished.index][3]
                pending.discard(index)
                yield index, join_deltas(list(self._read_reply(iter([finished.delta]), requests[index], splitter)))
        except Exception as exc:  # not the caller's interrupt: this batch's unfinished rows fail, the others go on
            for index in sorted(pending):
                yield index, HfMagicError(f"Generation failed: {type(exc).__name__}: {exc}")

    def astream_chat(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        params, prompt, processors, splitter = self._prepare(request)
        deltas = self._astream_ids(prompt.input_ids, params, processors, prompt, splitter.parser.keeps_special_tokens)
        split = asplit_stream(deltas, splitter)
        if _parses_tool_calls(request) and not splitter.parser.reads_tool_calls:
            return aattach_tool_calls(split, _tool_names(request))
        return split

    def _prepare(self, request: ChatRequest) -> tuple[GenerationParams, VisionPrompt, list[Any], ReplySplitter]:
        """The generation settings, the prompt, the logits processors and what reads the reply."""
        params = supported(self.default_params().merged(request.params))
        prompt = self._chat_prompt(request)
        return params, prompt, self._logits_processors(request, params), self._reply_splitter(request, prompt)

    def _reply_splitter(self, request: ChatRequest, prompt: VisionPrompt) -> ReplySplitter:
        """What reads the reply to ``prompt``: thinking, answer and, in some formats, tool calls."""
        if self.reads_images or grammar_spec(request.tools, request.tool_choice, request.response_format):
            # A grammar writes JSON from the first token, so nothing is thinking; VLM replies: <think> tags only.
            parser: ReplyParser = ThinkTagParser()
        else:
            text = self.tokenizer.decode(prompt.input_ids)  # the prompt as the template wrote it, markers included
            parser = reply_parser_for(self.tokenizer, text, request.tools if _parses_tool_calls(request) else None)
        return ReplySplitter(parser, self._count_tokens)

    def _count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _chat_input_ids(self, request: ChatRequest) -> list[int]:
        """The prompt's token ids.

        Raises:
            ContextWindowError: the prompt leaves no room for a reply token in the model's context window.
        """
        return self._chat_prompt(request).input_ids

    def _chat_prompt(self, request: ChatRequest) -> VisionPrompt:
        """The prompt's token ids and, for a VLM, its processed images (see ``prompt.PromptRenderer``)."""
        return self._prompts().chat_prompt(request)

    def _check_fits(self, input_ids: list[int]) -> None:
        self._prompts().check_fits(input_ids)

    def _prompts(self) -> PromptRenderer:
        return PromptRenderer(self.model, self.tokenizer, self.processor, self.model_name, self.context_length)

    def _logits_processors(self, request: ChatRequest, params: GenerationParams) -> list[Any]:
        """Grammar constraints for one generation (none unless asked for).

        Raises:
            SchemaError: the schema or tools cannot be compiled into a grammar.
        """
        processors: list[Any] = []
        spec = grammar_spec(request.tools, request.tool_choice, request.response_format)
        if spec is not None:
            constrainer = constrainer_for(self.model, self.tokenizer, eos_token_ids(self.model, self.tokenizer))
            # The grammar closes the JSON before the budget runs out, so it needs the budget.
            budget = params.token_budget
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
        params = supported(self.default_params().merged(params_from_kwargs({**kwargs, "stop": stop})))
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
        params = supported(self.default_params().merged(params_from_kwargs({**kwargs, "stop": stop})))
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
        prompt: VisionPrompt | None = None,
        keep_special: bool = False,
    ) -> Iterator[ChatDelta]:
        return self._generator().stream(
            input_ids, params, processors, reuse_cache=self.reuse_kv_cache, prompt=prompt, keep_special=keep_special
        )

    def _astream_ids(
        self,
        input_ids: list[int],
        params: GenerationParams,
        processors: list[Any] | None = None,
        prompt: VisionPrompt | None = None,
        keep_special: bool = False,
    ) -> AsyncIterator[ChatDelta]:
        return self._generator().astream(
            input_ids, params, processors, reuse_cache=self.reuse_kv_cache, prompt=prompt, keep_special=keep_special
        )

    def _generator(self) -> LocalGenerator:
        """The generator for this pipeline's model, made on first use (``pipeline`` is set by then)."""
        if self._local_generator is None or self._local_generator.model is not self.model:
            self._local_generator = LocalGenerator(
                self.model, self.tokenizer, self.model_name, self._kv_cache, self.compile_decode
            )
        return self._local_generator


def _parses_tool_calls(request: ChatRequest) -> bool:
    return bool(request.tools) and request.tool_choice != "none"


def _tool_names(request: ChatRequest) -> list[str]:
    return [tool["function"]["name"] for tool in request.tools or []]
