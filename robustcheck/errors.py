"""Errors that robustcheck reports to users: one message naming the file, the field and the fix."""

from __future__ import annotations

import re
from pathlib import Path

_SCRIPT_PREAMBLE = "The following operation failed in the TorchScript interpreter"
_ERROR_LINE = re.compile(r"^(?:builtins\.)?([A-Za-z_][\w.]*(?:Error|Exception|Exit)): (.*)$")


def exception_text(exc: BaseException) -> str:
    """``Type: first line`` of an exception, for messages. For an exception raised inside a
    TorchScript model, the model's own exception and text, not the interpreter's preamble."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if lines and lines[0].startswith(_SCRIPT_PREAMBLE):
        for line in reversed(lines):
            found = _ERROR_LINE.match(line)
            if found:
                return f"{found.group(1)}: {found.group(2)} (raised inside the TorchScript model)"
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


class RobustcheckError(Exception):
    """Base class for every error meant for the user, never for a traceback."""

    kind = "error"

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        field: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.field = field
        self.fix = fix
        self.nominal: dict[str, object] | None = None  # a failed sanity gate's figures
        super().__init__(self.render())

    def render(self) -> str:
        where = ": ".join(part for part in (self.file, self.field) if part)
        text = f"{where}: {self.message}" if where else self.message
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


class SpecError(RobustcheckError):
    """The spec file is malformed: unknown key, wrong type, missing entry."""

    kind = "spec error"


class DataError(RobustcheckError):
    """A data file is missing, unreadable, or does not match the spec."""

    kind = "data error"


class ModelError(RobustcheckError):
    """A model cannot be loaded, or does not accept the spec's inputs."""

    kind = "model error"
