"""A chat backend that replays fixed text through the real thinking and tool-call stages: parsers tested
without a model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from hf_magic.backend import ChatDelta, ChatRequest, Usage, join_deltas
from hf_magic.local.tool_calls import attach_tool_calls
from hf_magic.reasoning import ReplySplitter, ThinkTagParser, split_stream


class ReplayBackend:
    """Streams ``pieces`` as deltas, then a last delta with ``finish_reason`` and usage, as a backend does."""

    def __init__(
        self,
        pieces: list[str],
        finish_reason: str = "length",
        output_tokens: int | None = None,
        model_name: str = "replay",
    ) -> None:
        self.pieces, self.finish_reason, self.model_name = pieces, finish_reason, model_name
        self.output_tokens = len(pieces) if output_tokens is None else output_tokens

    def stream_chat(self, request: ChatRequest) -> Iterator[ChatDelta]:
        usage = Usage(input_tokens=20, output_tokens=self.output_tokens)
        deltas = [ChatDelta(text=piece) for piece in self.pieces]
        deltas.append(ChatDelta(finish_reason=self.finish_reason, usage=usage, model_name=self.model_name))
        names = [tool["function"]["name"] for tool in request.tools or []]
        # Inline <think> tags are split off the way the endpoint splits them; the whole-word count stands in
        # for a tokenizer.
        split = split_stream(iter(deltas), ReplySplitter(ThinkTagParser(), lambda text: len(text.split())))
        return attach_tool_calls(split, names) if request.tools else split

    def chat(self, request: ChatRequest) -> ChatDelta:
        return join_deltas(list(self.stream_chat(request)))

    async def astream_chat(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        for delta in self.stream_chat(request):
            yield delta

    async def achat(self, request: ChatRequest) -> ChatDelta:
        return self.chat(request)


class ScriptedBackend(ReplayBackend):
    """Answers each call with the next of ``replies`` (split at spaces into pieces), through the same real stages;
    ``requests`` keeps what each call was sent (messages, tools, tool_choice), to check what a loop sends back."""

    def __init__(self, replies: list[str], model_name: str = "scripted") -> None:
        super().__init__([], finish_reason="stop", model_name=model_name)
        self.replies = list(replies)
        self.requests: list[ChatRequest] = []

    def stream_chat(self, request: ChatRequest) -> Iterator[ChatDelta]:
        self.requests.append(request)
        reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
        self.pieces = [piece for piece in reply.split(" ")]
        self.pieces = [piece + " " for piece in self.pieces[:-1]] + self.pieces[-1:]
        self.output_tokens = len(self.pieces)
        return super().stream_chat(request)
