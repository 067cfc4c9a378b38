"""ChatPanel driven from Python: set widget values, click buttons, wait for the worker, check session and transcript."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import huggingface_hub.constants
import pytest

from hf_magic import ChatPanel
from hf_magic.notebook.session import ChatSession, get_session
from hf_magic.notebook.turns import SessionEvent, Settings, Turn


def _all_html(panel: ChatPanel) -> str:
    """Every HTML/text value of the panel's widget tree (what a person could read)."""
    found: list[str] = []

    def walk(widget: object) -> None:
        for name in ("value", "description", "placeholder", "tooltip"):
            value = getattr(widget, name, None)
            if isinstance(value, str):
                found.append(value)
        for child in getattr(widget, "children", ()):
            walk(child)

    walk(panel.root)
    return "\n".join(found)


def _transcript_html(panel: ChatPanel) -> str:
    return "\n".join(child.value for child in panel.transcript.children)


@pytest.fixture
def panel() -> ChatPanel:
    view = ChatPanel(ChatSession("panel-unit"))
    yield view
    view.close()


# ---------------------------------------------------------------------------------- no model needed
def test_picker_lists_the_embedded_model_with_size_parameters_and_fit(panel: ChatPanel) -> None:
    labels = [label for label, _ in panel.model_list.options]
    default = next(label for label, value in panel.model_list.options if value == "default")
    assert "embedded" in default and "params" in default and "MB" in default, labels
    assert panel.model_list.value == "default"
    info = panel.model_info.value
    assert "cached" in info and "free memory" in info and ("fits" in info or "does NOT fit" in info)


def test_pickers_describe_the_spec_to_load(panel: ChatPanel) -> None:
    panel.device.value, panel.dtype.value, panel.quantize.value = "cpu", "float32", "4bit"
    spec = panel.selected_spec()
    assert (spec.model, spec.backend, spec.device, spec.dtype, spec.quantize) == (
        "default",
        "pipeline",
        "cpu",
        "float32",
        "4bit",
    )
    panel.model_id.value = "HuggingFaceTB/SmolLM2-360M-Instruct"
    assert "not cached" in panel.model_info.value
    panel.backend.value = "endpoint"
    assert panel.pipeline_box.layout.display == "none" and panel.endpoint_box.layout.display == "flex"
    panel.endpoint_url.value = "http://127.0.0.1:9999"
    spec = panel.selected_spec()
    assert (spec.backend, spec.endpoint_url, spec.quantize, spec.model) == (
        "endpoint",
        "http://127.0.0.1:9999",
        None,
        "HuggingFaceTB/SmolLM2-360M-Instruct",
    )


def test_token_status_says_set_and_never_shows_the_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = "hf_panelTestSecretValue1234567890"
    monkeypatch.setenv("HF_TOKEN", secret)
    view = ChatPanel(ChatSession("panel-token"))
    try:
        view.backend.value = "endpoint"
        assert "Token: set" in view.token_status.value
        assert secret not in _all_html(view)
    finally:
        view.close()
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGINGFACEHUB_API_TOKEN", raising=False)
    from huggingface_hub import constants

    login = tmp_path / "token"
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(login))  # no `hf auth login` token either
    view = ChatPanel(ChatSession("panel-token"))
    assert "not set" in view.token_status.value
    view.close()
    login.write_text(secret)
    view = ChatPanel(ChatSession("panel-token"))
    assert "set (hf auth login)" in view.token_status.value and secret not in _all_html(view)
    view.close()


def test_hub_search_is_offered_only_when_the_hub_may_be_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    offline = ChatPanel(ChatSession("panel-offline"))
    assert offline.search_row.layout.display == "none"
    offline.close()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    online = ChatPanel(ChatSession("panel-online"))
    assert online.search_row.layout.display == "flex"
    online.close()


def test_generation_fields_write_the_session_settings(panel: ChatPanel) -> None:
    panel.system_prompt.value = "Answer in one word."
    panel.temperature.value = "0.7"
    panel.max_new_tokens.value = "32"
    panel.top_p.value = "0.9"
    panel.repetition_penalty.value = "1.1"
    settings = panel.session.settings
    assert (settings.system_prompt, settings.temperature, settings.max_new_tokens) == ("Answer in one word.", 0.7, 32)
    assert (settings.top_p, settings.repetition_penalty) == (0.9, 1.1)
    panel.temperature.value = ""  # empty: back to the model's default
    assert panel.session.settings.temperature is None
    panel.max_new_tokens.value = "lots"
    assert "Max tokens must be a whole number" in panel.error.value
    assert panel.session.settings.max_new_tokens == 32  # the bad value was not applied
    panel.max_new_tokens.value = "48"
    assert panel.error.value == "" and panel.session.settings.max_new_tokens == 48


def test_settings_changed_elsewhere_show_in_the_fields_and_are_kept_whole(panel: ChatPanel) -> None:
    panel.temperature.value = "0.5"
    changed = Settings(system_prompt="Be brief.", temperature=0.2, max_new_tokens=64, top_p=0.8)
    panel.session.settings = changed  # what a %%hfchat cell's -s / --temperature do
    panel.session.reset()  # a conversation event redraws the fields from the session
    fields = (panel.system_prompt, panel.temperature, panel.max_new_tokens, panel.top_p, panel.repetition_penalty)
    assert [field.value for field in fields] == ["Be brief.", "0.2", "64", "0.8", ""]
    # writing the fields one by one applied each value the session already had: nothing reverted midway
    assert panel.session.settings == changed and panel.error.value == ""


def test_a_bad_field_keeps_its_error_while_another_field_changes(panel: ChatPanel) -> None:
    panel.top_p.value = "most"
    panel.temperature.value = "0.3"
    assert "Top p must be a number" in panel.error.value
    assert panel.session.settings.temperature == 0.3 and panel.session.settings.top_p is None
    panel.top_p.value = ""
    assert panel.error.value == ""


def test_a_model_that_cannot_load_shows_one_line_and_the_panel_stays_usable(panel: ChatPanel) -> None:
    panel.model_id.value = "./no-such-model-folder"
    panel.load_button.click()
    assert panel.wait(60)
    assert "No model folder at './no-such-model-folder'" in panel.error.value
    assert panel.error.value.count("<div") == 1 and "\n" not in panel.error.value
    assert not panel.session.loaded
    assert not panel.send_button.disabled and not panel.load_button.disabled and panel.stop_button.disabled
    panel.input.value = "   "
    panel.send_button.click()
    assert "The message is empty" in panel.error.value


def test_transcript_shows_turns_as_chat_with_markdown_and_stopped_marks(panel: ChatPanel, tmp_path: Path) -> None:
    assert "No messages yet" in _transcript_html(panel)
    saved = tmp_path / "chat.json"
    turns = [
        Turn(user="Show **bold**", reply="Here: **bold** and `code`", model="SmolLM2-135M-Instruct"),
        Turn(user="Tell a story", reply="Once upon a", model="SmolLM2-135M-Instruct", interrupted=True),
    ]
    saved.write_text(json.dumps({"turns": [turn.to_dict() for turn in turns]}))
    panel.session.load_transcript(saved)
    html = _transcript_html(panel)
    assert "<strong>bold</strong>" in html and "<code>code</code>" in html
    assert html.count("hfm-user") == 2 and html.count("hfm-assistant") == 2
    assert "■ stopped" in panel.transcript.children[0].value  # newest first: the box is column-reversed
    assert "stopped" not in panel.transcript.children[1].value
    assert "<script" not in html

    panel.export_path.value = str(tmp_path / "out.json")
    panel.export_button.click()
    exported = json.loads((tmp_path / "out.json").read_text())
    assert [t["user"] for t in exported["turns"]] == ["Show **bold**", "Tell a story"]
    assert "Exported to" in panel.note.value
    panel.export_path.value = str(tmp_path / "out.txt")
    panel.export_button.click()
    assert "use a .md or .json file name" in panel.error.value

    panel.reset_button.click()
    assert panel.session.turns == [] and "No messages yet" in _transcript_html(panel)


def test_model_generated_markup_is_shown_as_text(panel: ChatPanel, tmp_path: Path) -> None:
    saved = tmp_path / "chat.json"
    evil = Turn(user="<img src=x onerror=alert(1)>", reply="<script>alert(1)</script>", model="m")
    saved.write_text(json.dumps({"turns": [evil.to_dict()]}))
    panel.session.load_transcript(saved)
    html = _transcript_html(panel)
    assert "<script>" not in html and "<img" not in html and "&lt;script&gt;" in html


# ---------------------------------------------------------------------------------- the real model
@pytest.fixture(scope="module")
def shared_session() -> ChatSession:
    """A session on the real default model (loaded once for these tests), greedy and short."""
    session = get_session("panel-integration")
    session.settings = Settings(max_new_tokens=16, temperature=0)
    yield session
    session.unload()


@pytest.mark.integration
def test_send_streams_the_reply_into_the_transcript(shared_session: ChatSession) -> None:
    panel = ChatPanel(shared_session)
    streamed: list[str] = []

    def watch(event: SessionEvent) -> None:  # runs after the panel's own listener, on the worker thread
        if event.kind == "token":
            streamed.append(panel.transcript.children[0].value)

    unsubscribe = shared_session.subscribe(watch)
    try:
        panel.input.value = "What is the capital of France?"
        panel.send_button.click()
        assert panel.input.value == ""
        assert panel.wait(600)
    finally:
        unsubscribe()
    assert panel.error.value == ""
    turn = shared_session.turns[-1]
    assert turn.user == "What is the capital of France?" and turn.reply.strip()
    assert streamed and all("hfm-streaming" in html for html in streamed)
    assert "hfm-done" in panel.transcript.children[0].value
    # the panel's usage line is the one under a %%hfchat cell
    assert f"in {turn.usage.input_tokens} · out {turn.usage.output_tokens}" in panel.usage.value
    assert "context " in panel.usage.value and "/8192" in panel.usage.value
    assert "● loaded" in panel.status.value
    assert not panel.send_button.disabled and panel.stop_button.disabled
    panel.close()


@pytest.mark.integration
def test_stop_keeps_the_partial_reply_marked_stopped(shared_session: ChatSession) -> None:
    panel = ChatPanel(shared_session)
    first_tokens = threading.Event()
    count = 0

    def watch(event: SessionEvent) -> None:
        nonlocal count
        if event.kind == "token":
            count += 1
            if count >= 3:
                first_tokens.set()

    unsubscribe = shared_session.subscribe(watch)
    try:
        panel.max_new_tokens.value = "300"
        panel.input.value = "Write a very long story about a dragon who learns to bake bread."
        panel.send_button.click()
        assert first_tokens.wait(600)
        assert panel.send_button.disabled and not panel.stop_button.disabled  # Stop is live while it streams
        panel.stop_button.click()
        assert panel.wait(120)
    finally:
        unsubscribe()
        panel.max_new_tokens.value = "16"
    turn = shared_session.turns[-1]
    assert turn.interrupted and turn.finish_reason == "interrupted"
    assert turn.reply.strip()
    tokenizer = shared_session.chat_model.llm.tokenizer
    assert len(tokenizer(turn.reply, add_special_tokens=False)["input_ids"]) < 300  # ended well before the limit
    newest = panel.transcript.children[0].value
    assert "hfm-stopped" in newest and "■ stopped" in newest and "stopped after" in newest
    assert panel.error.value == "" and not panel.send_button.disabled
    panel.close()


@pytest.mark.integration
def test_turns_sent_elsewhere_appear_in_every_panel_of_the_session(shared_session: ChatSession) -> None:
    first, second = ChatPanel(shared_session), ChatPanel(shared_session)
    before = len(shared_session.turns)
    shared_session.send("Say hello.", key="cell-1")  # what a %%hfchat cell does
    assert len(shared_session.turns) == before + 1
    for panel in (first, second):
        assert "Say hello." in panel.transcript.children[0].value
        assert len(panel.transcript.children) == before + 1
    first.send("Say goodbye.")
    assert first.wait(600)
    assert "Say goodbye." in second.transcript.children[0].value  # a panel message reaches the other view
    shared_session.send("Say hello again.", key="cell-1")  # re-running the cell replaces its turn in place
    assert len(second.transcript.children) == before + 2
    assert "Say hello again." in _transcript_html(second) and "Say hello." not in _transcript_html(second)
    first.close()
    second.close()


@pytest.mark.integration
def test_system_prompt_from_the_panel_reaches_the_model(shared_session: ChatSession) -> None:
    panel = ChatPanel(shared_session)
    panel.system_prompt.value = "You are a pirate."
    panel.send("Who are you?")
    assert panel.wait(600)
    turn = shared_session.turns[-1]
    assert turn.system_prompt == "You are a pirate."
    messages = shared_session.build_messages("next")
    assert messages[0].content == "You are a pirate."
    panel.system_prompt.value = ""
    assert shared_session.settings.system_prompt is None
    panel.close()


@pytest.mark.integration
def test_send_while_a_cell_generates_is_one_line_and_the_transcript_stays_whole(shared_session: ChatSession) -> None:
    panel = ChatPanel(shared_session)
    model, before = shared_session.chat_model, list(shared_session.turns)
    streaming, release = threading.Event(), threading.Event()

    def hold_after_first_token(event: SessionEvent) -> None:  # keeps the "cell" mid-reply while the panel acts
        if event.kind == "token" and not streaming.is_set():
            streaming.set()
            release.wait(600)

    unsubscribe = shared_session.subscribe(hold_after_first_token)
    cell = threading.Thread(target=lambda: shared_session.send("Count from 1 to 10.", key="cell-busy"))
    cell.start()
    try:
        assert streaming.wait(600)
        panel.input.value = "Me too."
        panel.send_button.click()
        assert panel.wait(60)
        assert "A reply is being generated" in panel.error.value and panel.error.value.count("<div") == 1
        assert panel.input.value == "Me too."  # given back to retry
        panel.reset()
        assert "press Stop first" in panel.error.value
        assert shared_session.turns == before and shared_session.chat_model is model
    finally:
        release.set()
        cell.join(600)
        unsubscribe()
    assert [t.user for t in shared_session.turns] == [t.user for t in before] + ["Count from 1 to 10."]
    assert shared_session.chat_model is model
    panel.close()


@pytest.mark.integration
def test_an_endpoint_that_cannot_be_reached_switches_the_panel_back(shared_session: ChatSession) -> None:
    import socket

    panel = ChatPanel(shared_session)
    model, before = shared_session.chat_model, list(shared_session.turns)
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        panel.backend.value = "endpoint"
        panel.endpoint_url.value = url
        panel.load_button.click()
        assert panel.wait(60) and panel.error.value == ""
        panel.send("Hello?")
        assert panel.wait(60)
    assert f"Cannot reach {url}" in panel.error.value and "still on default (pipeline)" in panel.error.value
    assert shared_session.chat_model is model and shared_session.spec.backend == "pipeline"
    assert panel.backend.value == "pipeline"  # the pickers show the model the session is back on
    assert shared_session.turns == before
    panel.close()


@pytest.mark.integration
def test_load_downloads_from_a_hub_with_byte_and_weight_progress(olah_env) -> None:
    panel = ChatPanel(ChatSession("panel-download"))
    try:
        panel.model_id.value = olah_env.repo_id
        assert "not cached" in panel.model_info.value
        panel.load_button.click()
        assert panel.wait(600)
        assert panel.error.value == "", panel.error.value
        assert panel.session.loaded and panel.session.spec.model == olah_env.repo_id
        assert panel.model_list.value == olah_env.repo_id and panel.model_id.value == ""  # now listed as cached
        assert "hub cache" in panel.model_list.label and "cached" in panel.model_info.value
        # the bars a %%hfchat cell draws: one per file, the total download, one per loading stage
        rows = {row.children[0].description: row.children[1].value for row in panel.progress_box.children}
        assert "MB/" in rows["Total download"]  # bytes: done/total
        assert any(name.startswith("model-0000") for name in rows), rows  # a weight file (its name cut to fit)
        assert any("Loading weights" in name for name in rows), rows
        assert all(row.children[0].bar_style == "success" for row in panel.progress_box.children)
        assert "● loaded" in panel.status.value and not panel.unload_button.disabled
        panel.unload_button.click()
        assert not panel.session.loaded and "not loaded" in panel.status.value
    finally:
        panel.session.unload()
        panel.close()


@pytest.mark.integration
def test_hub_search_failure_is_one_line_and_the_panel_stays_usable(olah_env) -> None:
    # olah mirrors repos but answers the hub's model search with an empty body: a real server that cannot search
    panel = ChatPanel(ChatSession("panel-search"))
    try:
        assert panel.search_row.layout.display == "flex"
        panel.search_hub("smol")
        assert panel.wait(120)
        assert f"Searching the hub at {olah_env.url} failed" in panel.error.value
        assert panel.search_results.layout.display == "none"
        assert not panel.send_button.disabled and not panel.load_button.disabled
    finally:
        panel.close()


@pytest.mark.integration
def test_endpoint_backend_chats_with_a_real_server(serve_url: str) -> None:
    panel = ChatPanel(ChatSession("panel-endpoint", settings=Settings(max_new_tokens=16, temperature=0)))
    try:
        panel.backend.value = "endpoint"
        panel.endpoint_url.value = serve_url
        assert "Runs remotely" in panel.model_info.value
        panel.load_button.click()
        assert panel.wait(300)
        assert panel.error.value == "", panel.error.value
        assert panel.session.spec.backend == "endpoint" and panel.session.spec.endpoint_url == serve_url
        assert "endpoint" in panel.status.value
        panel.send("What is the capital of France?")
        assert panel.wait(300)
        assert panel.error.value == "", panel.error.value
        assert panel.session.turns[-1].reply.strip()
        assert "hfm-done" in panel.transcript.children[0].value
    finally:
        panel.session.unload()
        panel.close()


def test_the_status_line_names_what_the_first_message_will_load(panel: ChatPanel) -> None:
    assert "not loaded" in panel.status.value and "default, pipeline" in panel.status.value
    panel.quantize.value = "8bit"
    assert "default, pipeline, 8bit" in panel.status.value


def test_the_panel_displays_as_a_widget(panel: ChatPanel) -> None:
    # leaving `ChatPanel()` as a cell's last expression shows the widget, like panel.display()
    bundle = panel._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == panel.root.model_id


def test_a_fresh_panel_offers_send_but_not_stop_or_unload(panel: ChatPanel) -> None:
    assert not panel.send_button.disabled and not panel.load_button.disabled
    assert panel.stop_button.disabled and panel.unload_button.disabled
