"""ChatSession: spec checks, export, a failed switch that changes nothing, and two threads on one session."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hf_magic.errors import InvalidInputError
from hf_magic.notebook.model_spec import DTYPES, ModelSpec
from hf_magic.notebook.session import ChatSession
from hf_magic.notebook.turns import SessionEvent, Settings, Turn
from tests.support.held_reply import HeldReply


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A local port that is bound but never listens: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _session_with_turns(name: str = "unit") -> ChatSession:
    session = ChatSession(name, settings=Settings(system_prompt="Be brief."))
    session.turns += [Turn(user="Hi", reply="Hello!"), Turn(user="And you?", reply="Fine.")]
    return session


# ---------------------------------------------------------------------------------- no model needed
@pytest.mark.parametrize("dtype", ["float99", "torch.bfloat16", "bf16"])
def test_an_unknown_dtype_is_one_line_that_lists_the_valid_ones(dtype: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        ModelSpec(dtype=dtype)
    message = str(caught.value)
    assert repr(dtype) in message and all(name in message for name in DTYPES) and "\n" not in message


def test_every_listed_dtype_is_accepted() -> None:
    assert [ModelSpec(dtype=dtype).dtype for dtype in DTYPES] == list(DTYPES)


def test_json_export_holds_chat_messages_and_loads_back(tmp_path: Path) -> None:
    session = _session_with_turns()
    session.export(tmp_path / "chat.json")
    data = json.loads((tmp_path / "chat.json").read_text())
    assert data["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "And you?"},
        {"role": "assistant", "content": "Fine."},
    ]
    other = ChatSession("other")
    other.load_transcript(tmp_path / "chat.json")
    assert [(t.user, t.reply) for t in other.turns] == [(t.user, t.reply) for t in session.turns]
    assert other.settings.system_prompt == "Be brief."


def test_chat_messages_without_a_system_prompt_start_with_the_user() -> None:
    session = _session_with_turns()
    session.settings.system_prompt = None
    assert [m["role"] for m in session.chat_messages()] == ["user", "assistant", "user", "assistant"]


@pytest.mark.parametrize("name", ["x.json", "x.md"])
def test_export_into_a_missing_folder_is_one_line(tmp_path: Path, name: str) -> None:
    session = _session_with_turns()
    target = tmp_path / "no_such_dir" / name
    with pytest.raises(InvalidInputError) as caught:
        session.export(target)
    message = str(caught.value)
    assert "does not exist" in message and str(target.parent) in message and "\n" not in message
    assert not target.parent.exists() and len(session.turns) == 2


def test_export_onto_a_folder_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "taken.json").mkdir()
    with pytest.raises(InvalidInputError, match=r"Cannot write .*pick a file"):
        _session_with_turns().export(tmp_path / "taken.json")


def test_a_reset_waits_for_a_load_in_progress() -> None:
    session = _session_with_turns()
    order: list[str] = []
    holding, release = threading.Event(), threading.Event()

    def long_load() -> None:  # stands in for a panel loading a model
        with session.exclusive("load another model"):
            holding.set()
            release.wait(60)
            order.append("load done")

    loader = threading.Thread(target=long_load)
    loader.start()
    assert holding.wait(60)
    resetter = threading.Thread(target=lambda: (session.reset(), order.append("reset")))
    resetter.start()
    release.set()
    loader.join(60)
    resetter.join(60)
    assert order == ["load done", "reset"] and session.turns == []


def test_a_first_endpoint_that_cannot_be_reached_leaves_the_session_as_it_was(closed_port: int) -> None:
    session = _session_with_turns()
    turns = list(session.turns)
    url = f"http://127.0.0.1:{closed_port}"
    session.load(ModelSpec(backend="endpoint", endpoint_url=url))  # builds the client, contacts nothing
    assert session.spec.endpoint_url == url
    with pytest.raises(Exception) as caught:
        session.send("Hello?")
    message = str(caught.value)
    assert f"Cannot reach {url}" in message and "still on default (pipeline), not loaded yet" in message
    assert "\n" not in message
    assert session.spec == ModelSpec() and not session.loaded and session.turns == turns


# ------------------------------------------------------------------ on the real model
@pytest.fixture(scope="module")
def loaded() -> Iterator[ChatSession]:
    session = ChatSession("session-integration", settings=Settings(max_new_tokens=8, temperature=0))
    session.load()
    yield session
    session.unload()


@pytest.mark.integration
def test_reset_load_and_send_mid_reply_are_refused_and_the_reply_completes(loaded: ChatSession) -> None:
    loaded.send("Hi")
    model, before = loaded.chat_model, list(loaded.turns)
    held = HeldReply(loaded, "Count from 1 to 20.")
    try:
        assert loaded.busy
        refused = []
        for act in (
            loaded.reset,
            lambda: loaded.load(ModelSpec(dtype="float32")),
            lambda: loaded.send("Me too"),
            loaded.unload,
            lambda: loaded.exclusive("run this cell").__enter__(),
        ):
            with pytest.raises(InvalidInputError) as caught:
                act()
            refused.append(str(caught.value))
        assert all("A reply is being generated" in line and "\n" not in line for line in refused)
        assert loaded.chat_model is model and loaded.turns == before  # nothing moved under the reply
    finally:
        held.release()
    assert held.error is None
    assert held.models_seen == {id(model)} and loaded.chat_model is model
    assert [t.user for t in loaded.turns] == [t.user for t in before] + ["Count from 1 to 20."]
    assert loaded.turns[-1].reply and not loaded.busy
    loaded.reset()  # free again once the reply is recorded
    assert loaded.turns == []


@pytest.mark.integration
def test_a_reset_from_a_listener_mid_reply_is_refused(loaded: ChatSession) -> None:
    refused: list[str] = []

    def reset_on_token(event: SessionEvent) -> None:  # runs on the generating thread itself
        if event.kind == "token" and not refused:
            try:
                loaded.reset()
            except InvalidInputError as exc:
                refused.append(str(exc))

    unsubscribe = loaded.subscribe(reset_on_token)
    try:
        turn = loaded.send("Say hello.")
    finally:
        unsubscribe()
    assert refused and "A reply is being generated" in refused[0]
    assert loaded.turns[-1] is turn and turn.reply


@pytest.mark.integration
def test_a_prompt_over_the_context_window_is_refused_before_any_prefill(
    loaded: ChatSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hf_magic.errors import ContextWindowError

    if not loaded.turns:
        loaded.send("Hi")  # some history, so the refusal can tell it from the new message
    llm = loaded.chat_model.llm
    model, turns = loaded.chat_model, list(loaded.turns)

    def no_generation(*args: object, **kwargs: object) -> None:
        raise AssertionError("generate ran for a prompt that cannot fit")

    monkeypatch.setattr(llm.model, "generate", no_generation)
    with pytest.raises(ContextWindowError) as caught:
        loaded.send("word " * 9000)
    error = caught.value
    assert error.context_length == 8192 and error.prompt_tokens > 8192 and error.history_tokens is not None
    message = str(error)
    assert f"{error.prompt_tokens:,} tokens" in message and "8,192" in message and "\n" not in message
    assert loaded.chat_model is model and loaded.turns == turns
    with pytest.raises(ContextWindowError):  # the text-completion path has the same guard
        llm.invoke("word " * 9000)


def test_a_turn_records_usage_finish_reason_and_model_from_the_backends_typed_deltas(monkeypatch) -> None:
    from hf_magic.backend import Usage
    from hf_magic.chat_models import ChatHuggingFace
    from hf_magic.notebook import model_slot as session_module
    from tests.support.replay_backend import ReplayBackend

    backend = ReplayBackend(["Bon", "jour"], finish_reason="stop", output_tokens=2, model_name="replayed-model")
    monkeypatch.setattr(session_module, "load_chat_model", lambda spec, progress: ChatHuggingFace(llm=backend))
    session = ChatSession("typed-deltas")
    tokens: list[str] = []
    turn = session.send("Hello", on_token=tokens.append)
    assert tokens == ["Bon", "jour"] and turn.reply == "Bonjour"
    assert turn.usage == Usage(input_tokens=20, output_tokens=2)
    assert turn.finish_reason == "stop" and turn.model == "replayed-model"
    session.send("Again")
    assert session.usage_total() == Usage(input_tokens=40, output_tokens=4)  # each turn keeps its own copy
