"""The contract of a data reader, and how a reader says that it streams.

A reader is called as ``read(path, keys, tree=None, max_events=None, start=0)`` and returns one
entry per key: a numpy array with one row per event, or a :class:`robustcheck.data.Jagged`
for a variable-length branch or column. A *streaming* reader reads the events ``start`` to
``start + max_events`` without reading the rest of the file, and says so with ``streams =
True``: a function through the :func:`reader` decorator, a class through a class attribute.
A reader that does not say so (a plain function of a plugin) reads whole files only, and
``chunk_size`` is refused for its files with a DataError.

This module imports nothing: a plugin may import it for the decorator alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Reader(Protocol):
    """What ``robustcheck_data_readers`` declarations point at (after :func:`as_reader`)."""

    streams: bool  # True: reads a range of events (``start``, ``max_events``) on its own

    def __call__(
        self,
        path: Path,
        keys: Sequence[str],
        tree: str | None = None,
        max_events: int | None = None,
        start: int = 0,
    ) -> dict[str, Any]: ...


class _Declared:
    """A read function with its ``streams`` flag: a :class:`Reader`."""

    def __init__(self, read: Callable[..., dict[str, Any]], streams: bool) -> None:
        self.read = read
        self.streams = streams
        self.__name__ = getattr(read, "__name__", type(read).__name__)
        self.__doc__ = read.__doc__
        self.__wrapped__ = read

    def __call__(
        self,
        path: Path,
        keys: Sequence[str],
        tree: str | None = None,
        max_events: int | None = None,
        start: int = 0,
    ) -> dict[str, Any]:
        if start and not self.streams:
            raise ValueError(f"{self.__name__} does not stream: it cannot start at event {start}")
        if self.streams:
            return self.read(path, keys, tree, max_events=max_events, start=start)
        return self.read(path, keys, tree, max_events=max_events)

    def __repr__(self) -> str:
        return f"<reader {self.__name__} streams={self.streams}>"


def reader(*, streams: bool) -> Callable[[Callable[..., dict[str, Any]]], Reader]:
    """Declare a read function a :class:`Reader`; ``streams=True`` when it takes ``start``."""

    def declare(read: Callable[..., dict[str, Any]]) -> Reader:
        return _Declared(read, streams)

    return declare


def as_reader(loaded: Any) -> Reader:
    """The :class:`Reader` of a loaded declaration: itself when it declares ``streams``, else
    a plain read function, which reads whole files only."""
    if isinstance(loaded, Reader) and isinstance(loaded.streams, bool):
        return loaded
    if not callable(loaded):
        raise TypeError(f"a data reader must be callable, got {loaded!r}")
    return _Declared(loaded, streams=False)
