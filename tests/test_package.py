"""The package itself: a light import, and every public name resolving."""

from __future__ import annotations

import subprocess
import sys

import hf_magic


def test_import_loads_neither_widgets_nor_torch_nor_transformers() -> None:
    # A fresh interpreter: this test process has loaded all of them already.
    code = "import sys, hf_magic; print(sorted(m for m in ('ipywidgets', 'torch', 'transformers') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_every_public_name_resolves() -> None:
    for name in hf_magic.__all__:
        assert getattr(hf_magic, name) is not None, name
    assert set(hf_magic.__all__) <= set(dir(hf_magic))
