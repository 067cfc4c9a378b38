"""ConversationCache: the KV cache of a pipeline's last generation, reused so the next turn prefills only new tokens.

Exactness rests on shapes, not on any kernel's rounding. A chat prompt is prefilled in passes cut where its earlier
generations started (``turn_boundaries.py``: the end of each earlier prompt, after its assistant header), and the
positions of the whole prompt are kept. Turn k then prefills one pass, [end of turn k-1's prompt, end of its own):
the previous reply, the new message and the assistant header. A fresh prefill of the same conversation runs the
same passes over the same tokens (the earlier ones each through ``generate`` for one token, as the turn that first
prefilled them did), so every pass has the same rows, keys and inputs either way and the model's own attention
(SDPA) and matmuls give the same bits, on any CPU or GPU. A fresh single-turn prompt is one pass. Positions decoded
one token at a time (the reply) are dropped and prefilled again, in one pass, with the next message.

History: before issue 21 every prompt was prefilled in chunks of 128 tokens cut at absolute positions (0, 128,
256, ...; transformers' ``prefill_chunk_size``), and only whole chunks were kept. Exact too, but several small
passes cost more than one large one (1.71x one pass at 671 tokens and 2.10x at 1400 on an AMX CPU), a fresh
prompt's first text came about 200 ms after a plain prefill's, and turn 10 of a chat took 1.31x turn 1.
"""

from __future__ import annotations

import inspect
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .transformers_compat import supports_default_dynamic_cache


def common_prefix_length(cached: list[int], new: list[int]) -> int:
    """How many leading token ids ``cached`` and ``new`` share."""
    limit = min(len(cached), len(new))
    for index in range(limit):
        if cached[index] != new[index]:
            return index
    return limit


def reusable_length(cached: list[int], cached_ends: Sequence[int], new: list[int], new_starts: Sequence[int]) -> int:
    """How many cached positions a generation from ``new`` can keep.

    ``cached_ends`` are the ends of the passes that filled the cache (the last is ``len(cached)``), ``new_starts``
    the points ``new`` is cut at. The answer is the furthest point that both share, with the same points before
    it, within the common prefix and leaving at least one token to prefill (the one whose logits give the first
    new token): up to there the cache holds what a fresh prefill of ``new`` would compute, pass for pass.
    """
    limit = min(common_prefix_length(cached, new), len(new) - 1)
    reused = 0
    for kept, wanted in zip(cached_ends, new_starts, strict=False):
        if kept != wanted or kept > limit:
            break
        reused = kept
    return reused


def prompt_starts(starts: Sequence[int], length: int) -> tuple[int, ...]:
    """``starts`` as cut points of a prompt of ``length`` tokens: increasing, each strictly inside it."""
    found: list[int] = []
    for start in starts:
        if 0 < start < length and (not found or start > found[-1]):
            found.append(start)
    return tuple(found)


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
    starts: tuple[int, ...] = ()
    """Where the prompt's earlier generations started: the points its prefill is cut at."""

    @property
    def passes(self) -> tuple[int, ...]:
        """The ends of the passes to run before ``generate``, which prefills the last one (up to the prompt's end)."""
        return tuple(start for start in self.starts if start > self.reused)

    def generate_kwargs(self) -> dict[str, Any]:
        """What to add to ``model.generate``'s arguments: the cache."""
        return {self.keyword: self.cache}


def prefill_earlier_turns(
    model: Any, input_ids: Any, lease: CacheLease, first_inputs: dict[str, Any] | None = None, pad_token_id: Any = None
) -> None:
    """Run ``lease``'s passes into its cache: each one ``generate`` for one token over the prompt up to the pass's
    end, the same call that prefilled those positions when they were the last pass of their turn, so a reused
    turn and a fresh prefill compute each pass alike (inputs, masks, positions). ``first_inputs`` (pixels) go
    with a pass from position 0. Call under ``torch.inference_mode()``, as ``generate`` is."""
    import torch

    start = lease.reused
    for end in lease.passes:
        head = input_ids[:, :end]
        model.generate(
            input_ids=head,
            attention_mask=torch.ones_like(head),
            max_new_tokens=1,
            min_new_tokens=0,
            do_sample=False,
            num_beams=1,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=pad_token_id,
            **((first_inputs or {}) if start == 0 else {}),
            **lease.generate_kwargs(),
        )
        start = end


class ConversationCache:
    """One conversation's KV cache and the token ids it holds, for one pipeline.

    A generation ``take``s the cache (so a generation that fails or is abandoned leaves none behind) and
    ``keep``s it when ``generate`` returned. ``reset`` may be called from any thread at any time: a
    generation running meanwhile finds its lease outdated and its cache is dropped.
    Memory stays bounded: at most one cache, whose buffers hold the longest context seen and room to grow
    (up to half as much again, ``kv_layer.py``).
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._cache: Any = None
        self._token_ids: list[int] = []
        self._pass_ends: tuple[int, ...] = ()
        self._model: weakref.ReferenceType[Any] | None = None
        self._epoch = 0
        self._support: dict[int, str | None] = {}  # id(model) -> cache keyword, None when it cannot reuse
        self.last_reused = 0
        """Prompt tokens the latest generation took from the cache (0: a full prefill)."""
        self.last_note: str | None = None
        """Why the latest generation prefilled from the start although a cache was kept (a new image), else ``None``."""

    @property
    def cached_tokens(self) -> int:
        """How many token positions the kept cache holds."""
        return len(self._token_ids)

    @property
    def pass_ends(self) -> tuple[int, ...]:
        """Where the passes that filled the kept cache ended (the last one: ``cached_tokens``)."""
        return self._pass_ends

    def take(
        self,
        model: Any,
        input_ids: list[int],
        starts: Sequence[int] = (),
        reuse: bool = True,
        layout: CacheLayout | None = None,
    ) -> CacheLease | None:
        """The cache to generate ``input_ids`` with, cut at ``starts`` (``turn_boundaries.py``): the kept one cropped
        to the furthest point it shares with that cut (``reusable_length``), or a new one (always, when not
        ``reuse``: the same passes, from scratch), laid out as ``layout`` says (default: in-place dynamic layers;
        ``fast_decode.StaticLayout`` for the compiled step). ``None`` when ``model`` cannot reuse a cache
        (``generate`` then builds its own and prefills in one pass)."""
        keyword = self._cache_keyword(model)
        if keyword is None:
            self.reset()
            self.last_reused, self.last_note = 0, None
            return None
        starts = prompt_starts(starts, len(input_ids))
        with self._guard:
            cache, cached_ids, ends = self._cache, self._token_ids, self._pass_ends
            same_model = self._model is not None and self._model() is model
            self._cache, self._token_ids, self._pass_ends, self._model = None, [], (), None
            epoch = self._epoch
        usable = cache is not None and same_model and reuse
        reused = reusable_length(cached_ids, ends, input_ids, starts) if usable else 0
        cache = (layout or IN_PLACE).adopt(model, cache if reused > 0 else None, reused)
        self.last_reused, self.last_note = reused, None
        return CacheLease(cache=cache, reused=reused, epoch=epoch, keyword=keyword, starts=starts)

    def restart(self, model: Any, lease: CacheLease, note: str) -> CacheLease:
        """``lease`` replaced by an empty cache (the prompt's images must be encoded again), ``note`` saying why.
        The passes are the same as a fresh prefill's."""
        self.last_reused, self.last_note = 0, note
        return CacheLease(new_cache(model), reused=0, epoch=lease.epoch, keyword=lease.keyword, starts=lease.starts)

    def keep(self, model: Any, lease: CacheLease, sequence: list[int], prompt_length: int) -> None:
        """Keep ``lease``'s cache after ``generate`` returned ``sequence`` (prompt + generated ids) for a prompt
        of ``prompt_length`` ids: the prompt's positions, the reply's (decoded a token at a time) cropped away."""
        length = lease.cache.get_seq_length()
        if length > len(sequence) or length < prompt_length:  # should not happen; a mismatched cache is worse than none
            return
        if length > prompt_length:
            import torch

            with torch.inference_mode():  # a static cache keeps its length in an inference tensor
                lease.cache.crop(prompt_length - length)
        with self._guard:
            if lease.epoch != self._epoch:  # reset while generating: the caller wants it gone
                return
            self._cache, self._model = lease.cache, weakref.ref(model)
            self._token_ids, self._pass_ends = list(sequence[:prompt_length]), (*lease.starts, prompt_length)

    def reset(self) -> None:
        """Drop the cache (new conversation, model unloaded or replaced); outstanding leases are not kept."""
        with self._guard:
            self._cache, self._token_ids, self._pass_ends, self._model = None, [], (), None
            self._epoch += 1

    def _cache_keyword(self, model: Any) -> str | None:
        key = id(model)
        if key not in self._support:  # one model per pipeline: forget any other
            self._support = {key: cache_keyword(model) if supports_reuse(model) else None}
        return self._support[key]
