"""Uniform negative sampling for implicit feedback (used by CF training, the joint DeftRec steps and the
denoiser refinement; here in engine so that engine code can sample without importing train)."""

from __future__ import annotations

import numpy as np


class NegativeSampler:
    """Uniform items the user has not interacted with in train (rejection sampling, vectorized)."""

    def __init__(self, n_items: int, users: np.ndarray, items: np.ndarray, rng: np.random.Generator) -> None:
        self.n_items = n_items
        self.keys = np.unique(users.astype(np.int64) * n_items + items)
        self.rng = rng

    def sample(self, users: np.ndarray) -> np.ndarray:
        negatives = self.rng.integers(0, self.n_items, len(users))
        for _ in range(100):
            keys = users.astype(np.int64) * self.n_items + negatives
            pos = np.searchsorted(self.keys, keys).clip(max=len(self.keys) - 1)
            clash = self.keys[pos] == keys
            if not clash.any():
                break
            negatives[clash] = self.rng.integers(0, self.n_items, int(clash.sum()))
        return negatives
