"""Progress off a terminal: a long loop is never silent, and never chatty."""

from __future__ import annotations

import io

from rich.console import Console

from peftbench.run import progress


def _progress(buffer: io.StringIO, **kwargs) -> progress.Progress:
    return progress.Progress(Console(file=buffer, force_terminal=False, width=200), **kwargs)


def test_a_long_loop_prints_step_loss_and_time_left(monkeypatch):
    monkeypatch.setattr(progress, "LINE_EVERY_SECONDS", 0.0)
    buffer = io.StringIO()
    with _progress(buffer) as shown, shown.steps("finetune epoch 1/2", 3) as advance:
        advance(loss=0.6931)
        advance(loss=0.5)
        advance(loss=0.4)  # the last step prints nothing: the epoch's own line follows
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("finetune epoch 1/2: step 1/3, loss 0.6931, ") and lines[0].endswith(" s left")
    assert "step 2/3, loss 0.5000" in lines[1]


def test_lines_come_at_most_every_interval_and_never_when_quiet(monkeypatch):
    monkeypatch.setattr(progress, "LINE_EVERY_SECONDS", 3600.0)
    buffer = io.StringIO()
    with _progress(buffer) as shown, shown.steps("epoch", 100) as advance:
        for _ in range(99):
            advance()
    monkeypatch.setattr(progress, "LINE_EVERY_SECONDS", 0.0)
    with _progress(buffer, quiet=True) as shown, shown.steps("epoch", 100) as advance:
        for _ in range(99):
            advance(loss=1.0)
    assert buffer.getvalue() == ""
