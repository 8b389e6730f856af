"""One place that builds progress displays for training and export: a rich bar on a terminal, plain
timestamped lines otherwise (CI logs, `| tee`), nothing with DEFTREC_PROGRESS=0."""

from __future__ import annotations

import os
import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


class LineProgress:
    """The subset of rich's Progress API used here, printing one line per task at most every `every` seconds."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.tasks: dict[int, dict] = {}

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        for task_id in self.tasks:
            self._emit(task_id)

    def add_task(self, description: str, total: float | None = None, **fields) -> int:
        task_id = len(self.tasks)
        now = time.perf_counter()
        self.tasks[task_id] = {"description": description, "total": total, "completed": 0, "fields": fields,
                               "started": now, "printed": now}
        return task_id

    def update(self, task_id: int, *, advance: float = 0, completed: float | None = None,
               total: float | None = None, **fields) -> None:
        task = self.tasks[task_id]
        if total is not None:
            task["total"] = total
        task["completed"] = completed if completed is not None else task["completed"] + advance
        task["fields"].update(fields)
        if time.perf_counter() - task["printed"] >= self.every:
            self._emit(task_id)

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def _emit(self, task_id: int) -> None:
        task = self.tasks[task_id]
        now = time.perf_counter()
        task["printed"] = now
        elapsed = now - task["started"]
        done, total = task["completed"], task["total"]
        eta = ""
        if total and done:
            eta = f" eta {max(0.0, elapsed * (total - done) / done):.0f}s"
        status = task["fields"].get("status", "")
        print(f"[{time.strftime('%H:%M:%S')}] {task['description']} {done:g}/{total if total else '?'} "
              f"{status} ({elapsed:.0f}s{eta})", file=sys.stderr, flush=True)


def make_progress(*, transient: bool = False) -> Progress | LineProgress:
    """A rich bar when stderr is a terminal; plain lines every 20 s otherwise; DEFTREC_PROGRESS=0 silences both."""
    setting = os.environ.get("DEFTREC_PROGRESS")
    enabled = setting != "0"
    if enabled and not sys.stderr.isatty():
        return LineProgress(every=float(os.environ.get("DEFTREC_PROGRESS_EVERY", "20")))
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TextColumn("eta"),
                    TimeRemainingColumn(), console=console, transient=transient, disable=not enabled)


def log(message: str) -> None:
    console.print(message, highlight=False)
