"""GGUF files on llama.cpp: the engine hf_magic starts (llama-cpp-python's server, built by
scripts/install_llama_cpp.sh), on the embedded model's own GGUF, a local .gguf path, and a GGUF repo downloaded from
a real hub mirror (olah) with byte progress."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from hf_magic import ChatHuggingFace, ModelNotFoundError
from hf_magic.local.loading import default_gguf_path
from hf_magic.remote.engine_endpoint import EngineEndpoint
from hf_magic.remote.engine_launch import gguf_path
from hf_magic.remote.engines import running_engines
from tests.support.olah import OlahMirror, olah_mirror, point_hub_at
from tests.support.processes import descendants

pytestmark = pytest.mark.integration
GGUF_REPO = "hf-magic/SmolLM2-135M-Instruct-GGUF"


@pytest.fixture(scope="module")
def default_on_llama_cpp() -> Iterator[EngineEndpoint]:
    with EngineEndpoint.start("llama.cpp", "default", max_new_tokens=16, temperature=0) as llm:
        yield llm


def test_the_default_model_runs_on_its_own_gguf(default_on_llama_cpp: EngineEndpoint) -> None:
    chat = ChatHuggingFace(llm=default_on_llama_cpp)
    reply = chat.invoke("What is the capital of France?")
    streamed = "".join(str(chunk.content) for chunk in chat.stream("What is the capital of France?"))
    assert reply.content and reply.content == streamed
    assert reply.response_metadata["model_name"] == "SmolLM2-135M-Instruct"
    assert reply.usage_metadata is not None and 0 < reply.usage_metadata["output_tokens"] <= 16
    engine = default_on_llama_cpp.engine
    assert engine is not None and engine.launch.args[1] == str(default_gguf_path())


def test_a_local_gguf_path_runs_on_llama_cpp(tmp_path: Path) -> None:
    local = tmp_path / "model.gguf"
    local.symlink_to(default_gguf_path())
    events = []
    with EngineEndpoint.start("llama.cpp", str(local), max_new_tokens=4, progress=events.append) as llm:
        assert ChatHuggingFace(llm=llm).invoke("Hi").content
        engine = llm.engine
    assert engine is not None and not engine.running and engine not in running_engines()
    assert events[-1].stage == "load" and events[-1].done


@pytest.fixture(scope="module")
def gguf_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OlahMirror]:
    """olah serving a GGUF repo: the embedded model's GGUF and a README."""
    folder = tmp_path_factory.mktemp("gguf-repo")
    shutil.copyfile(default_gguf_path(), folder / default_gguf_path().name)
    (folder / "README.md").write_text("The embedded default model's GGUF, for hf_magic's tests.\n")
    with olah_mirror(folder, GGUF_REPO, workdir=tmp_path_factory.mktemp("olah-gguf")) as mirror:
        yield mirror


def test_a_gguf_repo_file_downloads_with_byte_progress_then_runs(
    gguf_hub: OlahMirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    point_hub_at(gguf_hub, tmp_path, monkeypatch)
    events = []
    name = default_gguf_path().name
    with EngineEndpoint.start("llama.cpp", GGUF_REPO, gguf_file=name, progress=events.append, max_new_tokens=4) as llm:
        assert ChatHuggingFace(llm=llm).invoke("Hi").content
        assert llm.model_name == f"{GGUF_REPO}/{name}"
        served = Path(llm.engine.launch.args[1]) if llm.engine else None
    size = default_gguf_path().stat().st_size
    downloads = [e for e in events if e.stage == "download"]
    assert downloads and downloads[0].label == name and downloads[-1].done
    assert downloads[-1].unit == "B" and downloads[-1].current == downloads[-1].total == size
    assert [e.stage for e in events].index("load") > [e.stage for e in events].index("download")
    assert served is not None and _sha256(served) == _sha256(default_gguf_path())


def test_a_file_the_gguf_repo_lacks_is_one_line(
    gguf_hub: OlahMirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    point_hub_at(gguf_hub, tmp_path, monkeypatch)
    with pytest.raises(ModelNotFoundError) as caught:
        gguf_path(GGUF_REPO, "model.Q8_0.gguf")
    assert str(caught.value) == (
        f"'{GGUF_REPO}' has no file model.Q8_0.gguf: use --gguf-file with one of {default_gguf_path().name}."
    )


def test_a_repo_without_gguf_files_is_one_line(olah_env: OlahMirror) -> None:
    with pytest.raises(ModelNotFoundError, match=r"holds no \.gguf file, so llama\.cpp cannot run it"):
        gguf_path(olah_env.repo_id, "model.gguf")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_session_stops_the_engines_it_lets_go(tmp_path: Path) -> None:
    from hf_magic.errors import HfMagicError
    from hf_magic.notebook.model_spec import ModelSpec
    from hf_magic.notebook.session import ChatSession

    local = tmp_path / "copy.gguf"
    local.symlink_to(default_gguf_path())
    others = running_engines()  # this module's shared engine runs throughout
    session = ChatSession("engines")
    session.settings.max_new_tokens = 4
    first = session.load(ModelSpec(model="default", engine="llama.cpp")).llm.engine
    session.send("Hi")
    assert first is not None and first.running
    # A switch keeps the old engine until the new one answers (as for any endpoint), then stops it.
    second = session.load(ModelSpec(model=str(local), engine="llama.cpp")).llm.engine
    assert first.running and second.running
    session.send("Hi")
    assert not first.running and second.running
    # A new engine whose first reply fails: the session goes back to the one it had, and stops the failed one.
    third = session.load(ModelSpec(model="default", engine="llama.cpp")).llm.engine
    for pid in descendants(third.process.pid):  # the server dies before it answers
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(HfMagicError, match="still on"):
        session.send("Hi")
    assert session.chat_model is not None and session.chat_model.llm.engine is second
    assert third not in running_engines()
    session.unload()
    assert not second.running and running_engines() == others
