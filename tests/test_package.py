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


def test_the_readme_layout_table_lists_every_module_and_only_modules_that_exist() -> None:
    import re
    from pathlib import Path

    root = Path(hf_magic.__file__).parent.parent
    readme = (root / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(hf_magic/[\w/]*(?:\.py)?)` \|", layout, flags=re.MULTILINE))
    modules = {path.relative_to(root).as_posix() for path in (root / "hf_magic").rglob("*.py")}
    # a subpackage is listed by its folder ("hf_magic/local/"), which stands for its __init__.py
    tree = {name.removesuffix("__init__.py") if name.count("/") > 1 else name for name in modules}
    assert sorted(tree - listed) == [], "modules missing from README.md's layout table"
    assert sorted(listed - tree) == [], "README.md's layout table names modules that do not exist"


def test_the_views_never_import_the_backends() -> None:
    # In notebook/, only model_spec (the one factory), model_catalog (what views may know of models) and
    # engine_commands (the engines hf_magic started: their state and log) reach local/ or remote/: the magics, the
    # panel, rendering and the rest go through ChatSession or those.
    import ast
    from pathlib import Path

    notebook = Path(hf_magic.__file__).parent / "notebook"
    gateways = {"model_spec.py", "model_catalog.py", "engine_commands.py"}
    for path in sorted(notebook.glob("*.py")):
        if path.name in gateways:
            continue
        view = path.stem
        tree = ast.parse(path.read_text())
        parents = {1: "hf_magic.notebook.", 2: "hf_magic."}  # what "from ." and "from .." stand for here
        imported = [
            parents.get(node.level, "") + (node.module or "")
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
        ]
        imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        reaching = [name for name in imported if name.startswith(("hf_magic.local", "hf_magic.remote"))]
        assert reaching == [], f"notebook/{view}.py imports {reaching}: ask the session or model_catalog instead"


def test_architecture_md_draws_every_module_in_its_tree() -> None:
    from pathlib import Path

    root = Path(hf_magic.__file__).parent.parent
    tree = (root / "ARCHITECTURE.md").read_text().split("## The tree, by stack", 1)[1].split("\n## ", 1)[0]
    drawn = {line.split()[0] for line in tree.splitlines() if line.strip().endswith(".py") or ".py " in line}
    missing = [
        path.relative_to(root).as_posix()
        for path in (root / "hf_magic").rglob("*.py")
        if path.name != "__init__.py" and path.name not in drawn
    ]
    assert missing == [], "ARCHITECTURE.md's tree lacks these modules"
