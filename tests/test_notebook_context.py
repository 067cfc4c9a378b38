"""The notebook as context and canvas: {Err[n]}, %hfchat fix, -f code, rich variables, %hfchat restore.

Unit tests run a real IPython InteractiveShell over a replayed reply (tests/support/replay_backend.py), so what they
check (the new cell equals the reply's code blocks, the message names the big variable...) holds on any machine."""

from __future__ import annotations

import uuid
from typing import Any

import nbformat
import numpy
import pandas
import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import hf_magic.notebook.model_slot as model_slot
from hf_magic.backend import ChatRequest
from hf_magic.chat_models import ChatHuggingFace
from hf_magic.errors import ContextWindowError
from hf_magic.notebook.cell_errors import CellErrors
from hf_magic.notebook.code_blocks import code_cell_text, fenced_code
from hf_magic.notebook.magics import HfChatMagics
from hf_magic.notebook.restore import notebook_turns, running_notebook
from hf_magic.notebook.session import get_session
from hf_magic.notebook.variables import Limits, cut, describe_value
from tests.support.replay_backend import ReplayBackend

CODE_REPLY = "The divisor is zero.\n\n```python\nx = 1 / 2\nprint(x)\n```\n\nAnd a test:\n\n```\nassert x\n```\n"


class GuardedReplay(ReplayBackend):
    """A replayed reply behind a context-window guard of ``context_length`` characters (as the pipeline guards
    tokens): what a message grown too big by interpolation meets."""

    context_length = 2000

    def stream_chat(self, request: ChatRequest) -> Any:
        size = sum(len(str(message.get("content", ""))) for message in request.messages)
        if size >= self.context_length:
            raise ContextWindowError(size, self.context_length, model="replay")
        return super().stream_chat(request)


@pytest.fixture(scope="module")
def ip() -> InteractiveShell:
    shell = InteractiveShell.instance()
    if "hfchat" not in shell.magics_manager.magics["cell"]:
        shell.run_line_magic("load_ext", "hf_magic")
    return shell


@pytest.fixture
def magics(ip: InteractiveShell) -> HfChatMagics:
    return ip.magics_manager.registry["HfChatMagics"]


@pytest.fixture
def replies(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every session loads a replayed model; append to the list what the next replies say (default: CODE_REPLY)."""
    queue: list[str] = []

    def load(spec: Any, progress: Any = None) -> ChatHuggingFace:
        return ChatHuggingFace(llm=GuardedReplay([queue.pop(0) if queue else CODE_REPLY]))

    monkeypatch.setattr(model_slot, "load_chat_model", load)
    return queue


@pytest.fixture
def new_cells(ip: InteractiveShell, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """What the magic asked the frontend to put into new cells (ipykernel turns it into a set_next_input payload)."""
    calls: list[tuple[str, bool]] = []
    monkeypatch.setattr(ip, "set_next_input", lambda text, replace=False: calls.append((text, replace)))
    return calls


def session_name() -> str:
    return f"ctx-{uuid.uuid4().hex[:8]}"


# ----------------------------------------------------------------------------- code blocks
def test_fenced_code_uses_the_markdown_parser() -> None:
    assert fenced_code(CODE_REPLY) == ["x = 1 / 2\nprint(x)\n", "assert x\n"]
    assert code_cell_text(CODE_REPLY) == "x = 1 / 2\nprint(x)\n\nassert x"
    assert code_cell_text("Use `print(x)` inline, no block.") is None
    assert fenced_code("Cut short:\n```python\ndef f():\n    return 1") == ["def f():\n    return 1"]
    assert fenced_code("    indented code is not fenced\n") == []


def test_format_code_puts_the_code_blocks_into_a_new_cell_and_still_shows_the_reply(ip, replies, new_cells, capsys):
    name = session_name()
    ip.run_cell_magic("hfchat", f"--session {name} -f code", "Fix it.")
    turn = get_session(name).turns[-1]
    assert new_cells == [(code_cell_text(turn.reply), False)]
    assert "The divisor is zero." in capsys.readouterr().out  # the reply is shown as well


def test_format_code_without_a_code_block_says_so_and_adds_no_cell(ip, replies, new_cells, capsys):
    replies.append("No code needed: it is fine.")
    ip.run_cell_magic("hfchat", f"--session {session_name()} --format code", "Is it fine?")
    assert new_cells == []
    assert "The reply has no code block: no cell was added." in capsys.readouterr().out


def test_help_lists_the_new_options(magics):
    doc = magics.hfchat.__doc__
    assert "-f <{markdown,text,code}>, --format <{markdown,text,code}>" in doc
    assert "{Err[n]}" in doc and "fix" in doc and "restore [NOTEBOOK]" in doc


# ---------------------------------------------------------------------------------- errors
def test_err_n_is_the_exception_of_cell_n(ip, replies, new_cells, capsys):
    ip.run_cell("def divide(a, b):\n    return a / b\n", store_history=True)
    result = ip.run_cell("divide(1, 0)", store_history=True)
    count = result.execution_count
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    name = session_name()
    ip.run_cell_magic("hfchat", f"--session {name} -i", f"Why? {{Err[{count}]}} Code: {{In[{count}]}}")
    sent = get_session(name).turns[-1].user
    assert f"Cell [{count}] raised ZeroDivisionError: division by zero" in sent
    assert "return a / b" in sent and "Traceback (most recent call last)" in sent  # the last frames
    assert "run_code" not in sent  # from the cell's own code on: IPython's frame says nothing
    assert sent.endswith("Code: divide(1, 0)")


def test_an_unknown_err_n_is_one_line_and_nothing_is_sent(ip, replies, capsys):
    name = session_name()
    ip.run_cell_magic("hfchat", f"--session {name} -i", "Why? {Err[99999]}")
    err = capsys.readouterr().err
    assert err.startswith("Error: Cell [99999] raised no error that hf_magic saw") and err.count("\n") == 1
    assert get_session(name).turns == []


def test_fix_sends_the_last_error_and_its_code_and_offers_the_corrected_cell(ip, replies, new_cells, capsys):
    ip.run_cell("values = [1, 2]\nvalues[5]", store_history=True)
    name = session_name()
    ip.run_line_magic("hfchat", f"fix --session {name}")
    sent = get_session(name).turns[-1].user
    assert "IndexError: list index out of range" in sent
    assert "```python\nvalues = [1, 2]\nvalues[5]\n```" in sent and "corrected version" in sent
    assert new_cells == [(code_cell_text(CODE_REPLY), False)]


def test_fix_before_any_error_says_so_and_sends_nothing(replies, capsys, monkeypatch):
    shell = InteractiveShell.instance()
    magics = HfChatMagics(shell=shell)  # a fresh extension: no cell has failed since it was loaded
    monkeypatch.delattr("sys.last_exc", raising=False)
    monkeypatch.delattr("sys.last_value", raising=False)
    name = session_name()
    magics.hfchat(f"fix --session {name}")
    assert capsys.readouterr().out == "No error so far: run the cell that fails, then %hfchat fix.\n"
    assert get_session(name).turns == []


def test_an_error_from_before_the_extension_was_loaded_comes_from_sys(monkeypatch):
    errors = CellErrors()
    error = KeyError("missing")
    monkeypatch.setattr("sys.last_exc", error, raising=False)
    monkeypatch.setattr("sys.last_value", error, raising=False)
    last = errors.last()
    assert last is not None and last.error is error and last.code is None
    assert "The last cell raised KeyError" in last.describe() == str(errors)  # {Err}: the latest error


def test_unload_stops_recording_errors():
    shell = InteractiveShell.instance()
    magics = shell.magics_manager.registry["HfChatMagics"]
    shell.run_line_magic("unload_ext", "hf_magic")
    try:
        assert magics.cell_errors.record not in shell.events.callbacks["post_run_cell"]
    finally:
        shell.run_line_magic("load_ext", "hf_magic")
    fresh = shell.magics_manager.registry["HfChatMagics"]
    assert shell.events.callbacks["post_run_cell"].count(fresh.cell_errors.record) == 1


# ------------------------------------------------------------------------------- variables
def test_a_dataframe_is_a_bounded_markdown_table_with_shape_and_dtypes() -> None:
    frame = pandas.DataFrame({"city": [f"c{i}" for i in range(100)], "people": range(100)})
    text = describe_value(frame)
    assert text.startswith("DataFrame: 100 rows x 2 columns (showing the first 10 rows)")
    assert "|  | city | people |" in text and "| 9 | c9 | 9 |" in text and "| 10 |" not in text
    assert "dtypes: city: " in text and "people: int64" in text


def test_a_series_and_an_array_show_shape_dtype_and_a_preview() -> None:
    series = pandas.Series([1.5, 2.5], name="price")
    assert describe_value(series).startswith("Series 'price': 2 values, dtype float64")
    array = numpy.arange(10_000).reshape(100, 100)
    text = describe_value(array)
    assert text.startswith("ndarray: shape (100, 100), dtype int64") and "..." in text and len(text) < 1000


def test_long_values_are_cut_with_a_marker() -> None:
    assert describe_value("x" * 5000, Limits(chars=100)) == "x" * 100 + "… [cut: 4,900 more characters]"
    assert cut("short", 10) == "short"
    wide = pandas.DataFrame({"text": ["y" * 500]})
    assert "… [cut: 440 more characters]" in describe_value(wide)  # one long cell does not crowd the table


def test_interpolated_dataframe_reaches_the_model_as_a_table(ip, replies, new_cells):
    ip.user_ns["df"] = pandas.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    name = session_name()
    ip.run_cell_magic("hfchat", f"--session {name} -i", "Describe {df}")
    assert get_session(name).turns[-1].user == "Describe " + describe_value(ip.user_ns["df"])


def test_a_message_too_big_by_interpolation_names_the_variable(ip, replies, capsys):
    ip.user_ns["small"], ip.user_ns["big"] = "tiny", "z" * 3000
    name = session_name()
    ip.run_cell_magic("hfchat", f"--session {name} -i", "Compare {small} with {big}")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nothing was sent" in err
    assert "{big} is the biggest value in it (3,000 characters)" in err
    assert get_session(name).turns == []


# --------------------------------------------------------------------------------- restore
def _reply_output(session: str, user: str, reply: str) -> Any:
    metadata = {"hf_magic": {"user": user, "reply": reply, "model": "m", "session": session, "usage": None}}
    return nbformat.v4.new_output("display_data", data={"text/plain": reply}, metadata=metadata)


def test_restore_reads_the_turns_of_the_session_from_saved_outputs(ip, tmp_path, capsys):
    notebook = nbformat.v4.new_notebook()
    cells = [
        ("%%hfchat\nfirst", _reply_output("default", "first", "one")),
        ("%%hfchat --session other\nelsewhere", _reply_output("other", "elsewhere", "no")),
        ("%%hfchat --new\nagain", _reply_output("default", "again", "two")),
        ("%%hfchat\nnext", _reply_output("default", "next", "three\n```python\nx = {1}\n```")),
        ("print('plain code')", None),
    ]
    for source, output in cells:
        cell = nbformat.v4.new_code_cell(source)
        cell.outputs = [output] if output else []
        notebook.cells.append(cell)
    path = tmp_path / "saved.ipynb"
    nbformat.write(notebook, path)
    turns = notebook_turns(nbformat.read(path, as_version=4))
    assert [(t.user, t.reply) for t in turns] == [("again", "two"), ("next", "three\n```python\nx = {1}\n```")]
    assert turns[0].key == f"cell:{notebook.cells[2].id}"  # re-running that cell replaces its turn
    name = session_name()
    ip.run_line_magic("hfchat", f"restore {path} --session {name}")
    assert f"holds no saved %%hfchat reply of session {name!r}" in capsys.readouterr().err
    ip.run_line_magic("hfchat", f"restore {path} --session other")
    assert [t.user for t in get_session("other").turns] == ["elsewhere"]
    assert "restored 1 turns" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("what", "expected"),
    [
        ("missing", "No notebook at"),
        ("text", "is not a Jupyter notebook"),
        ("empty", "holds no saved %%hfchat reply of session"),
    ],
)
def test_restore_from_a_bad_path_is_one_line(ip, tmp_path, capsys, what, expected):
    path = tmp_path / "x.ipynb"
    if what == "text":
        path.write_text("not json")
    if what == "empty":
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")]), path)
    ip.run_line_magic("hfchat", f"restore {path}")
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and expected in err and err.count("\n") == 1


def test_restore_without_a_path_finds_the_running_notebook(tmp_path, monkeypatch):
    path = tmp_path / "mine.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), path)
    assert running_notebook({"__vsc_ipynb_file__": str(path)}, {}) == path
    assert running_notebook({}, {"JPY_SESSION_NAME": str(path)}) == path
    monkeypatch.chdir(tmp_path)  # Jupyter Server's path relative to its root; the kernel runs in the folder
    assert running_notebook({}, {"JPY_SESSION_NAME": "some/folder/mine.ipynb"}) == tmp_path / "mine.ipynb"
    assert running_notebook({}, {}) is None


def test_the_reply_output_carries_the_exchange_for_restore(ip, replies, magics, monkeypatch):
    monkeypatch.setattr(magics, "display_mode", "notebook")
    name = session_name()
    with capture_output() as captured:
        ip.run_cell_magic("hfchat", f"--session {name} --no-stream", "Show code.")
    record = captured.outputs[-1].metadata["hf_magic"]
    turn = get_session(name).turns[-1]
    assert (record["user"], record["reply"], record["session"]) == (turn.user, turn.reply, name)


# ------------------------------------------------------- in a real kernel, on the default model
def _execute(notebook: Any, folder: Any) -> list[dict[str, Any]]:
    """Run ``notebook`` in a fresh kernel in ``folder`` (nbclient, as nbconvert and nbval do); the execute replies
    of its cells, in order (what a frontend reads ``set_next_input`` payloads from)."""
    from nbclient import NotebookClient

    replies: list[dict[str, Any]] = []
    client = NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(folder)}},
        on_cell_executed=lambda cell, cell_index, execute_reply: replies.append(execute_reply),
    )
    client.execute()
    return replies


def _new_cell_payloads(execute_reply: dict[str, Any]) -> list[str]:
    payloads = execute_reply["content"].get("payload", [])
    return [payload["text"] for payload in payloads if payload.get("source") == "set_next_input"]


def _saved_reply(cell: Any) -> dict[str, Any]:
    return next(o for o in cell.outputs if "user" in o.get("metadata", {}).get("hf_magic", {}))["metadata"]["hf_magic"]


DUMP_TURNS = (
    "import json\nfrom hf_magic.notebook.session import get_session\n"
    "session = get_session()\n"
    "json.dump({{'system': session.settings.system_prompt, 'turns': [t.to_dict() for t in session.turns]}}, "
    "open({name!r}, 'w'))"
)


@pytest.mark.integration
@pytest.mark.timeout(1800)
def test_errors_fix_code_cells_and_restore_in_real_kernels(tmp_path):
    import json

    cells = [
        "%load_ext hf_magic",
        "%config HfChatMagics.max_new_tokens = 48",
        '%%hfchat -s "You are a helpful Python tutor."\nWhat is a list in Python? One sentence.',
        "values = [1, 2, 3]\nvalues[10]",
        "%hfchat fix",
        "%%hfchat -f code\nWrite a Python function that returns the square of a number.",
        "%%hfchat -i --max-new-tokens 8\nIn one word, what kind of error is this? {Err[4]}",
        DUMP_TURNS.format(name="first.json"),
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    notebook.cells[3].metadata["tags"] = ["raises-exception"]
    replies = _execute(notebook, tmp_path)
    saved = tmp_path / "saved.ipynb"
    nbformat.write(notebook, saved)

    assert notebook.cells[3].outputs[0]["ename"] == "IndexError"
    for index in (4, 5):  # %hfchat fix and -f code: a new cell holds exactly the code blocks of the reply shown
        reply = _saved_reply(notebook.cells[index])["reply"]
        expected = code_cell_text(reply)
        assert _new_cell_payloads(replies[index]) == ([] if expected is None else [expected])
        if expected is None:
            stdout = "".join(o.get("text", "") for o in notebook.cells[index].outputs if o.output_type == "stream")
            assert "The reply has no code block: no cell was added." in stdout
    fix = _saved_reply(notebook.cells[4])["user"]
    assert "IndexError: list index out of range" in fix and "values[10]" in fix
    assert "Cell [4] raised IndexError" in _saved_reply(notebook.cells[6])["user"]
    first = json.loads((tmp_path / "first.json").read_text())
    assert len(first["turns"]) == 4

    # After a restart: a fresh kernel rebuilds the conversation from the saved notebook alone.
    restore = ["%load_ext hf_magic", "%hfchat restore saved.ipynb", DUMP_TURNS.format(name="second.json")]
    restored_notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in restore])
    _execute(restored_notebook, tmp_path)
    assert "restored 4 turns from saved.ipynb" in restored_notebook.cells[1].outputs[0]["text"]
    second = json.loads((tmp_path / "second.json").read_text())
    compared = ("user", "reply", "model", "system_prompt", "usage", "finish_reason", "interrupted")
    assert [{k: t[k] for k in compared} for t in second["turns"]] == [
        {k: t[k] for k in compared} for t in first["turns"]
    ]
    assert second["system"] == first["system"] == "You are a helpful Python tutor."
    assert [t["key"] for t in second["turns"]] == [f"cell:{notebook.cells[i].id}" for i in (2, 4, 5, 6)]


@pytest.mark.integration
def test_the_pipelines_context_guard_names_the_interpolated_variable(ip, capsys):
    # The default model's own guard (8,192 tokens, counted by its tokenizer before any prefill).
    ip.user_ns["notes"] = "word " * 2000  # cut to 4,000 characters: the marker says so
    name = session_name()
    ip.run_cell_magic("hfchat", f"--session {name} -i --max-new-tokens 4", "word " * 9000 + "Summarise {notes}")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "The prompt is " in err and "8,192" in err and "nothing was sent" in err
    assert "{notes} is the biggest value in it (" in err and "notes.head() or a slice" in err
    session = get_session(name)
    assert session.loaded and session.turns == []
