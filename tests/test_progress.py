"""The suite's progress output (fixtures/sharing.py ProgressBars): a long unit never leaves the
terminal or the log silent."""

from __future__ import annotations

import re
import time
from types import SimpleNamespace

from shiftcheck.fixtures.sharing import ProgressBars


def _wait_for(predicate, timeout_s: float = 5.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_a_log_gets_a_still_running_line_while_a_unit_is_slow(capfd, monkeypatch):
    monkeypatch.setenv("CI", "1")  # the log form, whatever the terminal
    bars = ProgressBars(SimpleNamespace(), tick_s=0.05, quiet_s=0.2)
    try:
        bars("tuned", "attention units", 0, 3)
        seen = []
        assert _wait_for(lambda: seen.append(capfd.readouterr().err) or "still running" in "".join(seen))
        assert "shiftcheck tuned: attention units 0/3, still running" in "".join(seen)
        bars("tuned", "attention units", 1, 3)  # a real update resets the quiet clock
        out = capfd.readouterr().err
        assert "attention units 1/3" in out and "still running" not in out
    finally:
        bars.close()
    time.sleep(0.3)
    assert "still running" not in capfd.readouterr().err  # closed: the ticker is gone


def test_a_terminal_bar_is_redrawn_between_updates(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    bars = ProgressBars(SimpleNamespace(), tick_s=0.05)
    bars._lines = False  # the terminal form (pytest's stderr is no terminal here)
    refreshed = []

    class Bar:
        n = 0

        def refresh(self):
            refreshed.append(time.monotonic())

        def close(self):
            refreshed.append("closed")

    bars._bars[("base", "importance units")] = Bar()
    bars("base", "ffn units", 0, 2)  # starts the ticker (and a real tqdm bar for this stage)
    try:
        assert _wait_for(lambda: sum(isinstance(t, float) for t in refreshed) >= 3)
    finally:
        bars.close()
    assert refreshed[-1] == "closed"  # close() closes what a failed stage left open


def test_workers_stay_silent(capfd):
    bars = ProgressBars(SimpleNamespace(workerinput={"workerid": "gw0"}), tick_s=0.05, quiet_s=0.05)
    bars("base", "importance units", 0, 2)
    time.sleep(0.3)
    bars.close()
    assert capfd.readouterr().err == ""


def test_progress_reaches_the_stream_it_was_built_on_while_fd_2_is_captured_later(tmp_path, monkeypatch):
    """pytest points fd 2 at its capture file while fixtures run; the bars keep writing to the
    stderr they were built on (the terminal or the CI log), from the ticker thread too."""
    import os

    monkeypatch.setenv("CI", "1")
    terminal, capture = tmp_path / "terminal", tmp_path / "capture"
    saved = os.dup(2)
    try:
        with open(terminal, "w") as t_file:
            os.dup2(t_file.fileno(), 2)
        bars = ProgressBars(SimpleNamespace(), tick_s=0.05, quiet_s=0.1)
        with open(capture, "w") as c_file:
            os.dup2(c_file.fileno(), 2)  # capture starts after the bars were built
        try:
            bars("base", "ffn units", 0, 2)
            bars("base", "ffn units", 1, 2)
            assert _wait_for(lambda: "still running" in terminal.read_text())
        finally:
            bars.close()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    assert "shiftcheck base: ffn units 1/2" in terminal.read_text()
    assert "shiftcheck" not in capture.read_text()


def test_quiet_stretches_without_an_open_stage_get_a_line_too(capfd, monkeypatch):
    """Before the first unit (the probes being built) and between stages there is no bar to
    redraw: after quiet_s a line says what was last seen, on a terminal as in a log."""
    monkeypatch.setenv("CI", "1")
    bars = ProgressBars(SimpleNamespace(), tick_s=0.05, quiet_s=0.2)
    try:
        seen = []
        assert _wait_for(lambda: seen.append(capfd.readouterr().err) or "preparing the probes" in "".join(seen))
        bars._lines = False  # the terminal form from here on
        bars("base", "ffn units", 2, 2)  # a stage that ends: its bar closes, none is open
        seen = []
        assert _wait_for(lambda: seen.append(capfd.readouterr().err) or "still running" in "".join(seen))
        assert "shiftcheck base: ffn units done; still running" in "".join(seen)
    finally:
        bars.close()


def test_a_quiet_step_before_any_bar_repeats_itself_until_done():
    """The plan's GGUF metadata read (14 s in a SmolLM2 run) was silent: the heartbeat repeats the
    step with its elapsed seconds, and stops with it."""
    import time

    from shiftcheck.fixtures.sharing import Heartbeat

    lines: list[str] = []
    with Heartbeat(lines.append, every_s=0.05) as beat:
        beat.step("reading the base checkpoint's config")
        assert _wait_for(lambda: len(lines) >= 3)
        beat.done("read it")
        n = len(lines)
        time.sleep(0.3)
        assert len(lines) == n  # no beat after the step is done
    assert lines[0] == "reading the base checkpoint's config" and lines[-1] == "read it"
    assert all(re.fullmatch(r"reading the base checkpoint's config: still running \(\d+ s\)", x) for x in lines[1:-1])
    with Heartbeat(None, every_s=0.01) as silent:  # an xdist worker: nothing, no thread
        silent.step("x")
        time.sleep(0.05)


def test_an_unannounced_step_is_said_only_when_it_is_slow():
    """The report's figures: quiet when quick (most runs), a line when a real model's run is slow."""
    import time

    from shiftcheck.fixtures.sharing import Heartbeat

    lines: list[str] = []
    with Heartbeat(lines.append, every_s=0.2) as beat:
        beat.step("writing the report", announce=False)
        beat.done()
        time.sleep(0.5)
    assert lines == []
    with Heartbeat(lines.append, every_s=0.05) as beat:
        beat.step("writing the report", announce=False)
        assert _wait_for(lambda: bool(lines))
        beat.done()
    assert lines[0].startswith("writing the report: still running (")
