"""A chat request as the prompt a local model reads: token ids from its chat template (tools included), where its
earlier generations started (the points its prefill is cut at, ``turn_boundaries.py``), a VLM's processed images,
and the context-window check that refuses a prompt before any prefill."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..backend import ChatRequest
from ..errors import ContextWindowError, ImageError
from ..images import messages_have_images
from .chat_template import render_prompt, to_template_messages
from .reply_format import thinking_template_kwargs
from .tool_calls import prompt_messages
from .turn_boundaries import generation_prefixes, prompt_ids_and_starts
from .vision import VisionPrompt, render_vision_prompt


@dataclass(frozen=True)
class PromptRenderer:
    """Renders prompts for one loaded model (``processor`` is ``None`` for a text model)."""

    model: Any
    tokenizer: Any
    processor: Any
    model_name: str
    context_length: int | None

    def chat_prompt(self, request: ChatRequest) -> VisionPrompt:
        """The prompt's token ids and, for a VLM, its processed images.

        Raises:
            ContextWindowError: the prompt (images included, as the processor resized them) leaves no room for a
                reply token in the model's context window.
            ImageError: an image for a model that reads text only, or one that cannot be read.
        """
        if self.processor is not None:
            tools = request.tools if request.tool_choice != "none" else None
            prompt = render_vision_prompt(self.processor, self.model, request.messages, tools)
            self.check_fits(prompt.input_ids, lambda: self.history_tokens(request), prompt.image_tokens)
            return prompt
        if messages_have_images(request.messages):
            raise ImageError(
                f"{self.model_name} reads text only and cannot see images: load a vision-language model "
                "(e.g. HuggingFaceTB/SmolVLM-256M-Instruct), or send text only."
            )
        ids, starts = self.render_ids_and_starts(request.messages, request)
        self.check_fits(ids, lambda: self.history_tokens(request))
        return VisionPrompt(input_ids=ids, turn_starts=starts)

    def render_ids(self, chat_messages: list[dict[str, Any]], request: ChatRequest) -> list[int]:
        """``chat_messages`` through the chat template, with ``request``'s tools and thinking switches, as ids."""
        tools = request.tools if request.tool_choice != "none" else None
        if self.processor is not None:
            return render_vision_prompt(self.processor, self.model, chat_messages, tools).input_ids
        return self.render_ids_and_starts(chat_messages, request)[0]

    def render_ids_and_starts(
        self, chat_messages: list[dict[str, Any]], request: ChatRequest
    ) -> tuple[list[int], tuple[int, ...]]:
        """A text model's ``render_ids``, and the token positions where the earlier assistant messages' generations
        started: each earlier prompt rendered with the same tools and switches, found in this one."""
        tools = request.tools if request.tool_choice != "none" else None
        messages, tools = prompt_messages(self.tokenizer, to_template_messages(chat_messages), tools)
        switches = thinking_template_kwargs(self.tokenizer, request)

        def render(part: list[dict[str, Any]]) -> str:
            return render_prompt(self.tokenizer, part, tools, switches)

        return prompt_ids_and_starts(self.tokenizer, render(messages), generation_prefixes(messages, render))

    def history_tokens(self, request: ChatRequest) -> int | None:
        """Tokens of the conversation before the new message (what the refusal tells apart from the message)."""
        earlier = list(request.messages)
        while earlier and earlier[-1].get("role") not in ("assistant", "system"):
            earlier.pop()  # the trailing user / tool messages are the new message
        if not earlier or len(earlier) == len(request.messages):
            return None
        return len(self.render_ids(earlier, request))

    def check_fits(
        self,
        input_ids: list[int],
        history_tokens: Callable[[], int | None] | None = None,
        image_tokens: int | None = None,
    ) -> None:
        """Refuse a prompt that cannot fit, before any prefill: a prompt past the window would prefill for
        minutes and then fail or answer garbage, and cutting it silently would answer a different question.

        Raises:
            ContextWindowError: the prompt leaves no room for one reply token.
        """
        window = self.context_length
        if window is None or len(input_ids) + 1 <= window:
            return
        history = history_tokens() if history_tokens is not None else None
        raise ContextWindowError(
            len(input_ids), window, model=self.model_name, history_tokens=history, image_tokens=image_tokens
        )
