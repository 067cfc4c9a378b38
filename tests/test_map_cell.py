"""``%%hfchat --map``: bad input in one line before anything loads; on the default model in an IPython shell (the
new table, schema columns, a row over the context window, resume); and in a real kernel, interrupted and resumed."""

from __future__ import annotations

import json
import queue
import re
import time
import uuid
from typing import Any

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell
from pydantic import BaseModel

from hf_magic.notebook.session import get_session

REVIEWS = ["great value", "broke in a day", "it is fine", "awful support", "love it", "never again"]


class Verdict(BaseModel):
    positive: bool
    topic: str


@pytest.fixture(scope="module")
def ip() -> InteractiveShell:
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "hf_magic")
    shell.user_ns.update(reviews=pd.DataFrame({"review": REVIEWS}), Verdict=Verdict, empty=pd.DataFrame({"a": []}))
    return shell


def session_name() -> str:
    return f"map-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize(
    ("line", "cell", "says"),
    [
        ("--map nowhere", "Label {review}", "--map nowhere: no variable 'nowhere' in the notebook"),
        ("--map Verdict", "Label {review}", "Verdict is the class Verdict, not a table"),
        ("--map empty", "Label {a}", "empty is empty: there are no rows to send"),
        ("--map reviews", "Label {reveiw}", "{reveiw} is not a column of reviews: its columns are review"),
        ("--map reviews", "Label this", "The template uses no column of reviews"),
        ("--map reviews --schema nowhere", "Label {review}", "--schema nowhere: no variable 'nowhere'"),
        ("--map reviews --schema reviews", "Label {review}", "must be a pydantic model class"),
        ("--map reviews --concurrency 0", "Label {review}", "--concurrency must be a positive integer, got '0'"),
        ("--map reviews --concurrency many", "Label {review}", "--concurrency must be a positive integer, got 'many'"),
        ("--into label", "Hi", "--into works with --map only"),
        ("--concurrency 4", "Hi", "--concurrency works with --map only"),
    ],
)
def test_bad_input_is_one_error_line_and_nothing_loads(ip, capsys, line, cell, says):
    name = session_name()
    ip.run_cell_magic("hfchat", f"--session {name} {line}", cell)
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1, err
    assert not get_session(name).loaded


# ------------------------------------------------------------------ on the real model
@pytest.mark.integration
def test_a_map_cell_makes_a_new_table_and_a_run_again_resumes(ip, capsys):
    name = session_name()
    before = ip.user_ns["reviews"].copy()
    line = f"--session {name} --map reviews -o labeled --concurrency 4 --max-new-tokens 8"
    ip.run_cell_magic("hfchat", line, "Is this review positive or negative? Review: {review}")
    out = capsys.readouterr().out
    labeled = ip.user_ns["labeled"]
    pd.testing.assert_frame_equal(ip.user_ns["reviews"], before)  # DATA itself is never changed
    assert list(labeled.columns) == ["review", "reply", "error"] and labeled["error"].isna().all()
    assert all(isinstance(reply, str) and reply.strip() for reply in labeled["reply"])
    assert re.search(r"6 rows · [\d,]+ tokens · [\d.]+ s · [\d.]+ rows/s · stored in labeled", out), out
    session = get_session(name)
    assert session.loaded and session.turns == []
    ip.run_cell_magic("hfchat", line, "Is this review positive or negative? Review: {review}")
    assert "6 rows · 6 resumed" in capsys.readouterr().out
    pd.testing.assert_frame_equal(ip.user_ns["labeled"], labeled)


@pytest.mark.integration
def test_schema_fields_are_columns_and_a_row_over_the_context_window_fails_alone(ip, capsys):
    name = session_name()
    ip.user_ns["notes"] = pd.DataFrame({"note": ["Cheap and cheerful.", "word " * 9000, "It broke."]})
    line = f"--session {name} --map notes --schema Verdict -o verdicts --max-new-tokens 32"
    ip.run_cell_magic("hfchat", line, "Read this note and give a verdict: {note}")
    verdicts = ip.user_ns["verdicts"]
    assert list(verdicts.columns) == ["note", "positive", "topic", "error"]
    assert "tokens but" in verdicts["error"][1] and "shorten this row's values or the template" in verdicts["error"][1]
    for row in (0, 2):
        assert verdicts["error"][row] is None
        Verdict(positive=verdicts["positive"][row], topic=verdicts["topic"][row])
    assert "1 failed" in capsys.readouterr().out


# ----------------------------------------------------------------- in a real kernel
def _run(client: Any, code: str, timeout: float = 900, on_message: Any = None) -> dict[str, Any]:
    """Execute ``code`` and read its output until the kernel is idle: text streams, display data, errors."""
    msg_id = client.execute(code)
    seen: dict[str, Any] = {"stdout": "", "stderr": "", "plain": [], "error": None}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            message = client.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = message["msg_type"], message["content"]
        if on_message:
            on_message(message)
        if kind == "stream":
            seen[content["name"]] += content["text"]
        elif kind in ("display_data", "execute_result", "update_display_data"):
            seen["plain"].append(content["data"].get("text/plain", ""))
        elif kind == "error":
            seen["error"] = content["ename"]
        elif kind == "status" and content["execution_state"] == "idle":
            return seen
    raise TimeoutError(code)


@pytest.mark.integration
@pytest.mark.timeout(1800)
def test_interrupting_a_map_keeps_the_finished_rows_and_running_it_again_sends_the_rest(tmp_path):
    from jupyter_client.manager import KernelManager

    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(tmp_path))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=120)
        _run(client, "%load_ext hf_magic\nimport pandas as pd\nrows = pd.DataFrame({'n': list(range(12))})")
        cell = "%%hfchat --map rows -o out --concurrency 2 --max-new-tokens 12\nCount from {n} to {n}+5."
        interrupted = {"sent": False}

        def interrupt_once_two_rows_are_done(message: dict[str, Any]) -> None:
            # The rows bar's label is an ipywidgets Label: "2/12 · 0.5 rows/s · ..." arrives as a comm update.
            label = str(((message["content"].get("data") or {}).get("state") or {}).get("value", ""))
            done = re.match(r"(\d+)/12 · ", label)
            if done and int(done.group(1)) >= 2 and not interrupted["sent"]:
                interrupted["sent"] = True
                manager.interrupt_kernel()

        first = _run(client, cell, on_message=interrupt_once_two_rows_are_done)
        assert interrupted["sent"] and first["error"] is None, first
        assert "not sent: run it again to resume" in "".join(first["plain"])
        report = "import json\nprint(json.dumps({'done': int(out['reply'].notna().sum()), 'rows': len(out)}))"
        partial = json.loads(_run(client, report)["stdout"])
        assert partial["rows"] == 12 and 2 <= partial["done"] < 12
        second = _run(client, cell)
        assert f"12 rows · {partial['done']} resumed" in "".join(second["plain"])
        assert json.loads(_run(client, report)["stdout"]) == {"done": 12, "rows": 12}
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
