"""What the turn log (issue 26) costs a reply: writing one turn, measured alone (in an empty log and in one of
10,000 turns) and inside real ``%%hfchat`` cells on the default model, log on against log off.

``benchmarks/run.py --only log`` runs it as one section of the report; ``python benchmarks/log_write.py`` runs the
parts that need no model and prints them.
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REPLY = "The lighthouse keeper climbed the stairs each night and lit the lamp. " * 20  # ~1.4 kB, a long reply
WRITE_GOAL_MS = 20.0
"""p95 of one write: far under what a person notices after a reply of seconds."""

Add = Callable[..., None]


def _turn(index: int) -> Any:
    from hf_magic.backend import Usage
    from hf_magic.notebook.turns import ToolCall, ToolStep, Turn

    call = ToolCall(name="search", args={"q": f"query {index}"}, id=f"c{index}", result="a result", status="ok")
    return Turn(
        user=f"Question {index}: tell me about lighthouses.",
        reply=REPLY,
        reasoning="Thinking about it. " * 10,
        model="SmolLM2-135M-Instruct",
        usage=Usage(300, 120),
        finish_reason="stop",
        key=f"cell:{index}",
        time_to_first_token=0.1,
        duration=2.5,
        steps=[ToolStep(text="Let me look.", calls=[call])],
    )


def write_times(turns: int, prefill: int = 0) -> list[float]:
    """Seconds each of ``turns`` writes took, through a session's "turn_finished" event as in a cell, into a fresh
    log (holding ``prefill`` turns first)."""
    from hf_magic.notebook.kernel_log import KernelLog
    from hf_magic.notebook.session import ChatSession
    from hf_magic.notebook.turn_records import row_values
    from hf_magic.notebook.turns import SessionEvent

    with tempfile.TemporaryDirectory() as home, _environment(HF_MAGIC_HOME=home):
        log = KernelLog()
        if prefill:
            rows = [
                row_values(_turn(i), conversation=f"old{i // 20}", session="old", kernel="k", ended="finished",
                           logged_at=time.time())
                for i in range(prefill)
            ]  # fmt: skip
            log.store().write(rows)
        session = ChatSession("bench-log")
        log.follow(session)
        times = []
        for index in range(turns):
            turn = _turn(index)
            begin = time.perf_counter()
            session.emit(SessionEvent("turn_finished", turn=turn))
            times.append(time.perf_counter() - begin)
        assert log.store().count() == prefill + turns
        log.store().close()
        return times


@contextlib.contextmanager
def _environment(**values: str) -> Any:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def report_writes(add: Add, turns: int = 200) -> None:
    for prefill, label in ((0, "an empty log"), (10_000, "a log of 10,000 turns")):
        first, *rest = write_times(turns + 1, prefill)
        if not prefill:
            add("turn log", "first write of a process (opens the file, creates the tables)", f"{first * 1000:.1f} ms")
        times = sorted(rest)
        median, p95 = statistics.median(times) * 1000, times[int(len(times) * 0.95)] * 1000
        add(
            "turn log",
            f"write one turn into {label} (median / p95 / max of {turns}, synchronous=FULL)",
            f"{median:.2f} / {p95:.2f} / {times[-1] * 1000:.2f} ms",
            f"p95 <= {WRITE_GOAL_MS:g} ms",
            p95 <= WRITE_GOAL_MS,
        )


def report_cells(add: Add, chat: Any, cells: int = 5, new_tokens: int = 16) -> None:
    """Real ``%%hfchat`` cells on ``chat`` (the default model): how much of each cell's wall time went into writing
    its turn to the log. A share, not an on/off difference: on a busy machine the cells' own times vary by more
    than the whole write costs."""
    from IPython.core.interactiveshell import InteractiveShell

    from hf_magic.notebook.kernel_log import kernel_log
    from hf_magic.notebook.session import get_session

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "hf_magic")
    shell.run_line_magic("config", "HfChatMagics.log = True")
    get_session("bench-log").use_model(chat)
    cell_times: list[float] = []
    log_times: list[float] = []
    with tempfile.TemporaryDirectory() as home, _environment(HF_MAGIC_HOME=home):
        store = kernel_log().store()
        write = store.write

        def timed_write(rows: Any) -> Any:
            begin = time.perf_counter()
            try:
                return write(rows)
            finally:
                log_times.append(time.perf_counter() - begin)

        store.write = timed_write  # type: ignore[method-assign]  # this benchmark's instance only
        try:
            for cell in range(cells + 1):  # cell 0 warms up (and creates the file)
                begin = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    shell.run_cell_magic(
                        "hfchat", f"--session bench-log --max-new-tokens {new_tokens}", f"Cell {cell}: hi!"
                    )
                cell_times.append(time.perf_counter() - begin)
        finally:
            del store.write
        assert store.count() == cells + 1
    cell_ms = statistics.median(cell_times[1:]) * 1000
    log_ms = statistics.median(log_times[1:]) * 1000
    add(
        "turn log",
        f"%%hfchat cell, {new_tokens} new tokens: the log's write / the whole cell (median of {cells})",
        f"{log_ms:.1f} / {cell_ms:.0f} ms ({log_ms / cell_ms:.2%})",
        "< 1% of the cell",
        log_ms / cell_ms < 0.01,
    )


def section_log(models: Any, report: Any) -> None:
    """run.py's "log" section."""
    report_writes(report.add)
    report_cells(report.add, models.chat)


if __name__ == "__main__":

    def show(section: str, measure: str, value: str, goal: str = "", ok: bool | None = None) -> None:
        verdict = "" if ok is None else (" met" if ok else " NOT met")
        print(f"| {section} | {measure} | {value} | {goal} |{verdict} |")

    print("| section | measure | value | goal | |\n|---|---|---|---|---|")
    report_writes(show)
