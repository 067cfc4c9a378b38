"""ConversationCache: the KV cache of a pipeline's last generation, reused so the next turn prefills only new tokens.

Exactness rests on shapes, not on any kernel's rounding. Every prompt is prefilled in chunks of
``PREFILL_CHUNK`` tokens cut at absolute positions (0, C, 2C, ...; transformers' ``prefill_chunk_size`` does the
cutting), and only positions of whole chunks are kept. A reused turn starts at a chunk boundary, so every chunk
it computes has the same rows, keys and inputs as the same chunk of a fresh prefill: the model's own attention
(SDPA) and matmuls give the same bits, on any CPU or GPU, whatever their kernels round like. Positions decoded
one token at a time (the reply) and those of a last, partial chunk are prefilled again with the next message.
"""

from __future__ import annotations

import inspect
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Protocol

from .transformers_compat import supports_default_dynamic_cache

PREFILL_CHUNK = 128
"""Tokens per prefill chunk, and so the granularity of reuse.

Measured on the default model in bf16, 2 cores (``benchmarks/run.py``): a one-pass prefill of 1420 tokens took
2.76 s, cut in chunks of 64/128/256/512 it took 4.51/3.46/3.09/2.92 s; a prompt shorter than a chunk is one
pass. A reused turn prefills on average half a chunk of earlier tokens again, so a smaller chunk makes later
turns cheaper and long fresh prompts dearer; 128 keeps turn 20 of the scripted chat within 1.25x turn 1."""


def common_prefix_length(cached: list[int], new: list[int]) -> int:
    """How many leading token ids ``cached`` and ``new`` share."""
    limit = min(len(cached), len(new))
    for index in range(limit):
        if cached[index] != new[index]:
            return index
    return limit


def whole_chunks(length: int, chunk: int) -> int:
    """The positions of ``length`` that lie in whole chunks: ``length`` rounded down to a multiple of ``chunk``."""
    return length - length % chunk


def reusable_length(cached: list[int], new: list[int], chunk: int) -> int:
    """How many cached positions a generation from ``new`` can keep: the common prefix rounded down to a chunk
    boundary, leaving at least one token to prefill (the one whose logits give the first new token)."""
    return whole_chunks(min(common_prefix_length(cached, new), len(new) - 1), chunk) if new else 0


def cache_keyword(model: Any) -> str:
    """The name ``generate`` takes a cache under: ``cache`` in recent transformers, ``past_key_values`` before."""
    parameters = inspect.signature(type(model).forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def supports_reuse(model: Any) -> bool:
    """Whether ``model`` can continue from a cropped ``DynamicCache``.

    Models that ask for another cache (static, offloaded...) or whose layers are not all plain full
    attention (sliding windows and linear attention drop states, so a crop cannot rewind them) are
    always prefilled in full.
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    if getattr(model.generation_config, "cache_implementation", None) is not None:
        return False
    if not supports_default_dynamic_cache(model):
        return False
    try:
        probe = DynamicCache(config=model.config)
    except Exception:  # a config this transformers cannot map to cache layers
        return False
    return bool(probe.layers) and all(type(layer) is DynamicLayer for layer in probe.layers)


def new_cache(model: Any) -> Any:
    """An empty cache for ``model`` (one that ``supports_reuse``), laid out as its ``DynamicCache`` but with layers
    that append in place (``kv_layer.py``): a conversation's cache is then copied only when it outgrows its buffers."""
    from transformers import Cache, DynamicCache

    from .kv_layer import InPlaceLayer

    # Built through Cache's public constructor, one in-place layer where DynamicCache would put a DynamicLayer.
    layers = len(DynamicCache(config=model.config).layers)
    return Cache(layers=[InPlaceLayer() for _ in range(layers)])


class CacheLayout(Protocol):
    """What kind of cache a generation uses, and how a kept cache becomes one."""

    def adopt(self, model: Any, kept: Any | None, reused: int) -> Any:
        """A cache holding the first ``reused`` positions of ``kept`` (a new, empty one when ``kept`` is None)."""
        ...


class InPlaceLayout:
    """Caches laid out as the model's ``DynamicCache``, with layers that append in place (``new_cache``)."""

    def adopt(self, model: Any, kept: Any | None, reused: int) -> Any:
        from .kv_layer import InPlaceLayer

        if kept is None or reused == 0:
            return new_cache(model)
        if not all(isinstance(layer, InPlaceLayer) for layer in kept.layers):  # another layout's: copy over
            return copy_prefix(kept, new_cache(model), reused)
        # Crop by a negative count: the form both older and newer transformers read as "remove".
        if kept.get_seq_length() > reused:
            kept.crop(reused - kept.get_seq_length())
        return kept


IN_PLACE = InPlaceLayout()


def copy_prefix(source: Any, target: Any, length: int) -> Any:
    """``target`` (an empty cache) holding the first ``length`` positions of ``source``, layer by layer."""
    for old, new in zip(source.layers, target.layers, strict=True):
        new.update(old.keys[:, :, :length], old.values[:, :, :length])
    return target


@dataclass
class CacheLease:
    """A cache handed to one generation; its first ``reused`` positions need no prefill."""

    cache: Any
    reused: int
    epoch: int
    keyword: str
    chunk: int
    chunked: bool = True
    """False for a prompt with raw image inputs, which transformers prefills only in one pass."""

    def generate_kwargs(self) -> dict[str, Any]:
        """What to add to ``model.generate``'s arguments: the cache, and the chunking that makes it reusable."""
        if not self.chunked:
            return {self.keyword: self.cache}
        return {self.keyword: self.cache, "prefill_chunk_size": self.chunk}


class ConversationCache:
    """One conversation's KV cache and the token ids it holds, for one pipeline.

    A generation ``take``s the cache (so a generation that fails or is abandoned leaves none behind) and
    ``keep``s it when ``generate`` returned. ``reset`` may be called from any thread at any time: a
    generation running meanwhile finds its lease outdated and its cache is dropped.
    Memory stays bounded: at most one cache, whose buffers hold the longest context seen and room to grow
    (up to half as much again, ``kv_layer.py``).
    """

    def __init__(self, chunk: int = PREFILL_CHUNK) -> None:
        self.chunk = chunk
        """Prefill chunk size (``PREFILL_CHUNK``); tests use small ones to cross many chunk boundaries."""
        self._guard = threading.Lock()
        self._cache: Any = None
        self._token_ids: list[int] = []
        self._model: weakref.ReferenceType[Any] | None = None
        self._epoch = 0
        self._support: dict[int, str | None] = {}  # id(model) -> cache keyword, None when it cannot reuse
        self.last_reused = 0
        """Prompt tokens the latest generation took from the cache (0: a full prefill)."""
        self.last_note: str | None = None
        """Why the latest generation prefilled in full although a cache was kept (a new image), else ``None``."""

    @property
    def cached_tokens(self) -> int:
        """How many token positions the kept cache holds."""
        return len(self._token_ids)

    def take(
        self, model: Any, input_ids: list[int], reuse: bool = True, layout: CacheLayout | None = None
    ) -> CacheLease | None:
        """The cache to generate ``input_ids`` with: the kept one cropped to the shared whole chunks, or a new
        one (always, when not ``reuse``: the same chunked prefill, from scratch), laid out as ``layout`` says
        (default: in-place dynamic layers; ``fast_decode.StaticLayout`` for the compiled step). ``None`` when
        ``model`` cannot reuse a cache (``generate`` then builds its own and prefills in one pass)."""
        keyword = self._cache_keyword(model)
        if keyword is None:
            self.reset()
            self.last_reused, self.last_note = 0, None
            return None
        with self._guard:
            cache, cached_ids = self._cache, self._token_ids
            same_model = self._model is not None and self._model() is model
            self._cache, self._token_ids, self._model = None, [], None
            epoch = self._epoch
        reused = reusable_length(cached_ids, input_ids, self.chunk) if cache is not None and same_model and reuse else 0
        cache = (layout or IN_PLACE).adopt(model, cache if reused > 0 else None, reused)
        self.last_reused, self.last_note = reused, None
        return CacheLease(cache=cache, reused=reused, epoch=epoch, keyword=keyword, chunk=self.chunk)

    def restart_unchunked(self, model: Any, lease: CacheLease, note: str) -> CacheLease:
        """``lease`` replaced by an empty cache prefilled in one pass (raw image inputs), ``note`` saying why.

        The positions kept afterwards came from that one pass, so a later turn that reuses them matches a fresh
        prefill of the same prompt up to the kernels' rounding, not bit for bit as text-only turns do.
        """
        self.last_reused, self.last_note = 0, note
        return CacheLease(
            cache=new_cache(model), reused=0, epoch=lease.epoch, keyword=lease.keyword, chunk=lease.chunk, chunked=False
        )

    def keep(self, model: Any, lease: CacheLease, sequence: list[int], prompt_length: int) -> None:
        """Keep ``lease``'s cache after ``generate`` returned ``sequence`` (prompt + generated ids) for a prompt
        of ``prompt_length`` ids: the positions of its whole prefill chunks, the rest cropped away."""
        kept = whole_chunks(prompt_length, lease.chunk)
        length = lease.cache.get_seq_length()
        if length > len(sequence) or length < kept:  # should not happen; a mismatched cache is worse than none
            return
        if length > kept:
            import torch

            with torch.inference_mode():  # a static cache keeps its length in an inference tensor
                lease.cache.crop(kept - length)
        with self._guard:
            if lease.epoch != self._epoch:  # reset while generating: the caller wants it gone
                return
            self._cache, self._token_ids, self._model = lease.cache, list(sequence[:kept]), weakref.ref(model)

    def reset(self) -> None:
        """Drop the cache (new conversation, model unloaded or replaced); outstanding leases are not kept."""
        with self._guard:
            self._cache, self._token_ids, self._model = None, [], None
            self._epoch += 1

    def _cache_keyword(self, model: Any) -> str | None:
        key = id(model)
        if key not in self._support:  # one model per pipeline: forget any other
            self._support = {key: cache_keyword(model) if supports_reuse(model) else None}
        return self._support[key]
