"""The recommender contract (docs/architecture.md §6): one protocol that DeftRec, LightGCN, MF and popularity
implement, so that evaluation, export, slices, bench and the explorer never ask which model they hold.

A recommender has a `name` (the run's model name: its catalog rows, `--model`), a `label` for text, and

- `scores(users)`: its full-ranking scores of every item, [B, n_items], the history NOT masked (masking is the
  caller's, as in `engine/model/ranking.py`);
- `top_k(users, history, k)`: (item_idx [B, k'], score [B, k']) with k' = min(k, n_items), the items of the
  HistoryIndex `history` masked, ties broken by the lower item index (the order `engine.model.ranking.top_k` and the
  retriever give); a row with fewer than k' unmasked items ends with masked items scored −inf, in index order;
- `explains`: what it can explain beyond a score — TEXT (a generated preference sentence), TRAJECTORY (the
  denoising path x_T … y) and PI (each score's breakdown s = cos·(1 + π)); the CF models explain only a score;
- `cached`: whether its top-k lists (and texts) are cached in the catalog at training, so that export and the
  explorer read them there and compute only the users without them (DeftRec); False: lists are computed from
  `scores` on demand, in seconds (CF).

`recommenders(run)` gives the run's recommenders in the run's order (config.json's `models`); `recommender(run,
name)` one by name (the CLI's `--model`); `primary` the run's own model (DeftRec when trained, else LightGCN),
`reference` the baseline shown beside it (LightGCN) and `explaining` the one with given capabilities. Only this
module knows the models by name. Nothing here loads anything until asked: weights, the catalog and the LLM
are read on first use, once. Importing it loads no torch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from data.catalog import Catalog
from data.errors import DeftrecError, RunError
from engine.services.run import Run

if TYPE_CHECKING:
    import torch

    from engine.model.ranking import HistoryIndex

TEXT = "text"  # a generated preference sentence per user (and its prompt)
TRAJECTORY = "trajectory"  # the denoising trajectory x_T … y behind each list
PI = "pi"  # each score's breakdown s = cos·(1 + π)
CAPABILITIES = (TEXT, TRAJECTORY, PI)

MODEL_ORDER = ("deftrec", "lightgcn", "mf", "pop")  # the rows of every table; the first a run has is its own
REFERENCE = "lightgcn"  # the baseline shown beside the run's own model (explorer `c`, slices' overlap)


@runtime_checkable
class Recommender(Protocol):
    """What every model of a run answers (see the module docstring)."""

    name: str
    label: str
    explains: frozenset[str]
    cached: bool

    def scores(self, users: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Full-ranking scores [B, n_items] of the users, nothing masked."""
        ...

    def top_k(self, users: Sequence[int] | np.ndarray, history: HistoryIndex | None,
              k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(item_idx [B, k'], score [B, k']) with `history` masked; ties by the lower item index."""
        ...


def _no_mask(n_users: int, n_items: int):
    import torch
    return torch.zeros(n_users, n_items, dtype=torch.bool)


class _Lazy:
    """Loads its state once, on first use, under a lock (the explorer asks from worker threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = None

    def _load(self):
        raise NotImplementedError

    @property
    def state(self):
        with self._lock:
            if self._state is None:
                self._state = self._load()
            return self._state


class ScoredRecommender(_Lazy):
    """A recommender whose lists are the stable top-k of its masked scores (engine.model.ranking.top_k)."""

    name = ""
    label = ""
    explains: frozenset[str] = frozenset()
    cached = False

    def scores(self, users):
        raise NotImplementedError

    def top_k(self, users, history, k):
        import torch

        from engine.model.ranking import top_k
        users = np.asarray(users, dtype=np.int64)
        with torch.no_grad():
            scores = self.scores(users)  # [B, n_items]
            mask = _no_mask(*scores.shape) if history is None else history.mask(users, scores.shape[1])
            return top_k(scores, mask, k)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class EmbeddingRecommender(ScoredRecommender):
    """A CF model of user and item vectors (LightGCN, MF-BPR): s(u, i) = e_u · e_i."""

    def __init__(self, name: str, label: str, load: Callable[[], dict]) -> None:
        super().__init__()
        self.name, self.label, self._loader = name, label, load

    def _load(self):
        tensors = self._loader()  # {"user": [n_users, d], "item": [n_items, d]}
        return tensors["user"].float(), tensors["item"].float()

    def scores(self, users):
        import torch
        user_vectors, item_vectors = self.state
        return user_vectors[torch.as_tensor(users)] @ item_vectors.T  # [B, n_items]


class PopularityRecommender(ScoredRecommender):
    """Every user gets the items ranked by their train interactions (the catalog's popularity)."""

    def __init__(self, load: Callable[[], np.ndarray], name: str = "pop", label: str = "popularity") -> None:
        super().__init__()
        self.name, self.label, self._loader = name, label, load

    def _load(self):
        import torch
        return torch.as_tensor(self._loader())  # [n_items]

    def scores(self, users):
        return self.state.expand(len(users), -1)  # [B, n_items]


# ------------------------------------------------------------------------------------------ DeftRec


class NotCached(DeftrecError):
    """The catalog lacks the cached conditions that DeftRec's scores without the LLM are computed from."""


@dataclass
class CachedPreferences:
    """What training cached per user in the catalog: c, the generated text and its category; items' categories."""

    conditions: torch.Tensor  # [U,D] float32
    texts: list[str]
    categories: list[str | None]
    item_categories: list[str | None]


def cached_preferences(run: Run, hint: str = "train the run again") -> CachedPreferences:
    """Every user's cached condition, text and category (one line of error when any user lacks them)."""
    import torch
    with Catalog.open(run.catalog_path, readonly=True) as catalog:
        rows = catalog.preferences()
        n_users = catalog.n_users()
        item_categories = catalog.item_categories()
    if len(rows) != n_users or any(r[3] is None for r in rows):
        raise NotCached("the catalog lacks cached conditions for some users (a run from an older deftrec)",
                        path=run.catalog_path, hint=hint)
    conditions = torch.from_numpy(np.stack([r[3] for r in rows]))  # [U,D]
    return CachedPreferences(conditions, [r[1] or "" for r in rows], [r[2] or None for r in rows], item_categories)


@dataclass
class _Reranker:
    """DeftRec without the LLM: every user's preference vector y denoised from the cached condition c, and the
    retriever that scores s = cos(y, q)·(1 + π) against the extracted category cached with it."""

    finals: torch.Tensor  # [U, d]
    categories: list[str | None]
    retriever: object  # engine.model.retriever.HybridRetriever
    pi: float
    match: str


class DeftRecRecommender(_Lazy):
    """DeftRec (engine/model/recommender.py) behind the contract. `scores` and `top_k` re-rank from the conditions
    cached at training (denoiser and retriever only, no LLM call: what `eval --mask-history none` ranks), and
    `top_k` is the retriever's search, the one that wrote the cached lists; `model()` is the whole pipeline
    (LLM, denoiser, retriever), loaded on first use, for live generation and the explorer's trajectories."""

    name = "deftrec"
    label = "DeftRec"
    explains = frozenset({TEXT, TRAJECTORY, PI})
    cached = True

    def __init__(self, run: Run) -> None:
        super().__init__()
        self.run = run
        self._model = None
        self._model_lock = threading.Lock()

    def model(self):
        """The run's DeftRecModel (engine.services.loading.open_deftrec), loaded once (seconds)."""
        with self._model_lock:
            if self._model is None:
                from engine.services.loading import open_deftrec
                self._model = open_deftrec(self.run)
            return self._model

    def _load(self) -> _Reranker:
        from engine.model.deftrec import DeftRecHeads
        from engine.model.recommender import denoise
        from engine.model.retriever import HybridRetriever
        from engine.services.loading import load_heads
        config = self.run.deftrec_config  # nested settings (format-1 runs are migrated on open)
        heads = DeftRecHeads(config)
        load_heads(self.run, heads)
        cached = cached_preferences(self.run)
        n_users = len(cached.categories)
        finals = denoise(heads, cached.conditions, list(range(n_users)), int(self.run.config.get("seed", 0)))[-1]
        items = self.run.tensors(self.run.cf_weights)["item"].float().numpy()  # [n_items, d]
        retriever = HybridRetriever(items, np.array(cached.item_categories, dtype=object),
                                    item_norm=config.retrieval.item_norm)
        return _Reranker(finals, cached.categories, retriever, config.retrieval.pi, config.retrieval.pi_match)

    def scores(self, users):
        import torch
        state = self.state
        return state.retriever.scores_dense(state.finals[torch.as_tensor(users)].numpy(),
                                            [state.categories[u] for u in users], state.pi, state.match)

    def top_k(self, users, history, k):
        import torch
        state = self.state
        users = np.asarray(users, dtype=np.int64)
        width = min(k, state.retriever.n_items)
        lists = state.retriever.search(state.finals[torch.as_tensor(users)].numpy(), history, users,
                                       [state.categories[u] for u in users], width, pi=state.pi, match=state.match)
        items = np.empty((len(users), width), np.int64)  # [B, k']
        scores = np.empty((len(users), width), np.float32)  # [B, k']
        for row, (user, found) in enumerate(zip(users, lists)):
            chosen = [r.item_idx for r in found]
            if len(chosen) < width:  # fewer unmasked items than k': the masked ones follow at −inf, by index
                masked = np.unique(history.items_of(int(user))) if history is not None else np.empty(0, np.int64)
                chosen += [int(i) for i in masked if i not in set(chosen)][: width - len(chosen)]
            items[row] = chosen
            scores[row] = [r.score for r in found] + [float("-inf")] * (width - len(found))
        return torch.from_numpy(items), torch.from_numpy(scores)

    def __repr__(self) -> str:
        return f"DeftRecRecommender({str(self.run.path)!r})"


# ------------------------------------------------------------------------------------------ the registry


def _popularity(run: Run) -> np.ndarray:
    with Catalog.open(run.catalog_path, readonly=True) as catalog:
        return catalog.item_popularity()  # [n_items]


_FACTORIES: dict[str, Callable[[Run], Recommender]] = {
    "deftrec": DeftRecRecommender,
    "lightgcn": lambda run: EmbeddingRecommender("lightgcn", "LightGCN", lambda: run.tensors("lightgcn")),
    "mf": lambda run: EmbeddingRecommender("mf", "MF", lambda: run.tensors("mf")),
    "pop": lambda run: PopularityRecommender(lambda: _popularity(run)),
}
KNOWN = tuple(_FACTORIES)


def recommender(run: Run, name: str) -> Recommender:
    """The run's model `name` behind the contract (nothing is loaded yet)."""
    if name not in _FACTORIES:
        raise RunError(f"unknown model {name!r}", hint=f"use one of: {', '.join(KNOWN)}")
    return _FACTORIES[name](run)


def recommenders(run: Run) -> list[Recommender]:
    """Every model of the run, in config.json's order (nothing is loaded yet)."""
    return [recommender(run, name) for name in run.models]


def in_order(recs: Iterable[Recommender]) -> list[Recommender]:
    """The recommenders in table order (MODEL_ORDER)."""
    return sorted(recs, key=lambda r: MODEL_ORDER.index(r.name) if r.name in MODEL_ORDER else len(MODEL_ORDER))


def primary(recs: Iterable[Recommender]) -> Recommender | None:
    """The run's own model: the first in MODEL_ORDER (DeftRec when trained, else LightGCN)."""
    ordered = in_order(recs)
    return ordered[0] if ordered else None


def reference(recs: Iterable[Recommender]) -> Recommender | None:
    """The baseline shown beside the run's own model (LightGCN), when the run has it."""
    return next((r for r in recs if r.name == REFERENCE), None)


def explaining(recs: Iterable[Recommender], *capabilities: str) -> Recommender | None:
    """The first recommender (in MODEL_ORDER) that explains every one of `capabilities`, or None."""
    unknown = set(capabilities) - set(CAPABILITIES)
    if unknown:
        raise ValueError(f"unknown capabilities {sorted(unknown)}; known: {', '.join(CAPABILITIES)}")
    return next((r for r in in_order(recs) if set(capabilities) <= r.explains), None)


def with_cached_lists(recs: Iterable[Recommender]) -> Recommender | None:
    """The first recommender (in MODEL_ORDER) whose lists the catalog caches, or None."""
    return next((r for r in in_order(recs) if r.cached), None)
