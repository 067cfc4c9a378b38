"""A prompt over every row (notebook/row_map.py, row_tables.py, map_cell.py): tables in and out, the checks on bad
input, row keys and resume, and runs against a real local HTTP server whose replies depend on the request (rows
concurrent and bounded, 429 retried, one row's failure kept to that row, stop and resume)."""

from __future__ import annotations

import _thread
import json
import threading
from typing import Any

import pandas as pd
import polars as pl
import pytest
from pydantic import BaseModel

from hf_magic import ChatHuggingFace, HuggingFaceEndpoint, map_rows
from hf_magic.errors import InvalidInputError
from hf_magic.notebook.map_cell import MapPreview
from hf_magic.notebook.model_spec import ModelSpec
from hf_magic.notebook.progress_views import ProgressState
from hf_magic.notebook.row_map import NOT_SENT, ResultStore, plan_map, row_key, run_map
from hf_magic.notebook.row_tables import read_table, with_columns
from hf_magic.notebook.session import ChatSession
from hf_magic.progress import ProgressEvent
from tests.support.http_recorder import RecordingServer, Reply, chunk

REVIEWS = ["great value", "broke in a day", "fine", "awful support", "love it", "never again"]


class Label(BaseModel):
    sentiment: str
    stars: int


# ----------------------------------------------------------------------------- tables in and out
@pytest.mark.parametrize(
    ("data", "columns"),
    [
        (pd.DataFrame({"review": ["a", "b"], "id": [1, 2]}), ["review", "id"]),
        (pd.Series(["a", "b"], name="review"), ["review"]),
        (pd.Series(["a", "b"]), ["value"]),
        (pl.DataFrame({"review": ["a", "b"], "id": [1, 2]}), ["review", "id"]),
        (pl.Series("review", ["a", "b"]), ["review"]),
        (["a", "b"], ["value"]),
        (("a", "b"), ["value"]),
        ([{"review": "a"}, {"review": "b", "id": 2}], ["review", "id"]),
    ],
    ids=["pandas", "pandas-series", "unnamed-series", "polars", "polars-series", "list", "tuple", "dicts"],
)
def test_tables_are_read_as_named_rows(data, columns):
    table = read_table(data)
    assert table.columns == columns and len(table) == 2
    assert table.rows[0][columns[0]] == "a"


def test_the_new_table_is_a_copy_and_the_data_is_untouched():
    frame = pd.DataFrame({"review": ["a", "b"]})
    before = frame.copy()
    out = with_columns(read_table(frame), {"reply": ["x", None], "error": [None, "boom"]})
    pd.testing.assert_frame_equal(frame, before)
    assert list(out.columns) == ["review", "reply", "error"] and out["error"][1] == "boom"
    polars_frame = pl.DataFrame({"review": ["a", "b"]})
    polars_out = with_columns(read_table(polars_frame), {"reply": ["x", "y"], "error": [None, None]})
    assert polars_frame.columns == ["review"] and polars_out["reply"].to_list() == ["x", "y"]
    assert isinstance(with_columns(read_table(["a", "b"]), {"reply": ["x", "y"]}), pd.DataFrame)


# ---------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"data": {"review": "a"}}, "is a dict, not a table"),
        ({"data": "text"}, "is a str, not a table"),
        ({"data": pd.DataFrame({"review": []})}, "is empty"),
        ({"data": pl.DataFrame({"review": []})}, "is empty"),
        ({"data": []}, "is empty"),
        ({"template": "Label {reviw}"}, "{reviw} is not a column of DATA: its columns are review"),
        ({"template": "Label this"}, "uses no column of DATA"),
        ({"template": "  "}, "template is empty"),
        (
            {"schema": {"type": "object"}},
            "must be a pydantic model class (class Name(pydantic.BaseModel): ...), got a dict",
        ),
        (
            {"schema": Label(sentiment="a", stars=1)},
            "must be a pydantic model class (class Name(pydantic.BaseModel): ...), got a Label object",
        ),
        ({"schema": dict}, "got the class dict"),
        ({"concurrency": 0}, "positive integer, got 0"),
        ({"concurrency": -2}, "positive integer, got -2"),
        ({"concurrency": True}, "positive integer, got True"),
        ({"concurrency": 2.5}, "positive integer, got 2.5"),
        ({"data": pd.DataFrame({"review": ["a"], "reply": ["old"]})}, "already has a column 'reply'"),
        ({"data": pd.DataFrame({"review": ["a"], "error": [None]})}, "already has a column 'error'"),
        ({"schema": Label, "data": pd.DataFrame({"review": ["a"], "stars": [3]})}, "already has a column 'stars'"),
    ],
)
def test_bad_input_is_one_line_before_anything_runs(kwargs, says):
    arguments: dict[str, Any] = {"data": pd.DataFrame({"review": ["a"]}), "template": "Label {review}", **kwargs}
    with pytest.raises(InvalidInputError) as raised:
        plan_map(arguments.pop("data"), arguments.pop("template"), **arguments)
    assert says in str(raised.value) and "\n" not in str(raised.value)


def test_braces_that_are_no_field_stay_as_written():
    plan = plan_map(pd.DataFrame({"review": ["a"]}), 'Answer {"label": "..."} for {review}; {{literal}}')
    assert plan.columns_used == ["review"]


# ---------------------------------------------------------------------------------- row keys
def test_a_row_key_changes_with_model_template_settings_and_values_only():
    key = row_key("m", "Label {review}", {"temperature": 0}, {"review": "a"})
    assert key == row_key("m", "Label {review}", {"temperature": 0}, {"review": "a"})
    assert len({
        key,
        row_key("other", "Label {review}", {"temperature": 0}, {"review": "a"}),
        row_key("m", "Tag {review}", {"temperature": 0}, {"review": "a"}),
        row_key("m", "Label {review}", {"temperature": 1}, {"review": "a"}),
        row_key("m", "Label {review}", {"temperature": 0}, {"review": "b"}),
    }) == 5  # fmt: skip


def test_the_rows_bar_says_rows_rate_eta_and_tokens():
    state = ProgressState()
    bar = state.update(ProgressEvent("generate", "Rows", 3, 12, "rows", bar_id=-2, tokens=1234))
    bar.started -= 3.0  # three seconds in
    text = bar.text()
    assert text.startswith("3/12 · 1.00 rows/s · ETA 0:09") and text.endswith("1,234 tokens")


# ------------------------------------------------------------------ against a real HTTP server
def echo(body: dict[str, Any], delay: float = 0.0, text: str | None = None) -> Reply:
    """A streamed reply that repeats the row's message (usage included): which reply went to which row shows."""
    message = body["messages"][-1]["content"]
    usage = {**chunk(), "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}
    words = [chunk(text if text is not None else f"echo: {message}"), chunk(finish_reason="stop"), usage, "[DONE]"]
    return Reply(events=words, event_delay=delay)


@pytest.fixture
def server():
    server = RecordingServer(models=["served-model"]).start()
    try:
        yield server
    finally:
        server.stop()


def endpoint_chat(server: RecordingServer, **kwargs: Any) -> ChatHuggingFace:
    return ChatHuggingFace(llm=HuggingFaceEndpoint(endpoint_url=server.url, repo_id="served-model", **kwargs))


class CountingEndpoint(HuggingFaceEndpoint):
    """The real endpoint, counting the replies it streams at once (the server cannot tell when a client is done)."""

    def stream_chat(self, request: Any) -> Any:
        with COUNT_LOCK:
            IN_FLIGHT[0] += 1
            IN_FLIGHT[1] = max(IN_FLIGHT[1], IN_FLIGHT[0])
        try:
            yield from super().stream_chat(request)
        finally:
            with COUNT_LOCK:
                IN_FLIGHT[0] -= 1


COUNT_LOCK, IN_FLIGHT = threading.Lock(), [0, 0]  # now, most


def test_rows_go_concurrently_within_the_bound_and_each_gets_its_own_reply(server):
    server.respond = lambda body: echo(body, delay=0.05)
    chat = ChatHuggingFace(llm=CountingEndpoint(endpoint_url=server.url, repo_id="served-model"))
    frame = pd.DataFrame({"review": REVIEWS})
    out = map_rows(frame, "Label: {review}", chat_model=chat, concurrency=3, progress=False)
    assert out["reply"].tolist() == [f"echo: Label: {review}" for review in REVIEWS]
    assert out["error"].isna().all()
    assert 1 < IN_FLIGHT[1] <= 3


def test_a_row_told_to_wait_429_is_retried_and_the_others_go_on(server):
    refused: set[str] = set()

    def respond(body: dict[str, Any]) -> Reply:
        message = body["messages"][-1]["content"]
        if "broke" in message and message not in refused:
            refused.add(message)
            return Reply(status=429, body={"error": "slow down"}, headers={"retry-after": "0"})
        return echo(body)

    server.respond = respond
    out = map_rows(REVIEWS, "{value}", chat_model=endpoint_chat(server), concurrency=2, progress=False)
    assert out["error"].isna().all() and out["reply"][1] == "echo: broke in a day"
    assert len(server.posts()) == len(REVIEWS) + 1


def test_a_failing_row_gets_its_error_and_a_run_again_sends_only_it(server):
    broken = {"on": True}

    def respond(body: dict[str, Any]) -> Reply:
        if broken["on"] and "fine" in body["messages"][-1]["content"]:
            return Reply(status=500, body={"error": "server fault"})
        return echo(body)

    server.respond = respond
    store = ResultStore()
    chat = endpoint_chat(server, max_retries=0)
    plan = plan_map(pd.DataFrame({"review": REVIEWS}), "Label: {review}", concurrency=4)
    first = run_map(plan, chat, store=store)
    assert first.failed == 1 and first.sent == len(REVIEWS)
    errors = first.frame["error"].tolist()
    assert errors[2] and "\n" not in errors[2] and [e for i, e in enumerate(errors) if i != 2] == [None] * 5
    assert first.frame["reply"][2] is None
    broken["on"] = False
    posts = len(server.posts())
    again = run_map(plan, chat, store=store)
    assert (again.sent, again.resumed, again.failed) == (1, len(REVIEWS) - 1, 0)
    assert len(server.posts()) == posts + 1
    assert again.frame["reply"].tolist() == [f"echo: Label: {review}" for review in REVIEWS]
    assert run_map(plan, chat, store=store, resume=False).sent == len(REVIEWS)


def test_schema_fields_become_columns_and_invalid_output_is_that_rows_error(server):
    def respond(body: dict[str, Any]) -> Reply:
        message = body["messages"][-1]["content"]
        if "fine" in message:
            return echo(body, text="not JSON at all")
        return echo(body, text=json.dumps({"sentiment": message[-4:], "stars": len(message) % 5}))

    server.respond = respond
    frame = pl.DataFrame({"review": REVIEWS})
    out = map_rows(frame, "Rate: {review}", chat_model=endpoint_chat(server), schema=Label, progress=False)
    assert isinstance(out, pl.DataFrame) and out.columns == ["review", "sentiment", "stars", "error"]
    assert frame.columns == ["review"]
    row = out.row(2, named=True)
    assert row["sentiment"] is None and row["error"].startswith("Invalid structured output")
    assert out.row(0, named=True) == {"review": "great value", "sentiment": "alue", "stars": 2, "error": None}
    body = server.posts()[0].body
    assert body["response_format"]["type"] == "json_schema"


def test_ctrl_c_keeps_the_finished_rows_and_a_run_again_sends_the_rest(server):
    server.respond = lambda body: echo(body, delay=0.05)
    store = ResultStore()
    plan = plan_map(pd.DataFrame({"review": REVIEWS}), "Label: {review}", concurrency=1)

    def interrupt_after_two(event: ProgressEvent) -> None:
        if event.current == 2 and not event.done:  # the second row's event; the last (done) is not
            _thread.interrupt_main()  # what a kernel interrupt (SIGINT) does to the running cell

    stopped = run_map(plan, endpoint_chat(server), store=store, progress=interrupt_after_two)
    assert stopped.interrupted and stopped.sent >= 2 and stopped.left == len(REVIEWS) - stopped.sent
    assert stopped.frame["error"].tolist().count(NOT_SENT) == stopped.left
    assert "run it again to resume" in stopped.totals()
    finished = stopped.sent
    again = run_map(plan, endpoint_chat(server), store=store)
    assert (again.resumed, again.sent, again.left) == (finished, len(REVIEWS) - finished, 0)


def test_a_session_map_stops_on_stop_and_tells_listeners(server):
    server.respond = lambda body: echo(body, delay=0.05)
    session = ChatSession("map-test", spec=ModelSpec(model="served-model", backend="endpoint", endpoint_url=server.url))
    events: list[Any] = []
    session.subscribe(events.append)

    def stop_after_one(event: ProgressEvent) -> None:
        if event.current == 1 and not event.done:
            threading.Thread(target=session.stop).start()  # the panel's Stop, from another thread

    frame = pd.DataFrame({"review": REVIEWS * 2})
    out = map_rows(frame, "Label: {review}", session=session, concurrency=1, progress=stop_after_one)
    assert 1 <= out["reply"].notna().sum() < len(frame)
    finished = [event for event in events if event.kind == "map_finished"]
    assert len(finished) == 1 and finished[0].text == "Label: {review}"
    detail = finished[0].detail
    assert detail["rows"] == len(frame) and detail["left"] > 0 and json.loads(json.dumps(detail)) == detail
    assert session.turns == []  # a map records no turns


def test_the_preview_shows_the_first_rows_and_the_totals(server):
    server.respond = echo
    plan = plan_map(pd.DataFrame({"review": REVIEWS * 3}), "Label: {review}")
    run = run_map(plan, endpoint_chat(server), store=ResultStore())
    bundle = MapPreview(run, "labeled")._repr_mimebundle_()
    assert "<table" in bundle["text/html"] and "18 rows" in bundle["text/html"]
    assert "first 10 shown" in bundle["text/plain"] and "stored in labeled" in bundle["text/plain"]
    assert "rows/s" in run.totals() and "tokens" in run.totals()
