"""Collaborative-filtering models: LightGCN (He et al., 2020) and MF-BPR, as pure modules."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class CFConfig:
    """Shape of a CF model; `n_layers` is ignored by MF."""

    n_users: int
    n_items: int
    dim: int = 64
    n_layers: int = 3


def normalized_adjacency(n_users: int, n_items: int, users: np.ndarray, items: np.ndarray) -> torch.Tensor:
    """Sparse D^-1/2 A D^-1/2 of the bipartite user–item graph, nodes = users then items (never dense)."""
    n = n_users + n_items
    rows = np.concatenate([users, items + n_users])
    cols = np.concatenate([items + n_users, users])
    degree = np.bincount(rows, minlength=n).astype(np.float64)
    inv_sqrt = np.zeros(n)
    inv_sqrt[degree > 0] = degree[degree > 0] ** -0.5
    values = inv_sqrt[rows] * inv_sqrt[cols]
    index = torch.as_tensor(np.stack([rows, cols]), dtype=torch.long)  # [2, nnz]
    adj = torch.sparse_coo_tensor(index, torch.as_tensor(values, dtype=torch.float32), (n, n),
                                  check_invariants=True)
    with warnings.catch_warnings():  # CSR support is "beta" in torch; it is 1.3x faster than COO here
        warnings.simplefilter("ignore", UserWarning)
        return adj.coalesce().to_sparse_csr()


class _EmbeddingTables(nn.Module):
    """User and item ego embeddings, N(0, 0.1²) initialized."""

    def __init__(self, config: CFConfig) -> None:
        super().__init__()
        self.config = config
        self.user_embedding = nn.Embedding(config.n_users, config.dim)
        self.item_embedding = nn.Embedding(config.n_items, config.dim)
        nn.init.normal_(self.user_embedding.weight, std=0.1)
        nn.init.normal_(self.item_embedding.weight, std=0.1)

    def ego(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Ego embeddings of a batch ([B, d] each), for the L2 penalty."""
        return self.user_embedding(users), self.item_embedding(items)


class LightGCN(_EmbeddingTables):
    """Ego embeddings propagated over the normalized graph; readout = mean of the layer outputs."""

    def propagate(self, adj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (user [n_users, d], item [n_items, d]) embeddings."""
        ego = torch.cat([self.user_embedding.weight, self.item_embedding.weight])  # [N, d]
        layers = [ego]
        for _ in range(self.config.n_layers):
            layers.append(torch.sparse.mm(adj, layers[-1]))  # [N, d]
        final = torch.stack(layers).mean(dim=0)  # [N, d]
        return final[: self.config.n_users], final[self.config.n_users:]


class MatrixFactorization(_EmbeddingTables):
    """Plain dot-product MF trained with BPR."""

    def propagate(self, adj: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_embedding.weight, self.item_embedding.weight


def bpr_loss(user: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """-log σ(u·i⁺ − u·i⁻), mean over the batch; inputs [B, d]."""
    return -F.logsigmoid((user * pos).sum(-1) - (user * neg).sum(-1)).mean()


def l2_penalty(*tensors: torch.Tensor) -> torch.Tensor:
    """½‖·‖² of the batch's ego embeddings, divided by the batch size (LightGCN's regularizer)."""
    return sum(t.pow(2).sum() for t in tensors) / (2 * tensors[0].shape[0])
