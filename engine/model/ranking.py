"""Full ranking over the catalog in user batches: masking, the held-out item's rank, and stable top-K.

Ties are broken by item index (lower first) everywhere, so the rank used by the metrics and the order
written by export are the same ordering.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

MISS = np.iinfo(np.int64).max  # rank of a held-out item that is masked (cannot be recommended)


@dataclass(frozen=True)
class HistoryIndex:
    """CSR of each user's items to mask: train items, optionally plus the validation item."""

    indptr: np.ndarray  # [n_users + 1]
    indices: np.ndarray  # [nnz] item_idx

    @classmethod
    def build(cls, n_users: int, users: np.ndarray, items: np.ndarray) -> HistoryIndex:
        order = np.lexsort((items, users))
        users, items = users[order], items[order]
        keep = np.ones(len(users), bool)
        keep[1:] = (users[1:] != users[:-1]) | (items[1:] != items[:-1])
        users, items = users[keep], items[keep]
        indptr = np.zeros(n_users + 1, np.int64)
        np.add.at(indptr, users + 1, 1)
        return cls(indptr=np.cumsum(indptr), indices=items.astype(np.int64))

    def with_extra(self, extra_item: np.ndarray) -> HistoryIndex:
        """Add one more item per user (the validation item when scoring test)."""
        n_users = len(self.indptr) - 1
        counts = np.diff(self.indptr)
        users = np.concatenate([np.repeat(np.arange(n_users), counts), np.arange(n_users)])
        items = np.concatenate([self.indices, np.asarray(extra_item, np.int64)])
        return HistoryIndex.build(n_users, users, items)

    def items_of(self, user: int) -> np.ndarray:
        return self.indices[self.indptr[user]:self.indptr[user + 1]]

    def mask(self, users: np.ndarray, n_items: int) -> torch.Tensor:
        """Boolean [B, n_items], True where the item is masked for that user."""
        starts, ends = self.indptr[users], self.indptr[users + 1]
        counts = ends - starts
        rows = np.repeat(np.arange(len(users)), counts)
        cols = np.concatenate([self.indices[s:e] for s, e in zip(starts, ends)]) if len(users) else np.empty(0)
        out = torch.zeros(len(users), n_items, dtype=torch.bool)
        out[torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)] = True
        return out


ScoreFn = Callable[[np.ndarray], torch.Tensor]  # user_idx batch [B] -> scores [B, n_items]


def batches(n: int, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, n, batch_size):
        yield np.arange(start, min(n, start + batch_size))


def items_ahead(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """How many items rank before targets[b] in row b of scores [B, m]: higher, or equal with a lower index."""
    rows = torch.arange(len(targets))
    target_score = scores[rows, targets].unsqueeze(1)  # [B, 1]
    item_index = torch.arange(scores.shape[1]).unsqueeze(0)  # [1, m]
    ahead = (scores > target_score) | ((scores == target_score) & (item_index < targets.unsqueeze(1)))
    return ahead.sum(dim=1)  # [B]


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """0-based rank of each target among unmasked items (ties: lower item index first); MISS if masked."""
    scores = scores.float().masked_fill(mask, float("-inf"))  # [B, m]
    ranks = items_ahead(scores, targets).numpy().astype(np.int64)  # [B]
    ranks[mask[torch.arange(len(targets)), targets].numpy()] = MISS
    return ranks


def top_k(scores: torch.Tensor, mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stable top-k of unmasked items per row: (item_idx [B, k], score [B, k]); ties by lower item index."""
    scores = scores.float().masked_fill(mask, float("-inf"))  # [B, m]
    k = min(k, scores.shape[1])
    ordered, order = torch.sort(scores, dim=1, descending=True, stable=True)  # [B, m]
    return order[:, :k], ordered[:, :k]


def rank_all(score_fn: ScoreFn, n_users: int, n_items: int, history: HistoryIndex, targets: np.ndarray,
             batch_size: int = 512) -> np.ndarray:
    """Rank of every user's held-out item under full ranking with the history masked."""
    ranks = np.empty(n_users, np.int64)
    with torch.no_grad():
        for users in batches(n_users, batch_size):
            scores = score_fn(users)
            ranks[users] = target_ranks(scores, torch.as_tensor(targets[users]), history.mask(users, n_items))
    return ranks
