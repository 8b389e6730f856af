"""Small messages that workers post to the UI thread (workers never touch widgets)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message


@dataclass
class ModelLoaded(Message):
    """The model is loaded; kernel_drift says where this machine would write the run's texts otherwise (or None)."""

    seconds: float
    kernel_drift: str | None = None


@dataclass
class TextChunk(Message):
    """A piece of the preference text as it is generated."""

    user_idx: int
    text: str


@dataclass
class ExplanationReady(Message):
    """The result for a user: cached (trajectory may follow) or live."""

    user_idx: int
    explanation: object  # engine.services.session.Explanation


@dataclass
class WorkFailed(Message):
    """A worker's error, shown in a dialog; the app keeps running."""

    title: str
    error: str


@dataclass
class BaselineReady(Message):
    user_idx: int
    items: list


@dataclass
class ExportProgress(Message):
    done: int
    total: int


@dataclass
class ExportDone(Message):
    path: str
    rows: int


@dataclass
class UserLoaded(Message):
    """A user's history and cached result (None when uncached or not wanted), read from the catalog."""

    user_idx: int
    history: list  # engine.services.session.HistoryRow
    cached: object | None  # engine.services.session.Explanation
    live: bool


@dataclass
class UsersFound(Message):
    """The users whose history holds an item matching a title query."""

    search: object  # engine.services.session.UserSearch


@dataclass
class PairLoaded(Message):
    """One user's cached results under both runs of a comparison."""

    user_idx: int
    detail: object  # engine.services.compare.PairDetail


@dataclass
class PairSummary(Message):
    """The paired test-hit figures of two runs (engine.services.evaluation.paired_hits)."""

    figures: dict


@dataclass
class AnalysisReady(Message):
    """The run's slice analysis for the analysis tab."""

    report: object  # engine.services.slices.SliceReport


@dataclass
class AnalysisFailed(Message):
    """The slice analysis could not be computed (one line)."""

    error: str
