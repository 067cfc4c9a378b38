"""A real hub on 127.0.0.1: olah serving the converted default model as a git repo with git-lfs pointers.

``olah_mirror(model_dir)`` is a context manager (usable from a notebook); ``olah_hub`` is the pytest
fixture, and ``olah_env`` points huggingface_hub at it with an empty temporary cache.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import stop_process, wait_until_answers

DEFAULT_REPO_ID = "hf-magic/SmolLM2-135M-Instruct"
_LFS_SUFFIXES = (".safetensors", ".bin", ".gguf")


@dataclass(frozen=True)
class OlahMirror:
    url: str
    repo_id: str
    root: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=hf_magic", "-c", "user.email=hf_magic@localhost", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def build_repo(model_dir: Path, repo: Path) -> None:
    """A non-bare git repo of ``model_dir``: weights as git-lfs pointers, blobs under .git/lfs/objects."""
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    for source in sorted(p for p in model_dir.iterdir() if p.is_file()):
        target = repo / source.name
        if source.suffix in _LFS_SUFFIXES:
            digest = hashlib.sha256(source.read_bytes()).hexdigest()
            blob = repo / ".git" / "lfs" / "objects" / digest[:2] / digest[2:4] / digest
            blob.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, blob)
            size = source.stat().st_size
            target.write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{digest}\nsize {size}\n")
        else:
            shutil.copyfile(source, target)
    (repo / ".gitattributes").write_text("".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in _LFS_SUFFIXES))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "model")


@contextmanager
def olah_mirror(
    model_dir: str | Path, repo_id: str = DEFAULT_REPO_ID, workdir: str | Path | None = None, port: int | None = None
) -> Iterator[OlahMirror]:
    """Serve ``model_dir`` as hub repo ``repo_id`` from a local olah on 127.0.0.1; stop it on exit.

    ``port`` lets a caller set ``HF_ENDPOINT`` before huggingface_hub is imported (it reads it once).
    """
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="olah-"))
    mirrors = root / "mirrors"
    build_repo(Path(model_dir), mirrors / "models" / repo_id)
    port = port or free_port()
    config = root / "olah.toml"
    config.write_text(
        "[basic]\n"
        'host = "127.0.0.1"\n'
        f"port = {port}\n"
        f'repos-path = "{root / "repos"}"\n'
        f'mirrors-path = ["{mirrors}"]\n'
        "[accessibility]\n"
        "offline = true\n"
    )
    olah_cli = Path(sys.executable).parent / "olah-cli"
    log = (root / "olah.log").open("wb")
    process = subprocess.Popen([str(olah_cli), "-c", str(config)], cwd=root, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(f"{url}/api/models/{repo_id}/revision/main", process, "olah", 60)
        yield OlahMirror(url, repo_id, root)
    finally:
        stop_process(process, timeout=10)
        log.close()
        if workdir is None:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def olah_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OlahMirror]:
    """olah serving the converted default model as ``hf-magic/SmolLM2-135M-Instruct``."""
    from hf_magic.local.loading import ensure_default_model

    with olah_mirror(ensure_default_model(), workdir=tmp_path_factory.mktemp("olah")) as mirror:
        yield mirror


@pytest.fixture
def olah_env(olah_hub: OlahMirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> OlahMirror:
    """huggingface_hub pointed at ``olah_hub``, online, with an empty cache (this test only)."""
    point_hub_at(olah_hub, tmp_path, monkeypatch)
    return olah_hub


def point_hub_at(mirror: OlahMirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point huggingface_hub at ``mirror``, online, with an empty cache under ``tmp_path`` (undone by monkeypatch)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf_home" / "hub"
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", mirror.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    # huggingface_hub reads these once at import; the test process imported it long ago.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", mirror.url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", mirror.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
