"""The model picker's data: local models with sizes and parameter counts, cache state, memory estimates and fit."""

from __future__ import annotations

import huggingface_hub.constants
import pytest

from hf_magic.errors import EndpointError
from hf_magic.local.loading import default_model_dir, ensure_default_model
from hf_magic.notebook.model_catalog import (
    ModelChoice,
    available_memory,
    describe_choice,
    fit_summary,
    hub_search,
    is_cached,
    local_choices,
)


@pytest.fixture(scope="module")
def default_choice() -> ModelChoice:
    ensure_default_model()
    return next(choice for choice in local_choices() if choice.model_id == "default")


def test_the_embedded_model_is_listed_with_its_safetensors_parameter_count(default_choice: ModelChoice) -> None:
    # SmolLM2-135M-Instruct, converted to bf16 safetensors: the count comes from the real file headers
    assert default_choice.parameters == {"BF16": 134_515_008}
    assert default_choice.source == "embedded" and default_choice.cached
    assert default_choice.size_on_disk and default_choice.size_on_disk > 2 * 134_515_008
    assert "134.5M params" in default_choice.label() and "272.6 MB" in default_choice.label()


def test_memory_estimate_follows_dtype_and_quantization(default_choice: ModelChoice) -> None:
    bf16 = default_choice.estimated_memory()
    assert default_choice.estimated_memory("float32") == 2 * default_choice.estimated_memory("bfloat16")
    assert default_choice.estimated_memory(quantize="4bit") < default_choice.estimated_memory(quantize="8bit") < bf16


def test_a_local_folder_is_described_from_its_files() -> None:
    choice = describe_choice(str(default_model_dir()))
    assert choice.source == "folder" and choice.cached and choice.parameter_count == 134_515_008


def test_cache_state() -> None:
    assert is_cached("default") and is_cached(str(default_model_dir()))
    assert not is_cached("nobody-here/no-such-model")
    assert not is_cached("not a valid id!!")
    assert describe_choice("nobody-here/no-such-model") == ModelChoice("nobody-here/no-such-model", "hub")


def test_fit_summary_compares_the_estimate_with_free_memory(default_choice: ModelChoice) -> None:
    free = available_memory()
    assert free and free > 0
    assert "fits" in fit_summary(default_choice, device=None, dtype=None, quantize=None)
    huge = ModelChoice("big/model", "hub", parameters={"BF16": free})  # 2 bytes per weight: twice what is free
    summary = fit_summary(huge, device=None, dtype=None, quantize=None)
    assert "not cached" in summary and "does NOT fit" in summary
    assert "size unknown" in fit_summary(ModelChoice("a/b", "hub"), device=None, dtype=None, quantize=None)


def test_hub_search_refuses_when_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    with pytest.raises(EndpointError, match="HF_HUB_OFFLINE is set"):
        hub_search("smol")
