"""The tool loop on real models: the default model in-process with a forced tool choice (a 135M model does not choose
tools well, so the first step is constrained to the call), with the notebook tools and an MCP server's tools; and a
multi-step loop against a real vLLM server with its hermes tool parser.

What is asserted holds on every machine: the call's name, that its arguments fit the tool, that its result is what
the tool returns for them, prompt token counts (from the tokenizer) and how the turn is recorded; never the words.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from hf_magic import ChatHuggingFace, HuggingFaceEndpoint
from hf_magic.notebook.session import ChatSession, get_session
from hf_magic.notebook.session_tools import function_tool
from hf_magic.notebook.tool_loop import MAX_STEPS_REACHED, LoopTool, ToolLoop
from tests.support.mcp_server import STDIO_COMMAND
from tests.support.tool_functions import ADD_SOURCE, add
from tests.support.vllm import VllmServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ip(hf_shell: InteractiveShell, chat_model: ChatHuggingFace) -> InteractiveShell:
    hf_shell.run_cell(ADD_SOURCE)
    hf_shell.run_cell("import pandas as pd\nframe = pd.DataFrame({'city': ['Paris', 'Rome'], 'people': [2.1, 2.8]})")
    return hf_shell


def model_session(chat_model: ChatHuggingFace) -> ChatSession:
    """A session of its own on the session-wide default model (loaded once)."""
    session = get_session(f"model-tools-{uuid.uuid4().hex[:8]}")
    session.use_model(chat_model)
    return session


def cell(ip: InteractiveShell, session: ChatSession, line: str, text: str, mode: str = "terminal") -> Any:
    magics = ip.magics_manager.registry["HfChatMagics"]
    magics.display_mode = mode
    try:
        with capture_output() as captured:
            ip.run_cell_magic("hfchat", f"--session {session.name} --max-new-tokens 48 {line}", text)
    finally:
        magics.display_mode = "auto"
    return captured


def test_a_forced_call_runs_the_users_function_with_the_models_arguments(ip, chat_model) -> None:
    session = model_session(chat_model)
    captured = cell(ip, session, "--tools add --tool-choice add --max-steps 1 -o answer", "What is 17 plus 25?")
    turn = session.turns[-1]
    [step] = turn.steps
    [call] = step.calls
    assert call.name == "add" and set(call.args) == {"a", "b"}
    assert call.status == "ok" and call.result == str(call.args["a"] + call.args["b"])
    assert turn.finish_reason == MAX_STEPS_REACHED and turn.reply == ""
    assert "step limit" in captured.stdout and f'[tool] add {{"a": {call.args["a"]}' in captured.stdout
    assert ip.user_ns["answer"].response_metadata["tool_steps"][0]["calls"][0]["result"] == call.result


def test_the_next_step_sends_the_result_back_and_the_usage_adds_both_steps(ip, chat_model) -> None:
    one, two = model_session(chat_model), model_session(chat_model)
    cell(ip, one, "--tools add --tool-choice add --max-steps 1", "What is 17 plus 25?")
    cell(ip, two, "--tools add --tool-choice add --max-steps 2", "What is 17 plus 25?")
    first, both = one.turns[-1], two.turns[-1]
    assert first.usage is not None and both.usage is not None
    # Greedy and the same prompt: the forced first step is the same call; the second prompt repeats the first and
    # adds the call and its result, so the two prompts together hold more than twice the first.
    assert both.steps[0].calls[0].args == first.steps[0].calls[0].args
    assert both.usage.input_tokens > 2 * first.usage.input_tokens
    assert both.reply.strip() or both.finish_reason == MAX_STEPS_REACHED


def test_the_notebook_tools_list_the_users_variables(ip, chat_model) -> None:
    session = model_session(chat_model)
    cell(ip, session, "--tools notebook --tool-choice list_variables --max-steps 1", "What data do I have?")
    [call] = session.turns[-1].steps[0].calls
    assert call.name == "list_variables" and call.status == "ok"
    assert "| frame | DataFrame | 2 x 2 |" in (call.result or "")


def test_a_cell_draws_each_call_as_a_block_and_its_output_carries_the_steps(ip, chat_model) -> None:
    session = model_session(chat_model)
    captured = cell(ip, session, "--tools add --tool-choice add --max-steps 1", "What is 2 plus 2?", "notebook")
    final = captured.outputs[-1]
    assert 'class="hfm-tool hfm-tool-ok"' in final.data["text/html"] and "<code>add</code>" in final.data["text/html"]
    steps = final.metadata["hf_magic"]["steps"]
    assert steps[0]["calls"][0]["result"] == session.turns[-1].steps[0].calls[0].result
    # While it ran, the streaming view showed the call before the cell finished.
    assert any("hfm-tool" in output.data.get("text/html", "") for output in captured.outputs[:-1])


def test_an_mcp_servers_tool_on_the_default_model(ip, chat_model) -> None:
    session = model_session(chat_model)
    ip.run_line_magic("hfchat", f"mcp add notes --session {session.name} -- {' '.join(STDIO_COMMAND)}")
    try:
        cell(ip, session, "--tool-choice count_words --max-steps 1", "How many words are in: the quick brown fox?")
        [call] = session.turns[-1].steps[0].calls
        assert call.name == "count_words" and call.status == "ok"
        assert call.result == str(len(str(call.args["text"]).split()))
    finally:
        ip.run_line_magic("hfchat", f"mcp remove notes --session {session.name}")


# ------------------------------------------------------------------------------------- vLLM
def test_a_multi_step_loop_against_vllm(vllm_server: VllmServer) -> None:
    endpoint = HuggingFaceEndpoint(endpoint_url=vllm_server.url, max_new_tokens=64)

    def steps_of(max_steps: int) -> Any:
        session = ChatSession(f"vllm-tools-{uuid.uuid4().hex[:8]}")
        session.use_model(ChatHuggingFace(llm=endpoint, temperature=0))
        tools = [LoopTool(function_tool("add", add))]
        loop = ToolLoop(tools, tool_choice="add", max_steps=max_steps)
        return session, session.send("What is 17 plus 25? Use the add tool.", responder=loop)

    _, first = steps_of(1)
    session, turn = steps_of(4)
    [call] = turn.steps[0].calls
    # vLLM holds a forced call to the tool's schema (hermes parser, --tool-strict-level parameter).
    assert call.name == "add" and call.status == "ok" and call.result == str(call.args["a"] + call.args["b"])
    assert first.usage is not None and turn.usage is not None
    assert turn.usage.input_tokens > 2 * first.usage.input_tokens  # the server was asked again, with the result
    assert turn.reply.strip() or turn.finish_reason == MAX_STEPS_REACHED
    messages = session.chat_messages()
    assert [m["role"] for m in messages[:3]] == ["user", "assistant", "tool"]
    assert messages[2]["content"] == call.result and messages[2]["tool_call_id"] == messages[1]["tool_calls"][0]["id"]
