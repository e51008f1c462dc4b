"""The spec parser's errors: one short call per error, and a collector for independent parts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from robustcheck.errors import SpecError
from robustcheck.schema import flatten_errors

_T = TypeVar("_T")


def error(
    file: str | Path, message: str, field: str | None = None, fix: str | None = None
) -> SpecError:
    """A SpecError of ``file`` at ``field`` (a dotted key path), with the ``fix`` to suggest."""
    return SpecError(message, file=file, field=field, fix=fix)


class Errors:
    """The errors of a spec's independent parts, collected instead of raised at the first."""

    def __init__(self) -> None:
        self.found: list[SpecError] = []

    def __len__(self) -> int:
        return len(self.found)

    def add(self, error: SpecError) -> None:
        self.found.extend(flatten_errors([error]))

    def attempt(self, run: Callable[..., _T], *args: Any) -> _T | None:
        """``run(*args)``; on a SpecError, None with the error recorded."""
        try:
            return run(*args)
        except SpecError as exc:
            self.add(exc)
            return None
