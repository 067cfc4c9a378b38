"""%%hfchat / %hfchat in a real IPython InteractiveShell: registration, options, sessions, errors."""

from __future__ import annotations

import _thread
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from hf_magic.errors import InvalidInputError
from hf_magic.local.loading import cpu_computes_bf16
from hf_magic.notebook.cell_options import cell_key, interpolate, parse_subcommand, spec_from_options
from hf_magic.notebook.magics import HfChatMagics
from hf_magic.notebook.model_spec import ModelSpec
from hf_magic.notebook.session import get_session
from hf_magic.notebook.turns import Turn
from tests.support.held_reply import HeldReply


@pytest.fixture(scope="module")
def ip() -> InteractiveShell:
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "hf_magic")
    return shell


@pytest.fixture
def magics(ip) -> HfChatMagics:
    instance = ip.magics_manager.registry["HfChatMagics"]
    saved = {
        name: getattr(instance, name) for name in instance.trait_names() if instance.trait_metadata(name, "config")
    }
    yield instance
    for name, value in saved.items():
        setattr(instance, name, value)


def session_name() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------------- pure parts
def test_extension_registers_line_and_cell_magic(ip):
    assert "hfchat" in ip.magics_manager.magics["cell"]
    assert "hfchat" in ip.magics_manager.magics["line"]


def test_unload_and_reload_extension():
    shell = InteractiveShell.instance()
    shell.run_line_magic("unload_ext", "hf_magic")
    assert "hfchat" not in shell.magics_manager.magics["cell"]
    shell.run_line_magic("load_ext", "hf_magic")
    assert "hfchat" in shell.magics_manager.magics["cell"]
    live = [c for c in shell.configurables if type(c).__name__ == "HfChatMagics"]
    assert len(live) == 1 and shell.magics_manager.magics["cell"]["hfchat"].__self__ is live[0]


def test_config_sets_defaults(ip, magics):
    ip.run_line_magic("config", "HfChatMagics.max_new_tokens = 7")
    ip.run_line_magic("config", "HfChatMagics.history_limit = 2")
    assert magics.max_new_tokens == 7 and magics.history_limit == 2


def test_all_options_parse(magics):
    line = (
        "-m org/name --backend endpoint --endpoint-url http://127.0.0.1:1 --provider hf -s 'Be brief' "
        "--temperature 0.5 --max-new-tokens 9 --quantize 4bit --device cpu --dtype bfloat16 --session s "
        "--new --no-stream -o out --format text -i"
    )
    options = magics.parse_cell_options(line)
    assert options.model == "org/name" and options.system == "Be brief" and options.max_new_tokens == 9
    assert options.new and options.no_stream and options.interpolate and options.output == "out"
    assert options.quantize == "4bit" and options.format == "text" and options.temperature == 0.5


def test_bad_option_is_one_error_line(ip, capsys):
    ip.run_cell_magic("hfchat", "--quantize 3bit", "Hi")
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and "3bit" in err and "Traceback" not in err


def test_help_documents_the_options(magics):
    assert "--max-new-tokens" in magics.hfchat.__doc__ and "history" in magics.hfchat.__doc__


def test_spec_from_options_keeps_unspecified_fields(magics):
    current = ModelSpec(model="a/b", quantize="4bit")
    options = magics.parse_cell_options("--dtype float32")
    assert spec_from_options(current, options) == ModelSpec(model="a/b", quantize="4bit", dtype="float32")
    options = magics.parse_cell_options("--quantize none")
    assert spec_from_options(current, options).quantize is None
    options = magics.parse_cell_options("--endpoint-url http://127.0.0.1:9")
    assert spec_from_options(ModelSpec(), options).backend == "endpoint"


def test_interpolation_is_brace_safe():
    namespace = {"city": "Paris", "data": {"k": 3}, "items": [1, 2]}
    assert interpolate("Tell me about {city}.", namespace) == "Tell me about Paris."
    assert interpolate("{data[k]} and {items[1]}", namespace) == "3 and 2"
    code = 'x = {"a": 1}; y = {unknown}; z = {{city}}; f"{city!r}"'
    assert interpolate(code, namespace) == code


def test_cell_key_prefers_the_cell_id():
    assert cell_key("hello", "abc") == "cell:abc"
    assert cell_key("hello", None) == cell_key("hello\n", None) != cell_key("bye", None)


def test_parse_subcommand():
    command = parse_subcommand("export 'my chat.md' --session s")
    assert (command.name, command.argument, command.session) == ("export", "my chat.md", "s")
    with pytest.raises(InvalidInputError, match="Unknown %hfchat subcommand"):
        parse_subcommand("what is this")
    with pytest.raises(InvalidInputError, match="needs a file path"):
        parse_subcommand("load")


def test_bad_subcommand_is_one_error_line_not_an_exception(ip, capsys):
    ip.run_line_magic("hfchat", "frobnicate")
    err = capsys.readouterr().err
    assert err.startswith("Error: Unknown %hfchat subcommand 'frobnicate'")
    assert "Traceback" not in err


def test_empty_cell_is_an_error_line(ip, capsys):
    ip.run_cell_magic("hfchat", f"--session {session_name()}", "   \n")
    assert "The cell is empty" in capsys.readouterr().err


def test_non_positive_max_new_tokens_is_an_error_line_before_any_load(ip, capsys):
    name = session_name()
    ip.run_cell_magic("hfchat", f"--session {name} -m ./no/such/model --max-new-tokens 0", "Hello")
    err = capsys.readouterr().err
    assert err.startswith("Error: --max-new-tokens must be a positive integer, got 0")
    assert "Traceback" not in err


def test_an_unknown_dtype_is_one_line_listing_the_valid_ones_before_any_load(ip, capsys):
    name = session_name()
    ip.run_cell_magic("hfchat", f"--session {name} --dtype float99", "Hello")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "AttributeError" not in err
    assert "'float99'" in err and "bfloat16, float16, float32, auto" in err
    assert not get_session(name).loaded


@pytest.mark.parametrize("name", ["1abc", "class", "a-b"])
def test_an_output_name_that_is_no_variable_is_one_line_before_any_load(ip, capsys, name):
    session = session_name()
    ip.run_cell_magic("hfchat", f"--session {session} -o {name}", "Hello")
    err = capsys.readouterr().err
    assert err.startswith(f"Error: -o {name!r} is ") and err.count("\n") == 1
    assert ("keyword" in err) == (name == "class")
    assert not get_session(session).loaded and name not in ip.user_ns


def test_a_bad_option_changes_nothing_even_with_new_and_system(ip, capsys):
    name = session_name()
    session = get_session(name)
    session.turns.append(Turn(user="Hi", reply="Hello!"))
    ip.run_cell_magic("hfchat", f"--session {name} --new -s 'Be a pirate' --dtype float99", "Hello")
    assert "float99" in capsys.readouterr().err
    assert [t.user for t in session.turns] == ["Hi"] and session.settings.system_prompt is None


def test_a_negative_history_limit_is_one_line(ip, capsys):
    ip.run_cell_magic("hfchat", f"--session {session_name()} --history-limit -1", "Hello")
    err = capsys.readouterr().err
    assert err.startswith("Error: --history-limit must be 0 or more") and err.count("\n") == 1


def test_export_into_a_folder_that_does_not_exist_is_one_line(ip, capsys):
    name = session_name()
    get_session(name).turns.append(Turn(user="Hi", reply="Hello!"))
    ip.run_line_magic("hfchat", f"export /nonexistent_dir/x.json --session {name}")
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert "'/nonexistent_dir' does not exist" in captured.err and "pick another path" in captured.err
    assert "Exported" not in captured.out and len(get_session(name).turns) == 1


def test_history_of_an_empty_session(ip, capsys):
    ip.run_line_magic("hfchat", f"history --session {session_name()}")
    assert "(no messages yet)" in capsys.readouterr().out


def test_models_lists_the_embedded_model_with_its_folder_and_size(ip, capsys):
    from hf_magic.local.loading import ensure_default_model

    folder = ensure_default_model()
    ip.run_line_magic("hfchat", "models")
    out = capsys.readouterr().out
    assert "Models available without the network" in out
    line = next(line for line in out.splitlines() if line.strip().startswith("default"))
    assert "embedded" in line and "MB" in line and str(folder) in line


def test_debug_toggles_tracebacks(ip, magics, capsys):
    ip.run_line_magic("hfchat", "debug on")
    assert magics.verbose
    ip.run_line_magic("hfchat", "nonsense")
    assert "Traceback" in capsys.readouterr().err
    ip.run_line_magic("hfchat", "debug off")
    assert not magics.verbose


# ------------------------------------------------------------------ on the real model
@pytest.fixture(scope="module")
def chat(ip):
    """A session on the real default model, loaded once by a first %%hfchat cell."""
    name = session_name()
    ip.run_cell_magic("hfchat", f"--session {name} --max-new-tokens 12", "What is the capital of France?")
    session = get_session(name)
    assert session.loaded, "the first cell should have loaded the default model"
    return session


@pytest.mark.integration
def test_first_cell_replies_and_shows_usage(chat):
    turn = chat.turns[0]
    assert turn.reply.strip()
    assert turn.usage and turn.usage.output_tokens > 0


@pytest.mark.integration
def test_next_cell_continues_without_reloading(ip, chat, capsys):
    model = chat.chat_model
    ip.run_cell_magic("hfchat", f"--session {chat.name} --max-new-tokens 12 -o answer", "And of Italy?")
    out = capsys.readouterr().out
    assert chat.chat_model is model
    assert len(chat.turns) == 2
    assert ip.user_ns["answer"].content == chat.turns[-1].reply != ""
    assert chat.turns[1].usage.input_tokens > chat.turns[0].usage.input_tokens  # the first exchange came along
    assert "in " in out and "tok/s" in out and "context " in out  # usage line under the reply


@pytest.mark.integration
def test_rerun_replaces_the_cells_exchange(ip, chat):
    before = len(chat.turns)
    for _ in range(2):
        ip.run_cell_magic("hfchat", f"--session {chat.name} --max-new-tokens 4", "Say hi.")
    assert len(chat.turns) == before + 1


@pytest.mark.integration
def test_rerun_is_keyed_by_the_notebook_cell_id(ip, chat, monkeypatch):
    # What ipykernel hands the magic: the execute request's metadata with the cell id.
    parent = {"metadata": {"cellId": "cell-1"}}
    monkeypatch.setattr(ip, "kernel", SimpleNamespace(get_parent=lambda: parent), raising=False)
    before = len(chat.turns)
    ip.run_cell_magic("hfchat", f"--session {chat.name} --max-new-tokens 4", "Say one.")
    ip.run_cell_magic("hfchat", f"--session {chat.name} --max-new-tokens 4", "Say two.")  # edited, re-run
    assert len(chat.turns) == before + 1
    assert chat.turns[-1].user == "Say two." and chat.turns[-1].key == "cell:cell-1"


@pytest.mark.integration
def test_interpolation_off_by_default_and_on_with_flag(ip, chat):
    ip.user_ns["country"] = "Spain"
    ip.run_cell_magic("hfchat", f"--session {chat.name} --max-new-tokens 4", "Capital of {country}?")
    assert chat.turns[-1].user == "Capital of {country}?"
    ip.run_cell_magic("hfchat", f"--session {chat.name} --max-new-tokens 4 -i", 'Capital of {country}? {"x": 1}')
    assert chat.turns[-1].user == 'Capital of Spain? {"x": 1}'


@pytest.mark.integration
def test_errors_keep_session_transcript_and_model(ip, chat, capsys):
    model, turns = chat.chat_model, list(chat.turns)
    ip.run_cell_magic("hfchat", f"--session {chat.name} -m no-such-org/no-such-model", "Hello?")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no-such-org/no-such-model" in err and "Traceback" not in err
    assert chat.chat_model is model and chat.turns == turns
    ip.run_cell_magic("hfchat", f"--session {chat.name} --max-new-tokens 12 -m default", "Capital of France?")
    assert chat.chat_model is model  # same settings: no reload
    assert len(chat.turns) == len(turns) + 1 and chat.turns[-1].reply


@pytest.mark.integration
@pytest.mark.parametrize("device", ["banana", "cuda:99"])
def test_a_device_this_machine_lacks_is_one_line_and_keeps_the_session(ip, chat, capsys, device):
    model, turns = chat.chat_model, list(chat.turns)
    ip.run_cell_magic("hfchat", f"--session {chat.name} --device {device}", "Hello?")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and repr(device) in err and "Traceback" not in err
    assert chat.chat_model is model and chat.turns == turns


@pytest.mark.integration
def test_an_unknown_dtype_keeps_the_loaded_model(ip, chat, capsys):
    model, turns = chat.chat_model, list(chat.turns)
    ip.run_cell_magic("hfchat", f"--session {chat.name} --dtype float99", "Hello?")
    assert "bfloat16, float16, float32, auto" in capsys.readouterr().err
    assert chat.chat_model is model and chat.turns == turns and chat.spec == ModelSpec()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A local port that is bound but never listens: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.mark.integration
def test_an_endpoint_that_cannot_be_reached_leaves_the_session_on_its_model(ip, chat, capsys, closed_port):
    model, turns = chat.chat_model, list(chat.turns)
    url = f"http://127.0.0.1:{closed_port}"
    ip.run_cell_magic("hfchat", f"--session {chat.name} --endpoint-url {url}", "Hello?")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"Cannot reach {url}" in err and "Traceback" not in err
    assert "The session is still on default (pipeline)." in err
    assert chat.chat_model is model and chat.turns == turns and chat.spec == ModelSpec()
    ip.run_cell_magic("hfchat", f"--session {chat.name} --max-new-tokens 4", "Say hello again.")  # a plain cell
    assert chat.chat_model is model and len(chat.turns) == len(turns) + 1 and chat.turns[-1].reply


@pytest.mark.integration
def test_a_cell_over_the_context_window_is_refused_in_one_line(ip, chat, capsys):
    model, turns = chat.chat_model, list(chat.turns)
    ip.run_cell_magic("hfchat", f"--session {chat.name}", "word " * 9000)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "The prompt is " in err and "8,192" in err and "nothing was sent" in err
    assert "--history-limit N" in err and "%hfchat reset" in err
    assert chat.chat_model is model and chat.turns == turns


@pytest.mark.integration
def test_history_over_the_context_window_says_so_and_history_limit_gets_past_it(ip, chat, capsys, tmp_path):
    model = chat.chat_model
    ip.run_line_magic("hfchat", f"export {tmp_path / 'saved.json'} --session {chat.name}")
    long = {"turns": [{"user": "word " * 9000, "reply": "ok"}], "settings": {}}
    (tmp_path / "long.json").write_text(json.dumps(long))
    ip.run_line_magic("hfchat", f"load {tmp_path / 'long.json'} --session {chat.name}")
    try:
        capsys.readouterr()
        ip.run_cell_magic("hfchat", f"--session {chat.name} --max-new-tokens 4", "Say bye.")
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "The conversation so far is already" in err and "--history-limit" in err
        assert len(chat.turns) == 1
        ip.run_cell_magic("hfchat", f"--session {chat.name} --max-new-tokens 4 --history-limit 0", "Say bye.")
        assert capsys.readouterr().err == ""
        assert len(chat.turns) == 2 and chat.turns[-1].reply and chat.turns[-1].usage.input_tokens < 100
    finally:
        ip.run_line_magic("hfchat", f"load {tmp_path / 'saved.json'} --session {chat.name}")
    assert chat.chat_model is model


@pytest.mark.integration
def test_cells_and_reset_while_another_thread_streams_are_one_line_each(ip, chat, capsys):
    model, before = chat.chat_model, list(chat.turns)
    held = HeldReply(chat, "Count from 1 to 20.", max_new_tokens=16)
    try:
        ip.run_cell_magic("hfchat", f"--session {chat.name} --new", "Start over.")
        ip.run_cell_magic("hfchat", f"--session {chat.name} --dtype float32", "Load another.")
        ip.run_cell_magic("hfchat", f"--session {chat.name}", "Me too.")
        ip.run_line_magic("hfchat", f"reset --session {chat.name}")
        err = capsys.readouterr().err
        lines = err.splitlines()
        assert len(lines) == 4 and all(line.startswith("Error: A reply is being generated") for line in lines)
        assert chat.chat_model is model and chat.turns == before
    finally:
        held.release()
    assert held.error is None and held.models_seen == {id(model)}
    assert chat.chat_model is model and chat.spec == ModelSpec()
    assert [t.user for t in chat.turns] == [t.user for t in before] + ["Count from 1 to 20."]
    assert chat.turns[-1].reply


@pytest.mark.integration
def test_notebook_display_streams_through_a_handle(ip, chat, magics):
    magics.display_mode = "notebook"
    with capture_output() as captured:
        ip.run_cell_magic("hfchat", f"--session {chat.name} --max-new-tokens 24", "Count from 1 to 10.")
    first, last = captured.outputs[0], captured.outputs[-1]
    assert captured._outputs[0]["transient"]["display_id"]  # a display handle...
    assert captured._outputs[-1]["update"]  # ...updated in place with the final reply
    assert set(last.data) == {"text/plain", "text/markdown", "text/html"}
    assert last.metadata["hf_magic"]["usage"]["output_tokens"] > 0
    assert "▌" in first.data["text/plain"]


@pytest.mark.integration
def test_history_usage_status_export_load(ip, chat, tmp_path, capsys):
    ip.run_line_magic("hfchat", f"history --session {chat.name}")
    ip.run_line_magic("hfchat", f"usage --session {chat.name}")
    ip.run_line_magic("hfchat", f"status --session {chat.name}")
    out = capsys.readouterr().out
    assert "User: What is the capital of France?" in out
    assert f"{len(chat.turns)} turns: in " in out
    # The default model's dtype follows the CPU: bf16 where it is native, float32 where it would be emulated.
    dtype = str(chat.chat_model.llm.model.dtype).removeprefix("torch.")
    assert dtype == ("bfloat16" if cpu_computes_bf16() else "float32")
    assert "context length  8192" in out and f"dtype           {dtype}" in out
    ip.run_line_magic("hfchat", f"export {tmp_path / 'chat.json'} --session {chat.name}")
    ip.run_line_magic("hfchat", f"export {tmp_path / 'chat.md'} --session {chat.name}")
    exported = json.loads((tmp_path / "chat.json").read_text())
    assert exported["turns"][0]["user"] == "What is the capital of France?"
    messages = exported["messages"]
    assert messages == [
        message
        for turn in chat.turns
        for message in ({"role": "user", "content": turn.user}, {"role": "assistant", "content": turn.reply})
    ]
    # what other tools do with it: the model's own chat template reads it as is
    prompt = chat.chat_model.llm.tokenizer.apply_chat_template(messages, tokenize=False)
    assert chat.turns[-1].reply in prompt
    assert "**Assistant**" in (tmp_path / "chat.md").read_text()
    other = session_name()
    ip.run_line_magic("hfchat", f"load {tmp_path / 'chat.json'} --session {other}")
    assert [t.user for t in get_session(other).turns] == [t.user for t in chat.turns]


@pytest.mark.integration
def test_kernel_interrupt_keeps_the_partial_reply(ip, chat, capsys):
    fired = threading.Event()

    def interrupt_on_first_token(event) -> None:
        if event.kind == "token" and not fired.is_set():
            fired.set()
            _thread.interrupt_main()  # what a kernel interrupt (SIGINT) does to the running cell

    unsubscribe = chat.subscribe(interrupt_on_first_token)
    try:
        ip.run_cell_magic("hfchat", f"--session {chat.name} --max-new-tokens 48", "Write a long poem about rivers.")
    finally:
        unsubscribe()
    turn = chat.turns[-1]
    assert turn.interrupted and turn.reply
    assert "[interrupted]" in capsys.readouterr().out
    ip.run_cell_magic("hfchat", f"--session {chat.name} --max-new-tokens 12", "Which city is France's capital?")
    assert chat.turns[-1].reply and not chat.turns[-1].interrupted


@pytest.mark.integration
def test_new_starts_a_fresh_conversation_and_unload_frees_the_model(ip, capsys):
    name = session_name()
    ip.run_cell_magic("hfchat", f"--session {name} --max-new-tokens 4", "Hi")
    ip.run_cell_magic("hfchat", f"--session {name} --max-new-tokens 4 --new", "Hello")
    session = get_session(name)
    assert [t.user for t in session.turns] == ["Hello"]
    ip.run_line_magic("hfchat", f"unload --session {name}")
    assert not session.loaded and "model unloaded" in capsys.readouterr().out


def test_panel_subcommand_shows_the_panel_over_the_same_session(ip):
    name = session_name()
    with capture_output() as captured:
        ip.run_line_magic("hfchat", f"panel --session {name}")
    assert any("application/vnd.jupyter.widget-view+json" in output.data for output in captured.outputs)
    assert get_session(name)._listeners  # the panel listens to the session %%hfchat cells use
