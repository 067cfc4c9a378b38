"""Rendering of replies, transcripts, usage and errors as display bundles."""

from __future__ import annotations

from hf_magic.backend import Usage
from hf_magic.notebook.render import (
    ErrorLine,
    Reply,
    Transcript,
    UsageReport,
    usage_line,
)
from hf_magic.notebook.turn_drawing import markdown_to_html, transcript_markdown
from hf_magic.notebook.turns import Turn


def make_turn(**changes) -> Turn:
    values = dict(
        user="Show me Python",
        reply="Here:\n\n```python\nprint('hi')\n```",
        model="SmolLM2-135M-Instruct",
        usage=Usage(30, 11),
        time_to_first_token=0.5,
        duration=1.5,
    )
    values.update(changes)
    return Turn(**values)


def test_markdown_code_blocks_are_highlighted_by_pygments():
    rendered = markdown_to_html("```python\nprint('hi')\n```")
    assert "<pre" in rendered and "style=" in rendered  # inline Pygments colours
    assert "print" in rendered


def test_markdown_does_not_pass_raw_html_through():
    rendered = markdown_to_html("<script>alert(1)</script>")
    assert "<script>" not in rendered


def test_usage_line_has_tokens_speed_session_and_context():
    line = usage_line(make_turn(), Usage(100, 20), (41, 8192))
    assert "in 30 · out 11 · total 41" in line
    assert "first token 0.50 s" in line
    assert "10.0 tok/s" in line  # 10 tokens after the first, in 1.0 s
    assert "session 120 tokens" in line
    assert "context 41/8192 (1%)" in line


def test_reply_bundle_has_plain_markdown_html_and_metadata():
    data, metadata = Reply(make_turn(), "usage here")._repr_mimebundle_()
    assert set(data) == {"text/plain", "text/markdown", "text/html"}
    assert data["text/plain"].startswith("Here:")
    assert "```python" in data["text/markdown"]
    assert "usage here" in data["text/html"]
    assert metadata["hf_magic"]["model"] == "SmolLM2-135M-Instruct"
    assert metadata["hf_magic"]["usage"] == {"input_tokens": 30, "output_tokens": 11, "total_tokens": 41}


def test_text_format_reply_has_only_plain_text():
    data, _ = Reply(make_turn(), "", format="text")._repr_mimebundle_()
    assert set(data) == {"text/plain"}


def test_interrupted_reply_is_marked():
    data, metadata = Reply(make_turn(interrupted=True))._repr_mimebundle_()
    assert "[interrupted]" in data["text/plain"]
    assert "■ stopped" in data["text/html"] and "hfm-stopped" in data["text/html"]
    assert metadata["hf_magic"]["interrupted"] is True


def test_transcript_markdown_keeps_roles_and_order():
    turns = [make_turn(user="first", reply="one", system_prompt="Be brief."), make_turn(user="second", reply="two")]
    text = transcript_markdown(turns, title="chat")
    assert text.startswith("# chat")
    assert text.index("Be brief.") < text.index("first") < text.index("one") < text.index("second")
    assert text.count("**User**") == 2


def test_transcript_bundle_escapes_user_html():
    data = Transcript([make_turn(user="<b>bold</b>")])._repr_mimebundle_()
    assert "&lt;b&gt;bold&lt;/b&gt;" in data["text/html"]
    assert "User: <b>bold</b>" in data["text/plain"]


def test_usage_report_totals():
    report = UsageReport([make_turn(), make_turn(usage=Usage(5, 5))], (10, 8192))
    assert report.totals() == (35, 16)
    assert "2 turns: in 35 · out 16 · total 51 tokens" in repr(report)
    assert "<table>" in report._repr_mimebundle_()["text/html"]


def test_error_line_is_one_red_line():
    data = ErrorLine("Model missing: run x.")._repr_mimebundle_()
    assert data["text/plain"] == "Error: Model missing: run x."
    assert "hfm-error" in data["text/html"]


def test_turn_html_draws_a_finished_turn_as_chat_bubbles_with_its_facts():
    from hf_magic.notebook.turn_drawing import turn_html

    drawn = turn_html(make_turn(user="<b>hi</b>", model="default"))
    assert drawn.startswith('<div class="hfm-turn hfm-done">')
    assert "&lt;b&gt;hi&lt;/b&gt;" in drawn and "<b>hi</b>" not in drawn  # the user's text is escaped
    assert "SmolLM2-135M-Instruct" in drawn  # the embedded model's aliases are named by its real name
    assert "11 tokens" in drawn and "10.0 tok/s" in drawn and "1.5 s" in drawn
    assert "<pre" in drawn  # the reply is Markdown, code highlighted


def test_turn_html_while_streaming_and_once_stopped():
    from hf_magic.notebook.turn_drawing import turn_html

    streaming = turn_html(make_turn(reply="Once", usage=None), streaming=True)
    assert "hfm-streaming" in streaming and "hfm-cursor" in streaming and "hfm-meta" not in streaming
    stopped = turn_html(make_turn(reply="Once upon", interrupted=True), include_user=False, meta=False)
    assert "hfm-stopped" in stopped and "■ stopped" in stopped
    assert "hfm-user" not in stopped and "hfm-meta" not in stopped
    assert "(empty reply)" in turn_html(make_turn(reply="  "))


def test_a_cell_reply_and_the_history_draw_turns_the_same_way():
    turn = make_turn()
    reply_html = Reply(turn, "usage here")._repr_mimebundle_()[0]["text/html"]
    history_html = Transcript([turn])._repr_mimebundle_()["text/html"]
    assert 'class="hfm-turn hfm-done"' in reply_html and 'class="hfm-turn hfm-done"' in history_html
    assert 'class="hfm-msg hfm-user"' not in reply_html and 'class="hfm-msg hfm-user"' in history_html
    assert '<div class="hfm-usage">usage here</div>' in reply_html
