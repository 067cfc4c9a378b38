"""The notebook as tools (``--tools notebook``): the user's variables, one variable described, a cell's code, output
or error, and Python run in the kernel (only after the user approves each run).

Values are shown the way ``-i`` shows them (variables.py: bounded tables for DataFrames, previews for arrays), and
a cell's error as ``{Err[n]}`` shows it (cell_errors.py)."""

from __future__ import annotations

import ast
import traceback
from collections.abc import Mapping
from typing import Any, Literal

from langchain_core.tools import StructuredTool, ToolException

from .tool_loop import LoopTool
from .variables import describe_value, markdown_table

NOTEBOOK = "notebook"
"""The name that stands for these tools in ``--tools`` and ``%hfchat tools add``."""
MAX_VARIABLES = 100
TRACEBACK_FRAMES = 3


def notebook_tools(shell: Any, cell_errors: Mapping[int, str]) -> list[LoopTool]:
    """The four notebook tools over ``shell`` (an IPython shell) and the errors its cells raised."""

    def list_variables() -> str:
        """List the variables defined in the user's notebook: name, type, and shape or length."""
        rows = [[name, type(value).__name__, _size(value)] for name, value in _user_variables(shell).items()]
        if not rows:
            return "The notebook defines no variables yet."
        more = f"\n\n({len(rows) - MAX_VARIABLES} more not shown)" if len(rows) > MAX_VARIABLES else ""
        return markdown_table(["name", "type", "shape or length"], rows[:MAX_VARIABLES]) + more

    def describe_variable(name: str) -> str:
        """Describe one variable of the user's notebook: a DataFrame or array as a bounded table with its shape and
        dtypes, any other value as text.

        Args:
            name: the variable's name, as list_variables gives it.
        """
        variables = _user_variables(shell)
        if name not in variables:
            raise ToolException(f"The notebook has no variable {name!r}: list_variables shows those it has.")
        value = variables[name]
        return f"{name}: {type(value).__name__}\n{describe_value(value)}"

    def read_cell(number: int, part: Literal["code", "output", "error"] = "code") -> str:
        """Read a cell of the user's notebook by its execution count: its code, its output, or the error it raised.

        Args:
            number: the cell's execution count, the n in In[n].
            part: "code" (In[n]), "output" (Out[n], the value of its last line) or "error" (what it raised).
        """
        if part == "code":
            inputs = shell.user_ns.get("In") or []
            if not 0 < number < len(inputs):
                raise ToolException(f"There is no cell {number}: the last one run is {len(inputs) - 1}.")
            return str(inputs[number])
        if part == "output":
            outputs = shell.user_ns.get("Out") or {}
            if number not in outputs:
                raise ToolException(f"Cell {number} has no output value (it may have printed instead).")
            return describe_value(outputs[number])
        if number not in cell_errors:
            raise ToolException(f"Cell {number} raised no error.")
        return cell_errors[number]

    def run_code(code: str) -> str:
        """Run Python code in the user's notebook kernel. Returns what it printed and the value of its last line.
        Variables it defines stay in the notebook.

        Args:
            code: the Python code to run.
        """
        return _run(shell, code)

    def build(function: Any) -> StructuredTool:
        return StructuredTool.from_function(function, parse_docstring=True)

    return [
        LoopTool(build(list_variables), source=NOTEBOOK),
        LoopTool(build(describe_variable), source=NOTEBOOK),
        LoopTool(build(read_cell), source=NOTEBOOK),
        LoopTool(build(run_code), needs_approval=True, source=NOTEBOOK),
    ]


def _user_variables(shell: Any) -> dict[str, Any]:
    """The user's own names, as ``%who`` lists them: not IPython's, not private, not modules."""
    import types

    hidden = getattr(shell, "user_ns_hidden", {})
    return {
        name: value
        for name, value in shell.user_ns.items()
        if not name.startswith("_") and name not in hidden and not isinstance(value, types.ModuleType)
    }


def _size(value: Any) -> str:
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple):
        return " x ".join(str(n) for n in shape) if shape else "scalar"
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        return ""
    try:
        return str(len(value))
    except TypeError:
        return ""


def _run(shell: Any, code: str) -> str:
    """Run ``code`` (IPython syntax: magics work) in the user's namespace; the last line's value is returned with
    what was printed. Rich output (plots, tables) shows in the cell as it would."""
    from IPython.utils.capture import capture_output

    source = shell.transform_cell(code)
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ToolException(f"SyntaxError: {exc.msg} (line {exc.lineno})") from exc
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    value: Any = None
    with capture_output(display=False) as captured:
        try:
            exec(compile(ast.Module(tree.body, type_ignores=[]), "<run_code>", "exec"), shell.user_ns)
            if last is not None:
                value = eval(compile(ast.Expression(last.value), "<run_code>", "eval"), shell.user_ns)
        except Exception as exc:
            printed = _printed(captured.stdout, captured.stderr)
            lines = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-TRACEBACK_FRAMES)
            raise ToolException(f"{printed}{''.join(lines).rstrip()}") from exc
    result = _printed(captured.stdout, captured.stderr)
    if value is not None:
        result += describe_value(value)
    return result.rstrip() or "(the code ran; it printed nothing and its last line has no value)"


def _printed(stdout: str, stderr: str) -> str:
    text = stdout + (f"[stderr]\n{stderr}" if stderr else "")
    return text if not text or text.endswith("\n") else text + "\n"
