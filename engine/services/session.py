"""One run opened for analysis: catalog lookups (users, histories, cached results, metrics) that answer at once,
and the DeftRec model, loaded on first use, for live generation, trajectories and their step-by-step analysis.
The explorer, `deftrec recommend` and the export of single users all go through it. The run's models are
recommenders of one contract (engine/services/contract.py): the session asks what they explain, never which they are."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data.catalog import Catalog
from data.errors import DeftrecError
from engine.services import contract
from engine.services.contract import TEXT, Recommender
from engine.services.run import Run


@dataclass(frozen=True)
class UserRow:
    """A row of the user picker."""

    user_idx: int
    user_id: str
    n_train: int
    test_rank: int | None  # 1-based rank of the test item in the explainer's (DeftRec's) cached list, None when
    # absent or uncached
    cached: bool

    def hit(self, k: int = 10) -> bool:
        return self.test_rank is not None and self.test_rank <= k


@dataclass(frozen=True)
class HistoryRow:
    item_idx: int
    item_id: str
    title: str
    category: str
    timestamp: int | None
    split: str  # train | valid | test


@dataclass(frozen=True)
class UserSearch:
    """The users whose history holds an item with a title matching a query (the catalog's full-text index)."""

    query: str
    titles: list[str]  # the matching titles, best match first
    user_idxs: frozenset[int]


@dataclass(frozen=True)
class RankedItem:
    """One recommended item with its score breakdown s = cos·w·(1 + π) (w = ‖q_j‖^α: 1 under Eq. 14)."""

    rank: int
    item_idx: int
    item_id: str
    title: str
    category: str
    cosine: float
    pi_bonus: float
    score: float
    is_test: bool
    weight: float = 1.0


@dataclass
class StepStats:
    """The trajectory at one denoising step."""

    step: int  # 0 = pure noise, S = the preference vector y
    norm: float
    cos_to_final: float
    nearest_item: int
    nearest_cosine: float
    test_rank: int  # 1-based rank of the test item under this step's hybrid scores
    test_in_top_k: bool


@dataclass
class Explanation:
    """Everything the explorer shows for one user, from the cache or computed live."""

    user_idx: int
    prompt: str
    text: str
    category: str | None
    items: list[RankedItem]
    source: str  # 'cache' | 'live'
    trajectory: np.ndarray | None = None  # [S+1, d]
    steps: list[StepStats] = field(default_factory=list)
    step_scores: np.ndarray | None = None  # [S+1, n_items] hybrid scores with the test-time mask (−inf)
    trajectory_2d: np.ndarray | None = None  # [S+1, 2] the trajectory on the item map (PCA)

    def item_ranks(self, item_idx: int) -> list[int]:
        """Rank (1-based) of an item at each step of the trajectory."""
        if self.step_scores is None:
            return []
        import torch

        from engine.model.ranking import items_ahead
        scores = torch.from_numpy(self.step_scores)  # [S+1, n_items]
        return (items_ahead(scores, torch.full((len(scores),), int(item_idx))) + 1).tolist()


class GenerationCancelled(Exception):
    """Raised from the streamer to stop a generation whose result nobody wants any more."""


class RunSession:
    """A run opened for analysis; thread-safe model loading (the explorer loads it in a worker)."""

    def __init__(self, run: Run | str | Path) -> None:
        self.run = run if isinstance(run, Run) else Run.open(run)
        self.path = self.run.path
        self.config = self.run.config
        self._weights: np.ndarray | None = None  # the retriever's item weights, read on first use (item_norm > 0)
        self.recommenders: list[Recommender] = contract.recommenders(self.run)  # nothing loaded until asked
        # the one that generates a preference text (DeftRec): its cached lists and texts, its live model
        self.explainer: Recommender | None = contract.explaining(self.recommenders, TEXT)
        with Catalog.open(self.run.catalog_path, readonly=True) as catalog:
            self.items = catalog.items()
            self._users = catalog.users()
            self.metrics = catalog.metrics()
            ranks = {}
            if self.explainer is not None:
                ranks = catalog.test_ranks(self.explainer.name)
                cached = catalog.preference_users()
            else:
                cached = set()
        self.user_rows = [UserRow(u["user_idx"], str(u["user_id"]), u["n_train"], ranks.get(u["user_idx"]),
                                  u["user_idx"] in cached) for u in self._users]
        self._by_id = {row.user_id: row.user_idx for row in self.user_rows}
        self._model = None
        self._lock = threading.Lock()
        self._pca = None

    # ------------------------------------------------------------------ catalog (instant)

    @property
    def models(self) -> list[str]:
        return self.run.models

    def explains(self, capability: str) -> bool:
        """Whether the run has a model that explains `capability` (engine.services.contract: TEXT, TRAJECTORY, PI)."""
        return contract.explaining(self.recommenders, capability) is not None

    @property
    def reference(self) -> Recommender | None:
        """The baseline shown beside the explainer's list (LightGCN), None when the run lacks it."""
        return contract.reference(self.recommenders)

    def recommender(self, name: str) -> Recommender:
        """The run's model `name` behind the contract (one object per session, so its weights load once)."""
        for candidate in self.recommenders:
            if candidate.name == name:
                return candidate
        raise DeftrecError(f"the run has no model {name!r}", path=self.path)

    def user_index(self, user_id: str) -> int:
        """The internal index of a dataset user id; a one-line error for an unknown one."""
        key = str(user_id).strip()
        if key not in self._by_id:
            sample = ", ".join(r.user_id for r in self.user_rows[:3])
            raise DeftrecError(f"unknown user id {key!r}: the run has {len(self.user_rows)} users (e.g. {sample})",
                               path=self.path)
        return self._by_id[key]

    def history(self, user_idx: int) -> list[HistoryRow]:
        """The user's train interactions in order, then the validation and test items."""
        with Catalog.open(self.run.catalog_path, readonly=True) as catalog:
            rows = catalog.history(user_idx)
        return [HistoryRow(r[0], str(r[1]), r[2], r[3] or "", r[4], r[5]) for r in rows]

    def find_users(self, query: str, limit: int = 20) -> UserSearch:
        """The users with any of the (at most `limit`) items whose title matches `query` in their history."""
        with Catalog.open(self.run.catalog_path, readonly=True) as catalog:
            items = catalog.search_titles(query, limit)
            users = catalog.users_with_items([item["item_idx"] for item in items])
        return UserSearch(query, [item["title"] for item in items], frozenset(users))

    def test_item(self, user_idx: int) -> int:
        return int(self._users[user_idx]["test_item_idx"])

    def valid_item(self, user_idx: int) -> int:
        return int(self._users[user_idx]["valid_item_idx"])

    def _ranked(self, user_idx: int, rows) -> list[RankedItem]:
        test = self.test_item(user_idx)
        weights = self._item_weights()
        out = []
        for rank, item_idx, cosine, pi_bonus, score in rows:
            item = self.items[item_idx]
            out.append(RankedItem(rank, item_idx, str(item["item_id"]), item["title"], item["category"] or "",
                                  float(cosine), float(pi_bonus), float(score), item_idx == test,
                                  1.0 if weights is None else float(weights[item_idx])))
        return out

    def _item_weights(self) -> np.ndarray | None:
        """The retriever's item weights ‖q_j‖^α [n_items] when the run ranks with item_norm α > 0, else None."""
        if self._weights is None:
            from engine.services.export import item_weights_of
            self._weights = item_weights_of(self.run)
        return self._weights

    def cached(self, user_idx: int) -> Explanation | None:
        """The preference text and top list cached at training time, or None."""
        if self.explainer is None:
            return None
        with Catalog.open(self.run.catalog_path, readonly=True) as catalog:
            pref = catalog.preference(user_idx)
            if pref is None:
                return None
            rows = catalog.recommendations(user_idx, self.explainer.name)
        return Explanation(user_idx, pref[0], pref[1], pref[2] or None, self._ranked(user_idx, rows), "cache")

    def baseline(self, user_idx: int, model: str | None = None, k: int = 20) -> list[RankedItem]:
        """A model's top-k for the user with the test-time mask (by default the reference baseline, LightGCN);
        cosine holds the raw score, π is 0."""
        if model is None:
            if self.reference is None:
                raise DeftrecError("the run has no baseline to show beside its lists", path=self.path)
            model = self.reference.name
        if model not in self.models:
            raise DeftrecError(f"the run has no model {model!r}", path=self.path)
        history, _ = self._test_history()
        items, scores = self.recommender(model).top_k(np.array([user_idx]), history, k)
        rows = [(rank, int(i), float(s), 0.0, float(s)) for rank, (i, s) in
                enumerate(zip(items[0].tolist(), scores[0].tolist()), start=1)]
        return self._ranked(user_idx, rows)

    def _test_history(self):
        if not hasattr(self, "_history_cache"):
            from engine.services.export import test_history
            self._history_cache = test_history(self.run)
        return self._history_cache

    # ------------------------------------------------------------------ the model (slow, loaded once)

    def model(self):
        """The DeftRec model, loaded on first use (seconds) and then shared."""
        with self._lock:
            if self._model is None:
                if self.explainer is None:
                    raise DeftrecError("the run has no DeftRec model (trained with --stage cf)", path=self.path,
                                       hint="train with: deftrec train --stage all")
                self._model = self.explainer.model()
            return self._model

    def kernel_drift(self) -> str | None:
        """Where this machine's kernels differ from those that wrote the run's texts (Run.kernel_drift), for the
        device the model is loaded on; None when they agree or the run predates the record."""
        return self.run.kernel_drift(self.model().device.type)

    @property
    def model_loaded(self) -> bool:
        return self._model is not None

    def explain(self, user_idx: int, k: int = 20, streamer=None, seed: int | None = None,
                top: int = 10) -> Explanation:
        """Generate (streaming when a streamer is given), denoise and retrieve for one user, with step statistics."""
        model = self.model()
        history, _ = self._test_history()
        result = model.recommend([user_idx], history, k=k, seed=seed, streamer=streamer)[0]
        pref = result.preference
        rows = [(r.rank, r.item_idx, r.cosine, r.pi_bonus, r.score) for r in result.items]
        explanation = Explanation(user_idx, pref.prompt, pref.text, pref.category, self._ranked(user_idx, rows),
                                  "live", trajectory=result.trajectory.numpy())
        self.analyse(explanation, top)
        return explanation

    def analyse(self, explanation: Explanation, k: int = 10) -> Explanation:
        """Fill the per-step statistics (norm, cosine to y, nearest item, test rank) of a computed trajectory."""
        import torch

        from engine.model.ranking import items_ahead
        model = self.model()
        path = torch.as_tensor(explanation.trajectory, dtype=torch.float32)  # [S+1,d]
        history, _ = self._test_history()
        user = np.array([explanation.user_idx])
        scores = model.scores(path, [explanation.category] * len(path)).double()  # [S+1,n_items]
        cosines = model.retriever.cosines(path.numpy())  # [S+1,n_items]
        mask = history.mask(user, len(self.items))[0]  # [n_items]
        scores[:, mask] = float("-inf")
        cosines = torch.as_tensor(np.asarray(cosines), dtype=torch.float64)
        cosines[:, mask] = float("-inf")
        final = path[-1]
        test = self.test_item(explanation.user_idx)
        test_ranks = (items_ahead(scores, torch.full((len(path),), int(test))) + 1).tolist()  # [S+1] 1-based
        steps = []
        for step in range(len(path)):
            x = path[step]
            nearest = int(cosines[step].argmax())
            test_rank = test_ranks[step]
            steps.append(StepStats(step, float(x.norm()), float(torch.nn.functional.cosine_similarity(x, final, dim=0)),
                                   nearest, float(cosines[step, nearest]), test_rank, test_rank <= k))
        explanation.steps = steps
        explanation.step_scores = scores.numpy()
        return explanation

    def cached_condition(self, user_idx: int) -> np.ndarray | None:
        """The condition c cached at training time (float32 [D]), or None."""
        with Catalog.open(self.run.catalog_path, readonly=True) as catalog:
            return catalog.condition(user_idx)

    def trajectory_for_cached(self, explanation: Explanation, k: int = 10) -> Explanation:
        """The seeded trajectory behind a cached result: from the cached condition (no LLM call), else regenerated."""
        import torch
        model = self.model()
        condition = self.cached_condition(explanation.user_idx)
        if condition is None:
            condition = model.describe([explanation.user_idx])[0].condition.numpy()
        path = model.trajectories(torch.as_tensor(condition).unsqueeze(0), [explanation.user_idx])[:, 0]  # [S+1,d]
        explanation.trajectory = path.numpy()
        return self.analyse(explanation, k)

    @staticmethod
    def make_streamer(model, on_text, should_stop=lambda: False):
        """A transformers streamer that hands each decoded piece to on_text and aborts when should_stop()."""
        from transformers import TextStreamer

        class CallbackStreamer(TextStreamer):
            def put(self, value):
                if should_stop():
                    raise GenerationCancelled("generation cancelled")
                super().put(value)

            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                if text:
                    on_text(text)

        return CallbackStreamer(model.tokenizer, skip_prompt=True, skip_special_tokens=True)

    # ------------------------------------------------------------------ export

    def export_user(self, explanation: Explanation, out: str | Path) -> int:
        """The user's list as shown, in the columns of `deftrec export`."""
        from engine.services.export import DEFTREC_COLUMNS, atomic_csv, deftrec_row
        user_id = self.user_rows[explanation.user_idx].user_id
        with atomic_csv(out, DEFTREC_COLUMNS) as writer:
            for item in explanation.items:
                writer.writerow(deftrec_row(user_id, item.rank, item.item_id, item.title, item.category,
                                            item.cosine, item.weight, item.pi_bonus, item.score))
        return len(explanation.items)

    def export_all(self, out: str | Path, k: int = 20, on_progress=None) -> int:
        """Every user's list of the run's own model (engine.services.contract.primary): DeftRec's through the cache (users
        not cached go through this session's model), or LightGCN's for a CF-only run; on_progress(done, total)
        after each batch."""
        from engine.services.export import export_deftrec, export_top_k
        own = contract.primary(self.recommenders)
        if not own.cached:
            return export_top_k(self.run, own, out, k=k, on_progress=on_progress)
        state = {"done": 0, "total": 0}

        def started(total: int, cached: int) -> None:
            state.update(done=cached, total=total)
            if on_progress is not None:
                on_progress(cached, total)

        def advanced(count: int) -> None:
            state["done"] += count
            if on_progress is not None:
                on_progress(state["done"], state["total"])

        summary = export_deftrec(self.run, out, k=k, model_loader=self.model, on_start=started, on_progress=advanced)
        if on_progress is not None:
            on_progress(summary["users"], summary["users"])
        return summary["rows"]

    def item_map(self) -> tuple[np.ndarray, np.ndarray]:
        """2-D PCA coordinates of the (L2-normalized) item vectors [n_items,2] and the projection [d,2]."""
        if self._pca is None:
            vectors = self._item_vectors()
            unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
            mean = unit.mean(0)
            _, _, v = np.linalg.svd(unit - mean, full_matrices=False)
            projection = v[:2].T  # [d,2]
            self._pca = ((unit - mean) @ projection, projection, mean)
        return self._pca[0], self._pca[1]

    def project(self, points: np.ndarray) -> np.ndarray:
        """PCA coordinates [n,2] of vectors [n,d] (normalized like the items)."""
        self.item_map()
        _, projection, mean = self._pca
        unit = points / np.linalg.norm(points, axis=1, keepdims=True).clip(min=1e-12)
        return (unit - mean) @ projection

    def _item_vectors(self) -> np.ndarray:
        cf = self.run.tensors(self.run.cf_weights)
        return cf["item"].double().numpy()
