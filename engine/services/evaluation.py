"""A run's metrics under a history-masking policy: 'train+valid' (ours; what training stored) or 'none' (what
the paper authors' code does at test time: every item ranked, the user's own history included). Every model
scores through the recommender contract (engine/services/contract.py); DeftRec is re-ranked from the conditions cached in
the catalog (denoiser and retriever only, no LLM call)."""

from __future__ import annotations

import math

import numpy as np

from data.catalog import Catalog
from data.errors import DeftrecError
from engine.model.metrics import metrics_from_ranks
from engine.model.ranking import HistoryIndex, rank_all
from engine.services.contract import MODEL_ORDER, NotCached, recommenders, with_cached_lists
from engine.services.run import Run

MASK_POLICIES = ("train+valid", "none")
POLICY_TEXT = {"train+valid": "train items masked (and the validation item for test)",
               "none": "nothing masked: the user's own train and validation items are ranked too (authors' code)"}


def stored_metrics(run: Run) -> dict:
    """{model: {split: {metric: value}}} as computed at training time (train+valid masking)."""
    with Catalog.open(run.catalog_path, readonly=True) as catalog:
        frame = catalog.metrics()
    nested: dict = {}
    for row in frame.itertuples():
        nested.setdefault(row.model, {}).setdefault(row.split, {})[row.metric] = row.value
    return nested


def run_metrics(run: Run, mask: str = "train+valid") -> dict:
    """{model: {split: {metric: value}}} of every model of the run under the masking policy."""
    if mask not in MASK_POLICIES:
        raise DeftrecError(f"unknown masking policy {mask!r}", hint=f"use one of: {', '.join(MASK_POLICIES)}")
    if mask == "train+valid":
        return stored_metrics(run)
    with Catalog.open(run.catalog_path, readonly=True) as catalog:
        targets = catalog.held_out()
        n_items = catalog.n_items()
    n_users = len(targets)
    nothing = HistoryIndex.build(n_users, np.zeros(0, np.int64), np.zeros(0, np.int64))
    out: dict = {}
    for recommender in recommenders(run):
        try:
            out[recommender.name] = {
                split: metrics_from_ranks(rank_all(recommender.scores, n_users, n_items, nothing, targets[:, column]))
                for split, column in (("valid", 0), ("test", 1))}
        except NotCached as error:  # a run whose catalog lacks what the scores are computed from
            raise DeftrecError(error.problem, path=error.path,
                               hint="use --mask-history train+valid, or train the run again") from error
    return out


# The paper's Table 2 (arXiv 2504.12007): its protocol is not fully stated; its authors' code ranks every item
# without masking the history at test time. Beauty reports @10 only.
PAPER_TABLE2 = {
    "software": {"mf": (0.1099, 0.0580, 0.1570, 0.0702), "lightgcn": (0.1177, 0.0633, 0.1702, 0.0763),
                 "llara": (0.1361, 0.0717, 0.1640, 0.0810), "tokenrec": (0.1469, 0.0797, 0.1735, 0.0858),
                 "deftrec": (0.1584, 0.0863, 0.1791, 0.0917)},
    "beauty": {"mf": (0.0369, 0.0192, None, None), "lightgcn": (0.0400, 0.0219, None, None),
               "llara": (0.0438, 0.0226, None, None), "tokenrec": (0.0442, 0.0237, None, None),
               "deftrec": (0.0474, 0.0255, None, None)},
    "lastfm": {"mf": (0.0297, 0.0175, 0.0389, 0.0218), "lightgcn": (0.0312, 0.0196, 0.0458, 0.0233),
               "llara": (0.0489, 0.0238, 0.0755, 0.0311), "tokenrec": (0.0525, 0.0244, 0.0827, 0.0325),
               "deftrec": (0.0539, 0.0252, 0.0891, 0.0343)},
}
PAPER_METRICS = ("HR@10", "NDCG@10", "HR@20", "NDCG@20")


def paper_dataset(dataset_name: str) -> str | None:
    """The Table-2 key of a run's dataset name ('paper:software' -> 'software'), or None."""
    key = dataset_name.split(":")[-1].strip().casefold()
    return key if key in PAPER_TABLE2 else None


def paper_comparison(measured: dict, dataset: str) -> list[dict]:
    """Rows {model, source, metrics…, deltas…}: the paper's Table-2 rows, and ours for the models both have,
    with ours − paper for each metric the paper reports."""
    rows = []
    for model, values in PAPER_TABLE2[dataset].items():
        paper = dict(zip(PAPER_METRICS, values))
        rows.append({"model": model, "source": "paper", **paper})
        ours = (measured.get(model) or {}).get("test")
        if ours:
            rows.append({"model": model, "source": "this run", **{m: ours.get(m) for m in PAPER_METRICS},
                         "delta": {m: ours[m] - paper[m] for m in PAPER_METRICS if paper[m] is not None and m in ours}})
    return rows


def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value


SETTING_KEYS = ("seed", "min_count", "stage", "cf", "deftrec")  # not a recommender: config.json's sections
VOLATILE = ("deftrec.seconds", "deftrec.loss_log", "deftrec.refine.checks", "deftrec.selection", "deftrec.tokenizer.",
            "deftrec.diagnostics.", "cf.n_users",
            "cf.n_items")


def test_hits(run: Run, model: str | None = None, k: int = 10) -> np.ndarray | None:
    """Per user (by user_idx), whether the test item is in the run's stored top-k of `model` (by default the
    recommender whose lists the catalog caches: DeftRec; train+valid masked), or None when the run stores no lists
    of that model or stores fewer than k per user."""
    if model is None:
        listed = with_cached_lists(recommenders(run))
        if listed is None:
            return None
        model = listed.name
    with Catalog.open(run.catalog_path, readonly=True) as catalog:
        return catalog.test_hits(model, k)


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar test: P(a split of the discordant users at least this uneven | no difference)."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_hits(hits_a: np.ndarray, hits_b: np.ndarray, k: int = 10, n_boot: int = 2000, seed: int = 0) -> dict:
    """The same users' test hits under two runs: who each run hits alone, HR@k of both, B − A with a 95% paired
    bootstrap interval over users, and McNemar's exact p; the noise scale of a difference on one dataset."""
    diff = hits_b.astype(np.float64) - hits_a.astype(np.float64)  # [U]
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n_boot, len(diff)))].mean(axis=1)  # [n_boot]
    only_a, only_b = int((hits_a & ~hits_b).sum()), int((hits_b & ~hits_a).sum())
    return {"k": k, "users": len(diff), f"HR@{k} A": float(hits_a.mean()), f"HR@{k} B": float(hits_b.mean()),
            "B − A": float(diff.mean()), "ci95": [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))],
            "hit by A only": only_a, "hit by B only": only_b, "hit by both": int((hits_a & hits_b).sum()),
            "mcnemar_p": mcnemar_p(only_a, only_b)}


def compare_runs(a, metrics_a: dict, b, metrics_b: dict) -> dict:
    """Two runs of one dataset: their metrics row by row, every setting that differs (timings left out), the
    paired test-hit comparison of their DeftRec lists and the tokenizers' collapse statistics where recorded."""
    checksum_a = (a.config.get("dataset") or {}).get("checksum")
    checksum_b = (b.config.get("dataset") or {}).get("checksum")
    if checksum_a != checksum_b:
        raise DeftrecError("the two runs were trained on different datasets; their metrics do not compare",
                           path=b.path, hint="compare runs of the same dataset")
    flat_a: dict = {}
    flat_b: dict = {}
    for key in SETTING_KEYS:
        value_a, value_b = a.config.get(key), b.config.get(key)
        if key == "deftrec" and (value_a is None) != (value_b is None):  # not a recommender: config section
            flat_a[key], flat_b[key] = ("trained" if value_a else "not trained"), ("trained" if value_b else "not trained")
            continue
        _flatten(key, value_a, flat_a)
        _flatten(key, value_b, flat_b)
    differ = {k: (flat_a.get(k), flat_b.get(k)) for k in sorted(set(flat_a) | set(flat_b))
              if flat_a.get(k) != flat_b.get(k) and not k.startswith(VOLATILE)}
    rows = []
    models = [m for m in MODEL_ORDER if m in metrics_a or m in metrics_b]
    for split in ("test", "valid"):
        for model in models:
            rows.append({"model": model, "split": split, "a": (metrics_a.get(model) or {}).get(split, {}),
                         "b": (metrics_b.get(model) or {}).get(split, {})})
    hits_a, hits_b = test_hits(a), test_hits(b)
    paired = None if hits_a is None or hits_b is None or len(hits_a) != len(hits_b) else paired_hits(hits_a, hits_b)
    health_a, health_b = ((run.config.get("deftrec") or {}).get("tokenizer") or {} for run in (a, b))
    tokenizer = {k: (health_a.get(k), health_b.get(k)) for k in sorted(set(health_a) | set(health_b))}
    return {"dataset": a.config["dataset"]["name"], "a": {"name": a.path.name, "path": str(a.path)},
            "b": {"name": b.path.name, "path": str(b.path)}, "rows": rows, "settings": differ,
            "tokenizer": tokenizer, "paired_test": paired}
