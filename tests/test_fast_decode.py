"""The compiled decode step (local/fast_decode.py): static caches whose reuse computes the bits of a fresh prefill,
the switch, what is not compiled and why, and the compiled code kept on disk."""

from __future__ import annotations

import pytest

from hf_magic.local import compile_cache
from hf_magic.local.fast_decode import (
    CAPACITY_STEP,
    FastDecode,
    StaticLayout,
    fast_decode_for,
    prepare_fast_decode,
    why_not_compiled,
)
from hf_magic.local.kv_cache import ConversationCache
from tests.support.cache_turns import generate_turn
from tests.support.tiny_models import tiny_causal_lm


def _generate(
    model, store: ConversationCache, plan: FastDecode | None, ids: list[int], starts, new_tokens: int, reuse=True
):
    """One turn as LocalGenerator runs it (tests/support/cache_turns.py); returns the ids and logits."""
    return generate_turn(model, store, ids, starts, new_tokens, reuse, plan)


# ------------------------------------------------------------------------------------ layouts (no compile)
def test_capacity_depends_only_on_the_request() -> None:
    plan = FastDecode(compile_config=None)
    assert plan.capacity(10, 20) == CAPACITY_STEP
    assert plan.capacity(CAPACITY_STEP, 1) == 2 * CAPACITY_STEP
    assert plan.capacity(100, CAPACITY_STEP - 100) == CAPACITY_STEP


def test_a_kept_static_cache_reads_as_a_new_one_past_the_reused_positions() -> None:
    import torch

    model = tiny_causal_lm("Llama")
    layout = StaticLayout(16, 9)
    cache = layout.new(model)
    with torch.inference_mode():
        model(torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 9]]), cache=cache)
    kept = [layer.keys[:, :, :4].clone() for layer in cache.layers]
    adopted = layout.adopt(model, cache, 4)
    assert adopted is cache and int(adopted.get_seq_length()) == 4
    for layer, before in zip(adopted.layers, kept, strict=True):
        assert torch.equal(layer.keys[:, :, :4], before)
        assert not layer.keys[:, :, 4:].any() and not layer.values[:, :, 4:].any()
    moved = StaticLayout(32, 9).adopt(model, adopted, 4)  # another capacity: the positions move to a new cache
    assert moved is not adopted and moved.layers[0].keys.shape[2] == 32 and int(moved.get_seq_length()) == 4
    assert torch.equal(moved.layers[0].keys[:, :, :4], kept[0]) and not moved.layers[0].keys[:, :, 4:].any()


def test_the_switch_and_what_is_never_compiled(monkeypatch) -> None:
    model = tiny_causal_lm("Llama")
    monkeypatch.setenv("HF_MAGIC_COMPILE", "0")
    assert fast_decode_for(model) is None
    assert fast_decode_for(model, requested=True) is not None  # an explicit request outranks the environment
    monkeypatch.setenv("HF_MAGIC_COMPILE", "1")
    assert fast_decode_for(model, requested=False) is None
    assert why_not_compiled(tiny_causal_lm("Mistral", sliding_window=4)) is not None
    events = []
    prepare_fast_decode(tiny_causal_lm("Mistral", sliding_window=4), True, events.append)
    assert [event.label for event in events] == ["Not compiled: this model's cache layout has no static form here"]


def test_the_compile_cache_file_depends_on_dtype_and_machine(monkeypatch, tmp_path) -> None:
    import torch

    from hf_magic.local import loading

    monkeypatch.setenv("HF_MAGIC_CACHE", str(tmp_path))
    model = tiny_causal_lm("Llama")
    first = compile_cache.cache_file(model, {"dynamic": True})
    assert first.parent == tmp_path / "compiled"
    assert compile_cache.cache_file(model, {"dynamic": True}) == first
    assert compile_cache.cache_file(model.to(torch.bfloat16), {"dynamic": True}) != first
    monkeypatch.setattr(loading, "cpu_flags", lambda: {"avx2", "amx_bf16"})
    assert compile_cache.cache_file(model.to(torch.float32), {"dynamic": True}) != first
    assert compile_cache.load(tmp_path / "missing.torchcompile") is False


# ------------------------------------------------------------------------------- compiled, tiny models
@pytest.fixture(scope="module")
def compiled_tiny(tmp_path_factory):
    """A tiny Llama with its decode step compiled once for the module (progress events recorded)."""
    import os

    model = tiny_causal_lm("Llama")
    plan = fast_decode_for(model, requested=True)
    assert plan is not None
    events = []
    previous = os.environ.get("HF_MAGIC_CACHE")
    os.environ["HF_MAGIC_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        prepare_fast_decode(model, True, events.append)
        files = list(compile_cache.cache_file(model, plan.compile_config.to_dict()).parent.glob("*.torchcompile"))
    finally:
        os.environ.pop("HF_MAGIC_CACHE") if previous is None else os.environ.__setitem__("HF_MAGIC_CACHE", previous)
    return model, plan, events, files


@pytest.mark.exactness
def test_compiled_turns_reusing_the_cache_compute_the_bits_of_a_fresh_prefill(compiled_tiny) -> None:
    """Every turn's logits equal a fresh prefill's cut at the same turn boundaries in the same configuration, also
    when a turn's cache capacity changes (a larger token budget moves the kept positions to a larger static cache)."""
    import torch

    model, plan, _, _ = compiled_tiny
    store, fresh = ConversationCache(), ConversationCache()
    ids, starts = [1, 5, 7, 9, 3], []
    for turn, budget in enumerate([6, 5, CAPACITY_STEP, 7, 6]):
        cached, cached_logits = _generate(model, store, plan, ids, starts, budget)
        again, fresh_logits = _generate(model, fresh, plan, ids, starts, budget, reuse=False)
        assert cached == again
        assert torch.equal(cached_logits, fresh_logits)
        if turn:
            assert store.last_reused == starts[-1]  # every earlier turn's prompt came from the cache
        starts.append(len(ids))
        ids = [*cached[: len(ids) + 3], 20 + turn, 30 + turn]


def test_compiling_reports_progress_and_keeps_the_code_on_disk(compiled_tiny) -> None:
    _, plan, events, files = compiled_tiny
    assert plan.compiled
    assert events[0].stage == "compile" and events[0].label == "Compiling for this CPU"
    assert events[-1].done and events[-1].label.startswith("Compiled for this CPU in ")
    assert len(files) == 1 and files[0].stat().st_size > 0


@pytest.mark.exactness
def test_a_compiled_turn_after_an_eager_one_continues_from_its_cache(compiled_tiny) -> None:
    """Switching the path mid-conversation (compile turned off, then on) moves the kept positions over."""
    import torch

    model, plan, _, _ = compiled_tiny
    store, fresh = ConversationCache(), ConversationCache()
    first, _ = _generate(model, store, None, [1, 5, 7, 9, 3, 4, 8, 2, 6], (), 4)
    ids = [*first, 11, 12]
    cached, cached_logits = _generate(model, store, plan, ids, (9,), 4)
    assert store.last_reused == 9
    again, fresh_logits = _generate(model, fresh, plan, ids, (9,), 4, reuse=False)
    assert cached == again and torch.equal(cached_logits, fresh_logits)
