"""Where a run's models win and lose (`deftrec eval RUN --slices`, the explorer's analysis tab): HR@k / NDCG@k by
history length and by the test item's category and popularity, what each model's top-k covers, how DeftRec's
and LightGCN's lists overlap, and the generated categories against the users' histories. Train+valid masking,
as the stored metrics: every model through the recommender contract (engine/services/contract.py), its lists read from the
catalog where training cached them (DeftRec) and computed from its scores otherwise (the CF models)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from data.catalog import Catalog
from engine.model.metrics import hit_ratio, ndcg
from engine.model.prompts import leading_categories
from engine.services.contract import (
    MODEL_ORDER,
    TEXT,
    Recommender,
    explaining,
    in_order,
    primary,
    recommenders,
    reference,
)
from engine.services.evaluation import mcnemar_p
from engine.services.run import Run

K = 10
N_BUCKETS = 5  # quantile buckets of history length and of test-item popularity
TOP_CATEGORIES = 10  # category slices shown; the remaining users form 'other'
NO_CATEGORY = "(none)"


@dataclass
class Slice:
    """One group of users: its label, size and {model: {metric: value}}."""

    label: str
    users: int
    metrics: dict[str, dict[str, float]]


@dataclass
class SliceReport:
    """Every figure of the analysis of one run (the tab and `eval --slices --json` show this object)."""

    run: str
    dataset: str
    k: int
    users: int
    items: int
    models: list[str]
    overall: dict[str, dict[str, float]]  # model -> {HR@k, NDCG@k} over every user
    history: list[Slice]  # by the number of train items
    category: list[Slice]  # by the test item's category (or category part)
    category_mode: str  # 'category' | 'parts' (then a user is in the slice of each part of the test item)
    popularity: list[Slice]  # by the test item's popularity (train interactions)
    lists: dict[str, dict[str, float]]  # model -> coverage, mean_popularity, diversity of its top-k
    overlap: dict | None = None  # the run's own model (DeftRec) vs the reference (LightGCN): mean Jaccard@k, users
    # hit by each alone / both / neither
    generated: dict | None = None  # generated categories against the histories' categories
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (the figures of `eval --slices --json`)."""
        return asdict(self)


def metrics_at(ranks: np.ndarray, k: int = K) -> dict[str, float]:
    """HR@k and NDCG@k of 0-based ranks (engine.model.metrics)."""
    return {f"HR@{k}": hit_ratio(ranks, k), f"NDCG@{k}": ndcg(ranks, k)}


def parts_of(category: str | None) -> set[str]:
    """The '|'-separated parts of a category ('Action|Sci-Fi' -> {'Action', 'Sci-Fi'})."""
    return {p.strip() for p in (category or "").split("|")} - {""}


def quantile_buckets(values: np.ndarray, n: int) -> tuple[np.ndarray, list[str]]:
    """Bucket of each integer value [N] over n quantile buckets (equal edges merged) and their 'low–high' labels."""
    values = np.asarray(values, np.int64)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, n + 1)[1:-1], method="lower")) if len(values) else []
    raw = np.searchsorted(np.asarray(edges, np.int64), values, side="left")  # [N] values ≤ edge i -> bucket i
    used = np.unique(raw)
    bucket = np.searchsorted(used, raw)  # [N] renumbered without empty buckets
    labels = []
    for b in range(len(used)):
        low, high = int(values[bucket == b].min()), int(values[bucket == b].max())
        labels.append(f"{low}" if low == high else f"{low}–{high}")
    return bucket, labels


def _slices(groups: list[tuple[str, np.ndarray]], ranks: dict[str, np.ndarray], k: int) -> list[Slice]:
    """A Slice per (label, user mask [U]) with each model's metrics over those users."""
    return [Slice(label, int(mask.sum()), {m: metrics_at(r[mask], k) for m, r in ranks.items()})
            for label, mask in groups if mask.any()]


def category_groups(test_categories: list[str], parts: bool, top: int = TOP_CATEGORIES) -> list[tuple[str, np.ndarray]]:
    """(label, user mask) of the test item's `top` most frequent categories (parts when `parts`), then 'other'."""
    keys = [(parts_of(c) if parts else {c.strip()} - {""}) or {NO_CATEGORY} for c in test_categories]
    counts = Counter(key for user_keys in keys for key in user_keys)
    chosen = sorted(counts, key=lambda key: (-counts[key], key))[:top]
    groups = [(key, np.array([key in user_keys for user_keys in keys])) for key in chosen]
    other = np.array([not (user_keys & set(chosen)) for user_keys in keys])
    if other.any():
        groups.append(("other", other))
    return groups


def list_stats(lists: np.ndarray, popularity: np.ndarray, item_parts: np.ndarray) -> dict[str, float]:
    """Catalog coverage, mean popularity and intra-list diversity (mean 1 − Jaccard of the category parts of
    each pair of items; two items without a category count as alike) of top-k lists [U,k]."""
    valid = lists >= 0  # [U,k]
    shown = lists[valid]
    coverage = len(np.unique(shown)) / len(popularity) if len(popularity) else 0.0
    mean_pop = float(popularity[shown].mean()) if len(shown) else 0.0
    n_users, k = lists.shape
    per_user = np.zeros(n_users)  # [U]
    n_pairs = np.zeros(n_users, np.int64)  # [U]
    step = max(1, (1 << 24) // max(k * item_parts.shape[1], 1))  # users per chunk: ≤ 16M part cells at once
    for start in range(0, n_users, step):
        chunk, ok = lists[start:start + step], valid[start:start + step]  # [B,k]
        onehot = item_parts[np.where(ok, chunk, 0)].astype(np.float32)  # [B,k,P]
        inter = np.einsum("ukp,ujp->ukj", onehot, onehot)  # [B,k,k]
        sizes = onehot.sum(-1)  # [B,k]
        union = sizes[:, :, None] + sizes[:, None, :] - inter  # [B,k,k]
        alike = np.where(union > 0, inter / np.maximum(union, 1), 1.0)  # [B,k,k] Jaccard, 1 for two empty sets
        pairs = ok[:, :, None] & ok[:, None, :] & ~np.eye(k, dtype=bool)[None]  # [B,k,k]
        n_pairs[start:start + step] = pairs.sum(axis=(1, 2))
        per_user[start:start + step] = np.where(pairs, 1.0 - alike, 0.0).sum(axis=(1, 2)) / np.maximum(
            n_pairs[start:start + step], 1)
    diversity = float(per_user[n_pairs > 0].mean()) if (n_pairs > 0).any() else 0.0
    return {"coverage": float(coverage), "mean_popularity": mean_pop, "diversity": diversity}


def ranks_from_lists(lists: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based position of each user's target in its list [U,k] (engine.model.ranking.MISS when absent)."""
    from engine.model.ranking import MISS
    found = lists == targets[:, None]  # [U,k]
    return np.where(found.any(1), found.argmax(1), MISS).astype(np.int64)  # [U]


def computed_lists(recommender: Recommender, targets: np.ndarray, n_items: int, k: int,
                   history) -> tuple[np.ndarray, np.ndarray]:
    """A recommender's top-k [U,k] (its `top_k`) and the test item's full rank [U] (its `scores`) under the
    test-time mask `history` (train + valid)."""
    import torch

    from engine.model.ranking import batches, target_ranks
    n_users = len(targets)
    lists = np.empty((n_users, min(k, n_items)), np.int64)  # [U,k]
    ranks = np.empty(n_users, np.int64)  # [U]
    with torch.no_grad():
        for users in batches(n_users, 512):
            scores, mask = recommender.scores(users), history.mask(users, n_items)  # [B,n_items] each
            ranks[users] = target_ranks(scores, torch.as_tensor(targets[users]), mask)
            lists[users] = recommender.top_k(users, history, k)[0].numpy()
    return lists, ranks


def generated_vs_history(generated: list[str | None], train: np.ndarray, item_categories: list[str],
                         test_categories: list[str], latest: int | None = None, top: int = 12) -> dict:
    """Share of users whose generated category names each part, beside the share whose history's two leading
    parts include it (of the `latest` train items when given: what a 'recent' prompt shows) and the part's
    share of all train interactions; with how often the generated parts equal the leading ones."""
    n_users = len(generated)
    histories: list[list[str]] = [[] for _ in range(n_users)]
    for user, item in train:  # each user's in time order
        histories[user].append(item_categories[item])
    leading = [parts_of(leading_categories(h[-latest:] if latest else h, 2)) for h in histories]
    seen = [set().union(*(parts_of(c) for c in h)) if h else set() for h in histories]
    generated_parts = [parts_of(g) for g in generated]
    with_text = sum(1 for g in generated_parts if g)
    item_counts = Counter(p for h in histories for c in h for p in parts_of(c))
    total_parts = sum(item_counts.values()) or 1
    gen_counts = Counter(p for g in generated_parts for p in g)
    lead_counts = Counter(p for lead in leading for p in lead)
    names = sorted(set(gen_counts) | set(lead_counts), key=lambda p: (-(gen_counts[p] + lead_counts[p]), p))[:top]
    rows = [{"category": p, "generated": gen_counts[p] / n_users, "history_leading": lead_counts[p] / n_users,
             "history_items": item_counts[p] / total_parts} for p in names]
    agree = [g == lead for g, lead in zip(generated_parts, leading) if g]
    in_history = [bool(g & s) for g, s in zip(generated_parts, seen) if g]
    names_test = [bool(g & parts_of(t)) for g, t in zip(generated_parts, test_categories) if g]
    return {"rows": rows, "history_scope": f"latest {latest} train items" if latest else "all train items",
            "users_with_category": with_text, "distinct_generated": len({g for g in generated if g}),
            "equals_history_leading": float(np.mean(agree)) if agree else 0.0,
            "names_a_history_part": float(np.mean(in_history)) if in_history else 0.0,
            "names_a_test_item_part": float(np.mean(names_test)) if names_test else 0.0}


def _lists_and_ranks(run: Run, recs: list[Recommender], stored: dict, targets: np.ndarray, n_items: int,
                     k: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
    """Each recommender's top-k [U,k] and test rank [U]: from the catalog's cached lists, else computed (CF models);
    a model whose lists only the catalog could give is left out with a note."""
    notes: list[str] = []
    lists: dict[str, np.ndarray] = {}
    ranks: dict[str, np.ndarray] = {}
    history = None
    for rec in recs:
        cached = stored[rec.name]
        if cached is not None:
            lists[rec.name], ranks[rec.name] = cached, ranks_from_lists(cached, targets)
        elif rec.cached:  # its lists come from the catalog only (computing them would need the LLM)
            notes.append(f"{rec.name} left out: the catalog caches no {rec.label} lists of length {k} "
                         "(train the run again)")
        else:
            if history is None:
                from engine.services.export import test_history
                history = test_history(run)[0]
            lists[rec.name], ranks[rec.name] = computed_lists(rec, targets, n_items, k, history)
    return lists, ranks, notes


def _overlap(recs: list[Recommender], lists: dict, ranks: dict, k: int) -> dict | None:
    """The run's own model vs its reference (DeftRec vs LightGCN): mean Jaccard@k, shared items, who hits alone, and
    McNemar's exact p of those who hit alone."""
    own, baseline = primary(recs), reference(recs)
    if own is None or baseline is None or own is baseline or not {own.name, baseline.name} <= set(lists):
        return None
    a, b = lists[own.name], lists[baseline.name]
    inter = np.array([len(set(x[x >= 0]) & set(y[y >= 0])) for x, y in zip(a, b)])  # [U]
    union = np.array([len(set(x[x >= 0]) | set(y[y >= 0])) for x, y in zip(a, b)])  # [U]
    hit_a, hit_b = ranks[own.name] < k, ranks[baseline.name] < k  # [U]
    only_a, only_b = int((hit_a & ~hit_b).sum()), int((hit_b & ~hit_a).sum())
    return {"a": own.name, "b": baseline.name, "jaccard": float(np.mean(inter / np.maximum(union, 1))),
            "shared_items": float(inter.mean()), "hit_by_a_only": only_a, "hit_by_b_only": only_b,
            "hit_by_both": int((hit_a & hit_b).sum()), "hit_by_neither": int((~hit_a & ~hit_b).sum()),
            "mcnemar_p": mcnemar_p(only_a, only_b)}


def slice_report(run: Run, k: int = K) -> SliceReport:
    """Every figure of the analysis of a run (reads the catalog and the CF vectors; no LLM, no denoising)."""
    recs = [r for r in in_order(recommenders(run)) if r.name in MODEL_ORDER]
    with Catalog.open(run.catalog_path, readonly=True) as catalog:
        users = catalog.user_targets()
        items = catalog.item_facts()
        n_users = len(users)
        stored = {r.name: catalog.top_lists(r.name, k, n_users) for r in recs}
        generated = catalog.generated_categories(n_users) if explaining(recs, TEXT) is not None else None
        train = catalog.train_pairs()
    targets = users["test_item_idx"].to_numpy(np.int64)  # [U]
    popularity = items["popularity"].to_numpy(np.int64)  # [n_items]
    item_categories = items["category"].tolist()
    n_items = len(items)
    lists, ranks, notes = _lists_and_ranks(run, recs, stored, targets, n_items, k)
    models = [r.name for r in recs if r.name in lists]

    parts_mode = any("|" in c for c in item_categories)
    all_parts = sorted(set().union(*(parts_of(c) for c in item_categories))) if item_categories else []
    column = {p: j for j, p in enumerate(all_parts)}
    item_parts = np.zeros((n_items, max(len(all_parts), 1)), bool)  # [n_items,P]
    for i, category in enumerate(item_categories):
        for part in parts_of(category):
            item_parts[i, column[part]] = True
    test_categories = [item_categories[t] for t in targets]

    history_bucket, history_labels = quantile_buckets(users["n_train"].to_numpy(), N_BUCKETS)
    popularity_bucket, popularity_labels = quantile_buckets(popularity[targets], N_BUCKETS)
    report = SliceReport(
        run=str(run.path), dataset=str((run.config.get("dataset") or {}).get("name", "?")), k=k, users=n_users,
        items=n_items, models=models, overall={m: metrics_at(ranks[m], k) for m in models},
        history=_slices([(lab, history_bucket == b) for b, lab in enumerate(history_labels)], ranks, k),
        category=_slices(category_groups(test_categories, parts_mode), ranks, k),
        category_mode="parts" if parts_mode else "category",
        popularity=_slices([(lab, popularity_bucket == b) for b, lab in enumerate(popularity_labels)], ranks, k),
        lists={m: list_stats(lists[m], popularity, item_parts) for m in models}, notes=notes)
    report.overlap = _overlap(recs, lists, ranks, k)
    if generated is not None:
        config = run.deftrec_config
        latest = config.prompt.max_history if config is not None and config.prompt.history == "recent" else None
        report.generated = generated_vs_history(generated, train, item_categories, test_categories, latest or None)
    return report


def versus_reference(run: Run, k: int = K) -> dict | None:
    """The run's own model against its reference (DeftRec's against LightGCN's lists) on the same test users: who
    each hits alone and McNemar's exact p, so a lead in the metrics table can be read against the spread; None where
    the run has no such pair."""
    recs = in_order(recommenders(run))
    pair = [r for r in (primary(recs), reference(recs)) if r is not None]
    if len(pair) < 2 or pair[0] is pair[1]:
        return None
    with Catalog.open(run.catalog_path, readonly=True) as catalog:  # only the two models' lists, not the whole report
        targets = catalog.user_targets()["test_item_idx"].to_numpy(np.int64)  # [U]
        n_items = catalog.n_items()
        stored = {r.name: catalog.top_lists(r.name, k, len(targets)) for r in pair}
    overlap = _overlap(pair, *_lists_and_ranks(run, pair, stored, targets, n_items, k)[:2], k)
    if not overlap:
        return None
    return {"k": k, **{key: overlap[key] for key in ("a", "b", "hit_by_a_only", "hit_by_b_only", "hit_by_both",
                                                      "mcnemar_p")}}
