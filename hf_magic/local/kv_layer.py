"""Cache layers of our own: ``InPlaceLayer`` appends a step's keys and values into spare room instead of
concatenating; ``StaticDecodeLayer`` is the static layer of the compiled decode step (``fast_decode.py``).

transformers' ``DynamicLayer`` concatenates on every forward pass: each decoded token allocates the whole
context's keys and values of every layer anew. In a growing conversation each allocation is larger than any
freed before, so glibc maps fresh zeroed pages for it: 8405 minor page faults in turn 20 of the scripted chat
of ``benchmarks/run.py --only turns`` (about 1.4k tokens), against a few hundred with this layer; on a 2-core
machine, 64 vs 57 ms per decoded token at turn 20, and turns 15-20 took 1855 vs 1723 ms. Here the states
live in buffers with room to grow; ``keys``/``values`` are views of their filled prefix, so every reader of
``DynamicLayer`` (crop, sequence length, masks) works unchanged and a crop only shortens the views."""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicLayer, StaticLayer

GROWTH_STEP = 256
"""Buffers hold a multiple of this many positions, and grow by half their size at least when full."""


class InPlaceLayer(DynamicLayer):
    """A ``DynamicLayer`` whose ``update`` writes into preallocated buffers, growing them geometrically."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length = self.get_seq_length()
        end = length + key_states.shape[-2]
        if not self._views_fit(key_states, value_states, end):
            self._regrow(key_states, value_states, length, end)
        assert self._key_buffer is not None and self._value_buffer is not None
        self._key_buffer[:, :, length:end].copy_(key_states)
        self._value_buffer[:, :, length:end].copy_(value_states)
        self.keys = self._key_buffer[:, :, :end]
        self.values = self._value_buffer[:, :, :end]
        return self.keys, self.values

    def _views_fit(self, key_states: torch.Tensor, value_states: torch.Tensor, end: int) -> bool:
        """Whether ``keys``/``values`` are still prefixes of the buffers (batch edits such as beam search
        replace them with new tensors) and the buffers have room up to ``end``."""
        keys, values = self._key_buffer, self._value_buffer
        if keys is None or values is None or end > keys.shape[2]:
            return False
        if keys.is_inference() and not torch.is_inference_mode_enabled():  # read-only outside inference_mode
            return False
        if self.get_seq_length() == 0:  # nothing to keep: only the shapes must match
            return keys.shape[:2] == key_states.shape[:2] and keys.shape[3] == key_states.shape[3]
        return (
            _is_prefix(self.keys, keys)
            and _is_prefix(self.values, values)
            and keys.shape[:2] == key_states.shape[:2]
            and values.shape[3] == value_states.shape[3]
        )

    def _regrow(self, key_states: torch.Tensor, value_states: torch.Tensor, length: int, end: int) -> None:
        """New buffers with room for ``end`` positions and more, holding the first ``length`` cached ones."""
        current = 0 if self._key_buffer is None else self._key_buffer.shape[2]
        capacity = -(-max(end, current + current // 2) // GROWTH_STEP) * GROWTH_STEP
        batch, heads = key_states.shape[:2]
        keys = key_states.new_empty(batch, heads, capacity, key_states.shape[3])
        values = value_states.new_empty(batch, heads, capacity, value_states.shape[3])
        if length and self.keys is not None and self.values is not None:
            keys[:, :, :length].copy_(self.keys)
            values[:, :, :length].copy_(self.values)
        self._key_buffer, self._value_buffer = keys, values


class StaticDecodeLayer(StaticLayer):
    """A ``StaticLayer`` that shows the prefill of positions below ``prefill_end`` only the filled positions, as
    ``DynamicLayer`` does, and the decode steps after it its whole buffer, masked past the filled part.

    So every prefilled position is computed on the shapes an in-place dynamic cache gives it, whatever the
    capacity: positions kept for the next turn never depend on the capacity this turn had. Only decoded
    positions, which are never kept (``kv_cache.py``), see the capacity, and the compiled decode step sees one
    static-shape cache."""

    prefill_end = 0
    """Positions below this are the prompt's; set for each generation (``fast_decode.StaticLayout``)."""

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = super().update(key_states, value_states, *args, **kwargs)
        if torch.compiler.is_compiling():  # only decode steps are compiled
            return keys, values
        end = int(self.cumulative_length)
        return (keys[:, :, :end], values[:, :, :end]) if end <= self.prefill_end else (keys, values)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        if torch.compiler.is_compiling():
            return self.max_cache_len, 0
        end = int(self.get_seq_length()) + query_length
        return (end, 0) if end <= self.prefill_end else (self.max_cache_len, 0)


def _is_prefix(view: torch.Tensor | None, buffer: torch.Tensor) -> bool:
    """Whether ``view`` is ``buffer[:, :, :n]`` for some n."""
    return (
        view is not None
        and view.dim() == 4
        and view.data_ptr() == buffer.data_ptr()
        and view.stride() == buffer.stride()
        and view.shape[:2] == buffer.shape[:2]
    )
