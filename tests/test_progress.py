"""Progress sinks: state, summaries, terminal text, widget bars collapsed into a summary line."""

from __future__ import annotations

import io

import pytest

from hf_magic.notebook.progress_views import ProgressState, TerminalProgress, WidgetProgress
from hf_magic.progress import ProgressEvent


def download(bar_id: int, name: str, current: float, total: float, done: bool = False) -> ProgressEvent:
    return ProgressEvent("download", name, current, total, unit="B", done=done, bar_id=bar_id)


def test_state_sums_download_bytes_over_files():
    state = ProgressState()
    state.update(download(1, "a.safetensors", 50, 100))
    state.update(download(2, "b.safetensors", 10, 300))
    assert state.download_bytes() == (60, 400)
    state.update(download(1, "a.safetensors", 100, 100, done=True))
    state.update(ProgressEvent("load", "Loading weights", 272, 272, done=True, bar_id=3))
    summary = state.summary()
    assert summary.startswith("Downloaded 2 files (110 B)")
    assert "Loading weights 272/272" in summary


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_progress_rewrites_one_line_then_prints_the_summary():
    out = Tty()
    view = TerminalProgress(out)
    view(download(1, "a.safetensors", 0, 100))
    view(download(1, "a.safetensors", 100, 100, done=True))
    view.close()
    text = out.getvalue()
    assert "\ra.safetensors: 100 B/100 B | total 100 B/100 B" in text
    assert text.endswith("✓ Downloaded 1 file (100 B) · " + text.rsplit("· ", 1)[1])
    assert text.count("\n") == 1


def test_terminal_progress_prints_only_the_summary_to_a_log():
    out = io.StringIO()
    view = TerminalProgress(out)
    view(download(1, "a.safetensors", 100, 100, done=True))
    view.close()
    assert out.getvalue().startswith("✓ Downloaded 1 file (100 B)")


def test_nothing_happened_prints_nothing():
    out = Tty()
    TerminalProgress(out).close()
    assert out.getvalue() == ""


def test_widget_progress_shows_a_bar_per_file_and_a_total_then_collapses():
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    InteractiveShell.instance()  # display() needs a shell to publish to
    with capture_output() as captured:
        view = WidgetProgress()
        view(download(1, "a.safetensors", 40, 100))
        view(download(2, "b.safetensors", 0, 100))
        rows = {key: bar for key, (bar, _label) in view._rows.items()}
        assert set(rows) == {1, 2, -1}
        assert rows[-1].description == "Total download"
        assert view._box.children[-1].children[0] is rows[-1]  # total stays last
        view(download(2, "b.safetensors", 100, 100, done=True))
        assert rows[2].value == 1.0 and rows[2].bar_style == "success"
        view.close()
    first, last = captured.outputs[0], captured.outputs[-1]
    assert "application/vnd.jupyter.widget-view+json" in first.data
    assert last.data["text/plain"].startswith("✓ Downloaded 2 files (140 B)")


@pytest.mark.integration
def test_download_from_a_real_hub_reports_bytes_per_file_then_weight_loading(olah_env):
    from hf_magic import HuggingFacePipeline

    events: list[ProgressEvent] = []
    out = io.StringIO()
    view = TerminalProgress(out)

    def record(event: ProgressEvent) -> None:
        events.append(event)
        view(event)

    llm = HuggingFacePipeline.from_model_id(olah_env.repo_id, progress=record)
    view.close()
    assert llm.model_name == olah_env.repo_id
    finished = {e.label: e for e in events if e.stage == "download" and e.done}
    assert finished["model-00001-of-00003.safetensors"].current == finished["model-00001-of-00003.safetensors"].total
    assert finished["model-00001-of-00003.safetensors"].unit == "B"
    assert {"config.json", "tokenizer.json", "model-00003-of-00003.safetensors"} <= set(finished)
    assert len({e.bar_id for e in events if e.stage == "download"}) == len(finished)  # one bar per file
    assert any(e.stage == "load" and e.done for e in events)
    summary = out.getvalue()
    assert summary.startswith(f"✓ Downloaded {len(finished)} files (") and "Loading weights" in summary

    # Cached now: a second load downloads nothing.
    events.clear()
    HuggingFacePipeline.from_model_id(olah_env.repo_id, progress=events.append)
    assert not [e for e in events if e.stage == "download"]


def test_widget_progress_from_download_threads_displays_one_box():
    from concurrent.futures import ThreadPoolExecutor

    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    InteractiveShell.instance()
    with capture_output() as captured:
        view = WidgetProgress()
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda i: view(download(i, f"file{i}", 10, 10, done=True)), range(1, 33)))
        view.close()
    widgets_shown = [o for o in captured.outputs if "application/vnd.jupyter.widget-view+json" in o.data]
    assert len(widgets_shown) == 1
    assert captured.outputs[-1].data["text/plain"].startswith("✓ Downloaded 32 files (320 B)")


def test_widget_progress_in_a_container_draws_there_and_stays_complete():
    import ipywidgets as widgets
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    InteractiveShell.instance()
    box = widgets.VBox()
    with capture_output() as captured:
        view = WidgetProgress(box)  # how the panel shows a load in its Model tab
        view(download(1, "a.safetensors", 40, 100))
        first_line = box.children[0]
        view(ProgressEvent("download", "Fetching 2 files", 0, 2, bar_id=9))  # hub's counter: no bar of its own
        view(download(2, "b.safetensors", 10, 100))
        view(ProgressEvent("load", "Loading weights", 3, 10, bar_id=3))
        view.close()
    assert captured.outputs == []  # nothing displayed outside the container
    descriptions = [line.children[0].description for line in box.children]
    assert descriptions == ["a.safetensors", "b.safetensors", "Loading weights", "Total download"]
    assert box.children[0] is first_line  # rows added later leave the drawn ones in place
    assert all(line.children[0].bar_style == "success" for line in box.children)


def test_forwarding_bars_start_no_monitor_thread(monkeypatch):
    # tqdm starts its TMonitor under its class lock; a bar collected during that thread's start-up deadlocks
    import threading

    from tqdm import std

    from hf_magic.progress import event_tqdm

    monkeypatch.setattr(std.tqdm, "monitor", None)  # as in a fresh process: no monitor running yet
    before = {thread for thread in threading.enumerate() if isinstance(thread, std.TMonitor)}
    events: list[ProgressEvent] = []
    with event_tqdm(events.append, "download")(total=3, desc="a.bin") as bar:
        bar.update(2)
    started = {thread for thread in threading.enumerate() if isinstance(thread, std.TMonitor)} - before
    assert started == set() and events[-1].done and events[-1].current == 2
