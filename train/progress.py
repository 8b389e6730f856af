"""One place that builds rich progress bars for training and export."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


def make_progress(*, transient: bool = False) -> Progress:
    """A progress bar on stderr; disabled when stderr is not a terminal and DEFTREC_PROGRESS is unset."""
    enabled = sys.stderr.isatty() or os.environ.get("DEFTREC_PROGRESS") == "1"
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TextColumn("eta"),
                    TimeRemainingColumn(), console=console, transient=transient, disable=not enabled)


def log(message: str) -> None:
    console.print(message, highlight=False)
