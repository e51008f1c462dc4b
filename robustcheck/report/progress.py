"""A one-line progress indicator on stderr for the command line: what runs, and for how long.

Quiet when stderr is not a terminal or the ``CI`` environment variable is set. Inside pytest
robustcheck shows no progress of its own: pytest's verbose output already names the running
check, and a stray stderr line would be mixed into its captured output.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

SPINNER = "|/-\\"
INTERVAL = 0.25


def enabled(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    return not os.environ.get("CI") and bool(getattr(stream, "isatty", lambda: False)())


@contextmanager
def progress(label: str, stream: TextIO | None = None) -> Iterator[None]:
    """Show ``label`` with a spinner and the elapsed seconds while the block runs."""
    stream = stream or sys.stderr
    if not enabled(stream):
        yield
        return
    done = threading.Event()
    columns = shutil.get_terminal_size().columns
    started = time.perf_counter()
    width = 0

    def tick() -> None:
        nonlocal width
        step = 0
        while not done.wait(INTERVAL):
            elapsed = time.perf_counter() - started
            line = f"{SPINNER[step % len(SPINNER)]} {label} {elapsed:.1f} s"
            if len(line) >= columns:  # a wrapped line could not be rewritten in place
                line = line[: columns - 4] + "..."
            width = max(width, len(line))
            stream.write("\r" + line)
            stream.flush()
            step += 1

    thread = threading.Thread(target=tick, name="robustcheck-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        if width:
            stream.write("\r" + " " * width + "\r")
            stream.flush()
