"""The notebook tools (``--tools notebook``) on a real IPython shell: variables listed and described, cells read,
code run in the user's namespace."""

from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell
from langchain_core.tools import BaseTool, ToolException

from hf_magic.notebook.notebook_tools import notebook_tools
from hf_magic.notebook.tool_loop import LoopTool


@pytest.fixture
def ip(hf_shell: InteractiveShell) -> InteractiveShell:
    return hf_shell


@pytest.fixture
def tools(ip: InteractiveShell) -> dict[str, LoopTool]:
    magics = ip.magics_manager.registry["HfChatMagics"]
    return {tool.name: tool for tool in notebook_tools(ip, magics.cell_errors)}


def run(tool: LoopTool, **args: object) -> str:
    assert isinstance(tool.tool, BaseTool)
    return str(tool.tool.invoke(args))


def test_only_running_code_asks_first(tools: dict[str, LoopTool]) -> None:
    assert {name: tool.needs_approval for name, tool in tools.items()} == {
        "list_variables": False,
        "describe_variable": False,
        "read_cell": False,
        "run_code": True,
    }


def test_variables_are_listed_with_type_and_size_and_ipythons_own_are_not(
    ip: InteractiveShell, tools: dict[str, LoopTool]
) -> None:
    ip.run_cell("import numpy as np\nimport pandas as pd\nframe = pd.DataFrame({'a': range(12)})")
    ip.run_cell("grid = np.zeros((3, 4))")
    listing = run(tools["list_variables"])
    assert "| frame | DataFrame | 12 x 1 |" in listing and "| grid | ndarray | 3 x 4 |" in listing
    assert "| np |" not in listing and "| In |" not in listing and "get_ipython" not in listing


def test_a_dataframe_is_described_as_the_bounded_table_of_i(ip: InteractiveShell, tools: dict[str, LoopTool]) -> None:
    ip.run_cell("import pandas as pd\nframe = pd.DataFrame({'a': range(12)})")
    text = run(tools["describe_variable"], name="frame")
    assert text.startswith("frame: DataFrame\nDataFrame: 12 rows x 1 columns (showing the first 10 rows)")
    with pytest.raises(ToolException, match="no variable 'missing'"):
        run(tools["describe_variable"], name="missing")


def test_a_cells_code_output_and_error_are_read_by_number(ip: InteractiveShell, tools: dict[str, LoopTool]) -> None:
    ip.run_cell("40 + 2", store_history=True)
    number = ip.execution_count - 1
    ip.run_cell("1 / 0", store_history=True)
    failed = ip.execution_count - 1
    assert run(tools["read_cell"], number=number) == "40 + 2"
    assert run(tools["read_cell"], number=number, part="output") == "42"
    assert "ZeroDivisionError" in run(tools["read_cell"], number=failed, part="error")
    with pytest.raises(ToolException, match="raised no error"):
        run(tools["read_cell"], number=number, part="error")


def test_run_code_runs_in_the_users_namespace_and_returns_print_and_value(
    ip: InteractiveShell, tools: dict[str, LoopTool]
) -> None:
    result = run(tools["run_code"], code="made_by_tool = 7\nprint('hello')\nmade_by_tool * 6")
    assert result == "hello\n42" and ip.user_ns["made_by_tool"] == 7


def test_run_code_that_fails_reports_what_it_printed_and_the_error(tools: dict[str, LoopTool]) -> None:
    with pytest.raises(ToolException) as raised:
        run(tools["run_code"], code="print('before')\nundefined_name + 1")
    message = str(raised.value)
    assert message.startswith("before\n") and "NameError: name 'undefined_name' is not defined" in message
    with pytest.raises(ToolException, match="SyntaxError"):
        run(tools["run_code"], code="def (")
