"""The compiled decode step: after the prefill, ``generate`` runs each token through one ``torch.compile``d forward
pass (inductor's C++ code on the CPU, CUDA graphs on a GPU), reading and writing a static-shape KV cache.

Why: a decode step of a small model is mostly per-op overhead (Python, dispatch, ~200 small matrix-vector
products): compiled, the step is one generated program. transformers compiles it itself when ``generate`` gets
a static cache and a ``CompileConfig``; here we only build the cache and the config, compile once at load
(with a progress bar), and keep the compiled code on disk (``compile_cache.py``).

Shapes: the step is compiled with dynamic sizes (``CompileConfig(dynamic=True)``), so caches of any capacity share
one compiled program: compiling happens once per model, configuration and machine.

Exactness: a turn's cache is a static one (``kv_layer.StaticDecodeLayer``) whose capacity depends only on that
request (prompt length and token budget, rounded up to ``CAPACITY_STEP``). The prompt is prefilled eagerly in the
passes ``kv_cache.py`` cuts at turn boundaries (``turn_boundaries.py``), the same cut points in a fresh prefill and
in a reused turn, and during those passes the layer shows attention only the filled positions, so a prompt
position's keys never depend on a capacity. A reused turn gets the kept positions of the previous one in a cache
of exactly this request's capacity (moved over when it differs), the positions past them zeroed, as a new cache's
are. So a fresh prefill and a reused turn run every prefill pass and every decode step on the same shapes and the
same data: the same bits on any CPU or GPU, whatever its kernels round like (the argument of kv_cache.py).
"""

from __future__ import annotations

import threading
import time
import warnings
import weakref
from dataclasses import dataclass
from typing import Any

from .. import config
from ..progress import ProgressCallback, ProgressEvent
from . import compile_cache
from .kv_cache import cache_keyword, copy_prefix
from .transformers_compat import compile_on_every_device

CAPACITY_STEP = 256
"""Static caches hold a multiple of this many positions: a decode step reads the whole cache (masked past the
filled part), so a finer step wastes less bandwidth; a cache is moved to a new capacity at most every this
many positions of a growing conversation."""

_BAR = -2
"""The progress bar id of compiling (downloads' total is -1, tqdm's bars count up from 1)."""

_plans: weakref.WeakKeyDictionary[Any, FastDecode | None] = weakref.WeakKeyDictionary()
_plans_lock = threading.Lock()


@dataclass
class FastDecode:
    """How one model decodes through the compiled step."""

    compile_config: Any
    compiled: bool = False
    """Whether the step has been compiled in this process (at load, or by the first reply)."""

    def capacity(self, prompt_length: int, budget: int) -> int:
        """The static cache capacity for a prompt of ``prompt_length`` tokens and ``budget`` new ones."""
        return -(-(prompt_length + budget) // CAPACITY_STEP) * CAPACITY_STEP

    def layout(self, prompt_length: int, budget: int) -> StaticLayout:
        """The cache layout a request of this size generates with."""
        return StaticLayout(self.capacity(prompt_length, budget), prompt_length)

    def generate_kwargs(self) -> dict[str, Any]:
        """What ``generate`` needs besides the static cache to run the compiled step."""
        return {"compile_config": self.compile_config}


@dataclass(frozen=True)
class StaticLayout:
    """Static caches of one capacity, for a prompt of ``prompt_length`` tokens: what a request generates with,
    and how a kept cache becomes one."""

    capacity: int
    prompt_length: int

    def new(self, model: Any) -> Any:
        from transformers import Cache, DynamicCache

        from .kv_layer import StaticDecodeLayer

        # Laid out as the model's DynamicCache (supports_reuse: plain full-attention layers only).
        count = len(DynamicCache(config=model.config).layers)
        return self._for_prompt(Cache(layers=[StaticDecodeLayer(max_cache_len=self.capacity) for _ in range(count)]))

    def _for_prompt(self, cache: Any) -> Any:
        for layer in cache.layers:
            layer.prefill_end = self.prompt_length
        return cache

    def adopt(self, model: Any, kept: Any | None, reused: int) -> Any:
        """A cache of this capacity holding the first ``reused`` positions of ``kept`` and zeros after them, as a new
        cache prefilled that far holds: ``kept`` itself when it already has this capacity, else a new cache."""
        import torch

        if kept is None or reused == 0:
            return self.new(model)
        with torch.inference_mode():  # the cache's tensors were made in inference mode
            if _capacity_of(kept) != self.capacity:
                return copy_prefix(kept, self.new(model), reused)
            length = int(kept.get_seq_length())
            kept.crop(reused - length)  # a negative count: what every cache accepts
            for layer in kept.layers:  # stale positions read as a new cache's zeros
                layer.keys[:, :, reused:length].zero_()
                layer.values[:, :, reused:length].zero_()
            return self._for_prompt(kept)


def _capacity_of(cache: Any) -> int | None:
    """A static cache's capacity (``None`` for other caches, or one not allocated yet)."""
    from .kv_layer import StaticDecodeLayer

    layers = getattr(cache, "layers", None) or []
    if not layers or not all(isinstance(layer, StaticDecodeLayer) and layer.is_initialized for layer in layers):
        return None
    return int(layers[0].max_cache_len)


def fast_decode_for(model: Any, requested: bool | None = None) -> FastDecode | None:
    """The compiled decode path for ``model``, or ``None`` where it does not apply or is switched off.

    Args:
        model: a loaded model.
        requested: ``True``/``False`` to turn it on or off for this model; ``None`` follows ``HF_MAGIC_COMPILE``
            and, when that is unset, what this kind of machine gains (``compiles_by_default``).
    """
    if requested is None:
        switch = config.compile_decode()
        requested = switch == "on" or (switch == "auto" and compiles_by_default(model))
    if not requested or why_not_compiled(model) is not None:
        return None
    with _plans_lock:
        if model not in _plans:
            _plans[model] = FastDecode(compile_config=_compile_config(model))
        return _plans[model]


def compiles_by_default(model: Any) -> bool:
    """Whether the step is compiled unless asked otherwise, from what each kind of machine gained (README "Speed"):

    - a CUDA GPU: yes (CUDA graphs);
    - a CPU, unquantized weights: yes. On an AVX2 EPYC (float32), 1.3-2x eager per token; on an AMX CPU (bf16,
      ENVIRONMENT.md) 27.1 vs 24.6 tok/s;
    - a CPU, torchao-quantized weights: only where the CPU computes bf16 natively. On AMX, int8 decoded 40.3 tok/s
      compiled vs 11.0 eager; on the AVX2 EPYC the compiled int8 step ran at 0.55x eager (inductor's generated
      matrix-vector code is slower there than torch's kernels).
    """
    from .loading import cpu_computes_bf16

    device = getattr(getattr(model, "device", None), "type", "cpu")
    if device == "cuda":
        return True
    if device != "cpu":
        return False
    return getattr(model, "hf_quantizer", None) is None or cpu_computes_bf16()


def why_not_compiled(model: Any) -> str | None:
    """Why ``model`` cannot decode through the compiled step (``None``: it can)."""
    from .kv_cache import supports_reuse

    if getattr(model.config, "vision_config", None) is not None:
        return "vision-language models decode without the compiled step"
    if getattr(model, "hf_device_map", None) and len(set(model.hf_device_map.values())) > 1:
        return "a model split across devices decodes without the compiled step"
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and not quantizer.is_compileable:
        return f"{type(quantizer).__name__.removesuffix('HfQuantizer')} weights cannot be compiled"
    if getattr(getattr(model, "device", None), "type", "cpu") not in ("cpu", "cuda"):
        return "the compiled step runs on the CPU and CUDA GPUs"
    if not supports_reuse(model):  # caches of its own or sliding windows: no static cache of ours fits
        return "this model's cache layout has no static form here"
    return None


def _compile_config(model: Any) -> Any:
    from transformers import CompileConfig

    on_gpu = getattr(model.device, "type", "cpu") == "cuda"
    # CUDA graphs replay the whole step on a GPU; on the CPU, inductor's generated C++ is the win.
    return compile_on_every_device(
        CompileConfig(fullgraph=False, dynamic=True, mode="reduce-overhead" if on_gpu else "default")
    )


def prepare_fast_decode(model: Any, requested: bool | None = None, progress: ProgressCallback | None = None) -> None:
    """Compile the decode step of a model just loaded, when it decodes through one; when it was asked for and
    cannot (``requested``, or ``HF_MAGIC_COMPILE=1``), say why in one progress note."""
    plan = fast_decode_for(model, requested)
    if plan is not None:
        warm_up(model, plan, progress)
        return
    reason = why_not_compiled(model)
    asked = requested is True or (requested is None and config.compile_decode() == "on")
    if asked and reason is not None and progress is not None:
        progress(ProgressEvent(stage="compile", label=f"Not compiled: {reason}", current=1, total=1, done=True,
                               bar_id=_BAR))  # fmt: skip


def warm_up(model: Any, plan: FastDecode, progress: ProgressCallback | None = None) -> None:
    """Compile ``plan``'s step now, with progress, reading and writing the on-disk cache; later replies then
    start at full speed. A failure to compile turns the path off for this model (replies decode eagerly)."""
    import torch

    notify = progress or (lambda _: None)
    options = plan.compile_config.to_dict()
    path = compile_cache.cache_file(model, options)
    hit = compile_cache.load(path)
    where = "this GPU" if model.device.type == "cuda" else "this CPU"
    label = "Compiled step from cache" if hit else f"Compiling for {where}"  # widget bars show 28 characters

    def report(text: str, done: bool = False) -> None:
        notify(ProgressEvent(stage="compile", label=text, current=int(done), total=1, done=done, bar_id=_BAR))

    report(label)
    started = time.perf_counter()
    ids = torch.tensor([[1, 2, 3]], device=model.device)
    layout = plan.layout(ids.shape[1], 2)
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            # torchao's tensors lack a hash for AOTAutograd's cache; inductor's cache still keeps their code
            warnings.filterwarnings("ignore", message=".*_stable_hash_for_caching")
            model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=2,
                min_new_tokens=2,
                do_sample=False,
                pad_token_id=0,
                **{cache_keyword(model): layout.new(model)},
                **plan.generate_kwargs(),
            )
    except Exception:  # a model inductor cannot compile: decode eagerly, as before
        with _plans_lock:
            _plans[model] = None
        report("Not compiled (inductor failed): decoding eagerly", done=True)
        return
    plan.compiled = True
    if not hit:
        compile_cache.save(path)
    seconds = time.perf_counter() - started
    report(f"{'Compiled step from cache' if hit else f'Compiled for {where}'} in {seconds:.0f} s", done=True)
