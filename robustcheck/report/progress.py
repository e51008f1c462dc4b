"""Progress on stderr: a one-line spinner for the command line (what runs, for how long) and
a bar per attack and per evaluation of a sample (events done, rate, time left; tqdm).

Quiet when stderr is not a terminal, when the ``CI`` environment variable is set, in a
pytest-xdist worker, and inside pytest: there pytest's own output names the running check and
captures stderr. :func:`configure` overrides this: ``robustcheck run --progress`` writes the
bars to a stream that is not a terminal too, as lines (start, every ``LOG_INTERVAL`` seconds,
end); ``--no-progress`` and ``--quiet`` hide everything; ``pytest --robustcheck-progress``
shows the bars when stderr is a terminal, which under pytest means with ``-s``
(``--capture=no``).
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO, TypeVar

T = TypeVar("T")

SPINNER = "|/-\\"
INTERVAL = 0.25
BAR_DELAY = 0.5  # seconds before a bar appears: quick attacks and evaluations show none
TERMINAL_INTERVAL = 0.1  # seconds between updates of a bar on a terminal
LOG_INTERVAL = 30.0  # seconds between updates of a bar written to a stream that is no terminal

_choice: bool | None = None  # None: decide from the stream and the environment
_lock = threading.Lock()  # the spinner and the bars share one line of the terminal
_open_bars = 0


def configure(show: bool | None) -> None:
    """True: show the bars (``--progress``); False: show nothing (``--no-progress``,
    ``--quiet``); None: the default, decided per stream (see the module's docstring)."""
    global _choice
    _choice = show


def _is_terminal(stream: TextIO) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def _in_xdist_worker() -> bool:
    return bool(os.environ.get("PYTEST_XDIST_WORKER"))


def enabled(stream: TextIO | None = None) -> bool:
    """Whether the command line's spinner shows on ``stream`` (stderr by default)."""
    stream = stream or sys.stderr
    if _choice is False or _in_xdist_worker():
        return False
    return not os.environ.get("CI") and _is_terminal(stream)


def bars_enabled(stream: TextIO | None = None) -> bool:
    """Whether attack and evaluation bars show on ``stream`` (stderr by default)."""
    stream = stream or sys.stderr
    if _choice is False or _in_xdist_worker():
        return False
    in_pytest = "PYTEST_CURRENT_TEST" in os.environ
    if _choice is True:
        return _is_terminal(stream) or not in_pytest  # pytest's capture is no terminal
    return not in_pytest and not os.environ.get("CI") and _is_terminal(stream)


def spec_label(path: Path) -> str:
    """A short name for a spec in a bar: ``qg_jets`` for qg_jets/robustness.toml,
    ``pfn`` for pfn.robust.toml."""
    stem = path.name.split(".")[0]
    return path.resolve().parent.name if stem == "robustness" else stem


class _LogLines:
    """A stream for tqdm that is no terminal (a log file): each state of the bar on a line of
    its own instead of after a carriage return."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        for line in text.replace("\r", "\n").split("\n"):
            if line.strip():
                self.stream.write(line.rstrip() + "\n")

    def flush(self) -> None:
        self.stream.flush()


class ProgressBar:
    """A bar of ``total`` events (None: unknown) named ``label`` on stderr, when bars are on.

    ``advance`` is the callback that moves it on by a number of events (None when bars are
    off, so that a loop skips the call). The bar appears once it has been open for
    ``BAR_DELAY`` seconds, and on a terminal it is cleared when closed: by ``close``, at the
    end of a ``with`` block, or when the loop over ``over(items)`` ends or is abandoned.
    """

    def __init__(self, label: str, total: int | None, stream: TextIO | None = None) -> None:
        global _open_bars
        stream = stream or sys.stderr
        self._bar: Any = None
        self.advance: Callable[[int], None] | None = None
        if not bars_enabled(stream):
            return
        from tqdm import tqdm

        with _lock:
            _open_bars += 1
            if _spinner is not None:
                _spinner.clear()
        terminal = _is_terminal(stream)
        self._bar = tqdm(
            total=total,
            desc=label,
            unit="event",
            unit_scale=True,
            file=stream if terminal else _LogLines(stream),
            # in a log: the start, every LOG_INTERVAL and the end, on lines of their own
            leave=not terminal,
            delay=BAR_DELAY if terminal else 0.0,
            mininterval=TERMINAL_INTERVAL if terminal else LOG_INTERVAL,
            dynamic_ncols=terminal,
        )
        self.advance = self._bar.update

    def over(self, items: Iterable[T]) -> Iterator[T]:
        """``items`` one by one; the bar closes when they end or the loop is left."""
        try:
            yield from items
        finally:
            self.close()

    def close(self) -> None:
        global _open_bars
        if self._bar is None:
            return
        self._bar.close()
        self._bar, self.advance = None, None
        with _lock:
            _open_bars -= 1

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Spinner:
    """The spinner line: written by its thread, cleared when a bar takes the line."""

    def __init__(self, label: str, stream: TextIO) -> None:
        self.label, self.stream = label, stream
        self.width = 0
        self.columns = shutil.get_terminal_size().columns
        self.started = time.perf_counter()

    def draw(self, step: int) -> None:
        elapsed = time.perf_counter() - self.started
        line = f"{SPINNER[step % len(SPINNER)]} {self.label} {elapsed:.1f} s"
        if len(line) >= self.columns:  # a wrapped line could not be rewritten in place
            line = line[: self.columns - 4] + "..."
        self.width = max(self.width, len(line))
        self.stream.write("\r" + line)
        self.stream.flush()

    def clear(self) -> None:
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


_spinner: _Spinner | None = None


@contextmanager
def progress(label: str, stream: TextIO | None = None) -> Iterator[None]:
    """Show ``label`` with a spinner and the elapsed seconds while the block runs; it steps
    aside while an attack's bar shows."""
    global _spinner
    stream = stream or sys.stderr
    if not enabled(stream):
        yield
        return
    done = threading.Event()
    spinner = _Spinner(label, stream)

    def tick() -> None:
        step = 0
        while not done.wait(INTERVAL):
            with _lock:
                if not _open_bars:
                    spinner.draw(step)
            step += 1

    thread = threading.Thread(target=tick, name="robustcheck-progress", daemon=True)
    with _lock:
        _spinner = spinner
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        with _lock:
            _spinner = None
            spinner.clear()
