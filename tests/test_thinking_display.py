"""Thinking in the notebook: the session records it apart from the answer, cells and the panel show it in a
collapsible block (open while thinking, folded once the answer starts), exports keep it (JSON) or leave it
out (Markdown unless asked), ``--think`` / ``--no-think`` and the panel's toggle reach the model."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

from hf_magic import ChatHuggingFace, ChatPanel
from hf_magic.backend import ChatRequest
from hf_magic.notebook.magics import HfChatMagics
from hf_magic.notebook.render import Reply, Streaming, Transcript
from hf_magic.notebook.session import ChatSession, get_session
from hf_magic.notebook.turn_drawing import STILL_THINKING, transcript_markdown
from hf_magic.notebook.turns import Turn
from tests.support.replay_backend import ReplayBackend

THINKING_REPLY = ["<think>Two plus", " two is four.</think>\n\n", "The answer ", "is **4**."]


class RecordingReplay(ReplayBackend):
    """A ReplayBackend that keeps the requests it was sent."""

    def __init__(self, pieces: list[str], finish_reason: str = "stop") -> None:
        super().__init__(pieces, finish_reason, output_tokens=12)
        self.requests: list[ChatRequest] = []

    def stream_chat(self, request: ChatRequest) -> Any:
        self.requests.append(request)
        return super().stream_chat(request)


def replay_session(pieces: list[str], finish_reason: str = "stop", name: str | None = None) -> ChatSession:
    session = get_session(name) if name else ChatSession(f"think-{uuid.uuid4().hex[:6]}")
    session.use_model(ChatHuggingFace(llm=RecordingReplay(pieces, finish_reason)))  # stands in: nothing to load
    return session


def sent(session: ChatSession) -> list[ChatRequest]:
    assert session.chat_model is not None
    return session.chat_model.llm.requests


# ------------------------------------------------------------------------------------ render
def test_streaming_view_shows_the_thinking_open_then_folded_once_the_answer_starts():
    thinking = Streaming("", "m", reasoning="Two plus two")._repr_mimebundle_()["text/html"]
    answering = Streaming("The answer", "m", reasoning="Two plus two")._repr_mimebundle_()["text/html"]
    assert '<details class="hfm-thinking" open>' in thinking and "Two plus two" in thinking
    assert '<details class="hfm-thinking">' in answering and "open>" not in answering


def test_finished_reply_has_the_thinking_collapsed_above_the_markdown_answer():
    turn = Turn(user="2+2?", reply="It is **4**.", reasoning="Two <b>plus</b> two.", finish_reason="stop")
    bundle, _ = Reply(turn)._repr_mimebundle_()
    page = bundle["text/html"]
    assert page.index('<details class="hfm-thinking">') < page.index("<strong>4</strong>")
    assert "Two &lt;b&gt;plus&lt;/b&gt; two." in page  # the thinking is text, never markup
    assert bundle["text/plain"].startswith("[thinking]\n  Two <b>plus</b> two.\n[/thinking]")
    assert "thinking" not in bundle["text/markdown"].lower()


def test_thinking_cut_by_the_token_limit_says_so_in_one_line():
    turn = Turn(user="Hard one", reply="", reasoning="Let me see...", finish_reason="length")
    bundle, _ = Reply(turn)._repr_mimebundle_()
    assert turn.still_thinking
    assert bundle["text/html"].count(STILL_THINKING) == 1 and STILL_THINKING in bundle["text/plain"]
    assert not Turn(user="x", reply="", reasoning="done.", finish_reason="stop").still_thinking


def test_transcript_markdown_leaves_the_thinking_out_unless_asked():
    turns = [Turn(user="2+2?", reply="4.", reasoning="SECRET-THOUGHT")]
    assert "SECRET-THOUGHT" not in transcript_markdown(turns)
    assert "> SECRET-THOUGHT" in transcript_markdown(turns, include_reasoning=True)
    assert "SECRET-THOUGHT" in Transcript(turns)._repr_mimebundle_()["text/html"]


def test_notebook_view_redraws_the_block_folded_as_soon_as_the_answer_starts():
    from hf_magic.notebook.reply_views import NotebookReplyView

    shown: list[Any] = []

    class Handle:
        def update(self, obj: Any) -> None:
            shown.append(obj)

    def display(obj: Any, display_id: bool = False) -> Handle:
        shown.append(obj)
        return Handle()

    view = NotebookReplyView("m", True, display)
    view.reasoning("Two plus")
    view.reasoning(" two.")  # within the refresh interval: not redrawn
    view.token("Four.")  # the first answer piece always redraws, folding the block
    pages = [obj._repr_mimebundle_()["text/html"] for obj in shown]
    assert '<details class="hfm-thinking" open>' in pages[0]
    assert '<details class="hfm-thinking">' in pages[-1] and "Two plus two." in pages[-1] and "Four." in pages[-1]


# ----------------------------------------------------------------------------------- session
def test_session_records_thinking_apart_and_tells_listeners_as_it_comes():
    session = replay_session(THINKING_REPLY)
    events: list[tuple[str, str]] = []
    session.subscribe(lambda event: events.append((event.kind, event.text)))
    thoughts: list[str] = []
    turn = session.send("2+2?", on_reasoning=thoughts.append)
    assert (turn.reasoning, turn.reply) == ("Two plus two is four.", "The answer is **4**.")
    assert thoughts == ["Two plus", " two is four."]
    kinds = [kind for kind, _ in events if kind in ("reasoning", "token")]
    assert kinds == ["reasoning", "reasoning", "token", "token"]  # the thinking first, then the answer
    assert turn.usage is not None and turn.usage.reasoning_tokens == 5


def test_the_next_turn_sends_the_thinking_with_the_answer_for_the_backend_to_place():
    session = replay_session(THINKING_REPLY)
    session.send("2+2?")
    session.send("And 3+3?")
    history = sent(session)[1].messages
    assert history[-2] == {
        "role": "assistant",
        "content": "The answer is **4**.",
        "reasoning_content": "Two plus two is four.",
    }


def test_json_export_keeps_the_thinking_and_loads_back_markdown_does_not(tmp_path: Path):
    session = replay_session(THINKING_REPLY)
    session.send("2+2?")
    data = json.loads(session.export(tmp_path / "chat.json").read_text())
    assert data["turns"][0]["reasoning"] == "Two plus two is four."
    assert data["turns"][0]["usage"]["output_token_details"] == {"reasoning": 5}
    assert "Two plus two" not in session.export(tmp_path / "chat.md").read_text()
    assert "Two plus two" in session.export(tmp_path / "full.md", include_reasoning=True).read_text()
    again = ChatSession("reloaded")
    again.load_transcript(tmp_path / "chat.json")
    assert again.turns[0].reasoning == "Two plus two is four." and again.turns[0].usage.reasoning_tokens == 5


def test_stop_while_thinking_keeps_the_thinking_and_marks_the_turn():
    session = replay_session(["<think>Step one.", " Step two.", " Step three.</think>", "Done."])
    turn = session.send("Go", on_reasoning=lambda _: session.stop())
    assert turn.interrupted and turn.reply == "" and turn.reasoning.startswith("Step one.")
    assert turn.still_thinking


# ------------------------------------------------------------------------------------ magics
@pytest.fixture(scope="module")
def ip() -> InteractiveShell:
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "hf_magic")
    return shell


@pytest.fixture
def magics(ip) -> HfChatMagics:
    instance = ip.magics_manager.registry["HfChatMagics"]
    saved = {name: getattr(instance, name) for name in ("display_mode", "show_usage")}
    instance.display_mode, instance.show_usage = "terminal", False
    yield instance
    for name, value in saved.items():
        setattr(instance, name, value)


@pytest.mark.parametrize(("flag", "expected"), [("--think", True), ("--no-think", False), ("", None)])
def test_think_flags_reach_the_request(ip, magics, flag, expected):
    session = replay_session(["4."], name=f"think-{uuid.uuid4().hex[:6]}")
    ip.run_cell_magic("hfchat", f"--session {session.name} {flag}", "2+2?")
    assert sent(session)[0].thinking is expected


def test_cell_output_sets_the_thinking_apart_and_o_var_holds_the_answer_with_it(ip, magics, capsys):
    session = replay_session(THINKING_REPLY, name=f"think-{uuid.uuid4().hex[:6]}")
    ip.run_cell_magic("hfchat", f"--session {session.name} -o answer", "2+2?")
    out = capsys.readouterr().out
    assert out.startswith("[thinking]\n  Two plus two is four.\n[/thinking]\nThe answer is **4**.")
    message = ip.user_ns["answer"]
    assert message.content == "The answer is **4**."
    assert message.additional_kwargs["reasoning_content"] == "Two plus two is four."
    assert message.usage_metadata["output_token_details"] == {"reasoning": 5}


def test_export_thinking_flag_writes_it_into_the_markdown(ip, magics, tmp_path: Path):
    session = replay_session(THINKING_REPLY, name=f"think-{uuid.uuid4().hex[:6]}")
    ip.run_cell_magic("hfchat", f"--session {session.name}", "2+2?")
    ip.run_line_magic("hfchat", f"export {tmp_path / 'a.md'} --thinking --session {session.name}")
    ip.run_line_magic("hfchat", f"export {tmp_path / 'b.md'} --session {session.name}")
    assert "Two plus two" in (tmp_path / "a.md").read_text()
    assert "Two plus two" not in (tmp_path / "b.md").read_text()


# ------------------------------------------------------------------------------------- panel
def test_panel_think_toggle_writes_the_setting_and_turns_show_the_folded_thinking():
    session = replay_session(THINKING_REPLY)
    panel = ChatPanel(session)
    try:
        panel.thinking.value = "off"
        assert session.settings.enable_thinking is False
        panel.thinking.value = "on"
        panel.send("2+2?")
        assert panel.wait(30)
        assert sent(session)[0].thinking is True
        page = panel.transcript.children[0].value
        assert '<details class="hfm-thinking">' in page and "Two plus two is four." in page
        assert page.index("hfm-thinking") < page.index("<strong>4</strong>")
    finally:
        panel.close()
