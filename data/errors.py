"""The one error type that bad input raises; the CLI prints it on one line and exits 2."""

from __future__ import annotations

from pathlib import Path


class DeftrecError(Exception):
    """A user-facing problem: what is wrong, where, and what to do."""

    def __init__(self, problem: str, *, path: str | Path | None = None, line: int | None = None,
                 hint: str | None = None) -> None:
        self.problem = problem
        self.path = str(path) if path is not None else None
        self.line = line
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path + (f":{self.line}" if self.line is not None else "") + ": "
        text = f"{where}{self.problem}"
        if self.hint:
            text += f" ({self.hint})"
        return " ".join(text.split())  # guarantee a single line


class DataError(DeftrecError):
    """Bad or unusable dataset input."""


class RunError(DeftrecError):
    """A run directory that is missing, incomplete or incompatible."""
