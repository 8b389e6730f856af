"""HR@K and NDCG@K from 0-based ranks of the held-out item (leave-one-out: one relevant item per user)."""

from __future__ import annotations

import numpy as np

KS = (10, 20)


def hit_ratio(ranks: np.ndarray, k: int) -> float:
    """Share of users whose held-out item is ranked in the top k (ranks are 0-based)."""
    ranks = np.asarray(ranks)
    return float(np.mean(ranks < k)) if len(ranks) else 0.0


def ndcg(ranks: np.ndarray, k: int) -> float:
    """Mean of 1/log2(rank + 2) over users whose item is in the top k, 0 otherwise (IDCG = 1)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if not len(ranks):
        return 0.0
    gains = np.where(ranks < k, 1.0 / np.log2(np.minimum(ranks, 1e12) + 2.0), 0.0)
    return float(np.mean(gains))


def metrics_from_ranks(ranks: np.ndarray, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """{'HR@10': ..., 'NDCG@10': ..., 'HR@20': ..., 'NDCG@20': ...}."""
    out: dict[str, float] = {}
    for k in ks:
        out[f"HR@{k}"] = hit_ratio(ranks, k)
        out[f"NDCG@{k}"] = ndcg(ranks, k)
    return out
