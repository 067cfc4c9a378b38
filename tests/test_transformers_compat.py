"""The transformers internals hf_magic reads (local/transformers_compat.py): these fail on the release that
changes them, instead of the KV-cache reuse silently changing behaviour."""

from __future__ import annotations

from hf_magic.local.transformers_compat import supports_default_dynamic_cache
from tests.support.tiny_models import tiny_causal_lm


def test_generate_still_asks_models_whether_they_take_a_default_dynamic_cache():
    from transformers import GenerationMixin

    assert callable(getattr(GenerationMixin, "_supports_default_dynamic_cache", None))
    assert supports_default_dynamic_cache(tiny_causal_lm("Llama")) is True


def test_a_model_with_a_cache_of_its_own_still_says_so():
    import transformers

    # The hook is a class method: asked of the class, no instance (nor weights) needed.
    assert supports_default_dynamic_cache(transformers.RwkvForCausalLM) is False
    assert supports_default_dynamic_cache(transformers.LlamaForCausalLM) is True


def test_generate_still_compiles_on_the_cpu_when_the_compile_config_says_so():
    """fast_decode.py's compiled step on a CPU rests on this flag of CompileConfig."""
    from transformers import CompileConfig
    from transformers.cache_utils import StaticCache

    from hf_magic.local.transformers_compat import compile_on_every_device

    model = tiny_causal_lm("Llama")
    cache = StaticCache(config=model.config, max_cache_len=16)
    generation_config = model.generation_config
    generation_config.compile_config = compile_on_every_device(CompileConfig())
    assert model._valid_auto_compile_criteria({"cache": cache}, generation_config)
    generation_config.compile_config = CompileConfig()
    assert not model._valid_auto_compile_criteria({"cache": cache}, generation_config)
