"""Two runs of one dataset side by side, user by user: the test item's rank in each run's cached DeftRec list,
who each run hits alone, and both runs' preference texts and lists for one user (the explorer's --compare)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.errors import RunError
from engine.services.run import Run
from engine.services.session import Explanation, RunSession

OUTCOMES = ("both", "A only", "B only", "neither")


def require_same_dataset(a: Run, b: Run) -> None:
    """A one-line RunError unless both runs were trained on the same dataset (config.json's dataset checksum)."""
    data_a, data_b = a.config.get("dataset") or {}, b.config.get("dataset") or {}
    if data_a.get("checksum") != data_b.get("checksum"):
        def name(run: Run, data: dict) -> str:
            return f"{run.path.name} is {data.get('name', '?')} ({str(data.get('checksum') or '?')[:12]})"
        raise RunError(f"the two runs are of different datasets: {name(a, data_a)}, {name(b, data_b)}",
                       hint="compare two runs of one dataset")


def open_pair(a: str | Path, b: str | Path) -> tuple[RunSession, RunSession]:
    """Both runs opened for analysis, after checking they are of one dataset."""
    run_a, run_b = Run.open(a), Run.open(b)
    require_same_dataset(run_a, run_b)
    return RunSession(run_a), RunSession(run_b)


@dataclass(frozen=True)
class PairRow:
    """A user of both runs (matched by user id) with the test item's rank in each run's cached list."""

    user_idx: int  # in run A
    user_idx_b: int
    user_id: str
    n_train: int
    rank_a: int | None  # 1-based, None when not in the cached list (or uncached)
    rank_b: int | None

    def hit_a(self, k: int = 10) -> bool:
        return self.rank_a is not None and self.rank_a <= k

    def hit_b(self, k: int = 10) -> bool:
        return self.rank_b is not None and self.rank_b <= k

    def outcome(self, k: int = 10) -> str:
        """'both', 'A only', 'B only' or 'neither': which run's top-k holds the test item."""
        a, b = self.hit_a(k), self.hit_b(k)
        return "both" if a and b else "A only" if a else "B only" if b else "neither"


@dataclass
class PairDetail:
    """One user under both runs: cached results (None when uncached) and the test item."""

    user_idx: int
    a: Explanation | None
    b: Explanation | None
    test_title: str
    test_category: str
    shared: set[str]  # item ids in both lists


class RunPair:
    """Two opened runs of one dataset; rows for the users they share, in run A's order."""

    def __init__(self, a: RunSession, b: RunSession, k: int = 10) -> None:
        require_same_dataset(a.run, b.run)
        for session in (a, b):
            if session.explainer is None:  # no model whose lists and texts the catalog caches
                raise RunError("the run has no DeftRec lists to compare (trained with --stage cf)", path=session.path,
                               hint="compare two runs trained with --stage all")
        self.a, self.b, self.k = a, b, k
        by_id = {row.user_id: row for row in b.user_rows}
        self.rows = [PairRow(ra.user_idx, by_id[ra.user_id].user_idx, ra.user_id, ra.n_train, ra.test_rank,
                             by_id[ra.user_id].test_rank) for ra in a.user_rows if ra.user_id in by_id]
        self.by_idx = {row.user_idx: row for row in self.rows}

    @property
    def names(self) -> tuple[str, str]:
        return self.a.path.name, self.b.path.name

    def hits(self) -> tuple[np.ndarray, np.ndarray]:
        """Whether each shared user's test item is in A's and in B's cached top-k ([U] bool each)."""
        return (np.array([r.hit_a(self.k) for r in self.rows], dtype=bool),
                np.array([r.hit_b(self.k) for r in self.rows], dtype=bool))

    def paired(self) -> dict:
        """The paired test-hit figures of `deftrec eval A B` (HR@k of both, lone hits, bootstrap CI, McNemar)."""
        from engine.services.evaluation import paired_hits  # imports torch: call it off the UI thread
        hits_a, hits_b = self.hits()
        return paired_hits(hits_a, hits_b, self.k)

    def detail(self, user_idx: int) -> PairDetail:
        """Both runs' cached results for one user (run A's user_idx); reads the catalogs."""
        row = self.by_idx[user_idx]
        a, b = self.a.cached(user_idx), self.b.cached(row.user_idx_b)
        item = self.a.items[self.a.test_item(user_idx)]
        ids_a = {i.item_id for i in a.items} if a is not None else set()
        ids_b = {i.item_id for i in b.items} if b is not None else set()
        return PairDetail(user_idx, a, b, item["title"], item["category"] or "", ids_a & ids_b)
