"""Errors that robustcheck reports to users: one message naming the file, the field and the fix."""

from __future__ import annotations

from pathlib import Path


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
