"""Training of the collaborative-filtering stage: LightGCN, MF-BPR and popularity, early-stopped on
validation NDCG@10 under the full-ranking protocol."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from data.protocol import Split
from engine.model.cf import (
    CFConfig,
    LightGCN,
    MatrixFactorization,
    bpr_loss,
    l2_penalty,
    normalized_adjacency,
)
from engine.model.metrics import metrics_from_ranks
from engine.model.ranking import HistoryIndex, rank_all
from engine.model.sampling import NegativeSampler
from train.progress import log, make_progress


@dataclass(frozen=True)
class CFTrainConfig:
    """Settings of one CF model's training."""

    dim: int = 64
    n_layers: int = 3
    lr: float = 1e-2
    weight_decay: float = 1e-4
    batch_size: int = 4096
    max_epochs: int = 300
    eval_every: int = 5
    patience: int = 5  # evaluations without improvement of validation NDCG@10
    seed: int = 0


@dataclass
class CFResult:
    """A trained model's final embeddings and its metrics."""

    model: str
    user_embeddings: torch.Tensor  # [n_users, d]
    item_embeddings: torch.Tensor  # [n_items, d]
    valid: dict[str, float]
    test: dict[str, float]
    best_epoch: int
    seconds: float
    config: dict = field(default_factory=dict)


class Evaluator:
    """Validation and test ranks for any score function, with the protocol's masks."""

    def __init__(self, split: Split) -> None:
        self.split = split
        users, items = split.train_pairs()
        self.train_history = HistoryIndex.build(split.n_users, users, items)
        self.test_history = self.train_history.with_extra(split.valid_item)

    def ranks(self, score_fn, which: str) -> np.ndarray:
        history = self.train_history if which == "valid" else self.test_history
        targets = self.split.valid_item if which == "valid" else self.split.test_item
        return rank_all(score_fn, self.split.n_users, self.split.n_items, history, targets)

    def metrics(self, score_fn, which: str) -> dict[str, float]:
        return metrics_from_ranks(self.ranks(score_fn, which))


def embedding_scorer(user_embeddings: torch.Tensor, item_embeddings: torch.Tensor):
    """Score function: dot products of a batch of users with every item."""
    return lambda users: user_embeddings[torch.as_tensor(users)] @ item_embeddings.T


def popularity_scorer(popularity: np.ndarray):
    pop = torch.tensor(np.asarray(popularity, dtype=np.float32))
    return lambda users: pop.expand(len(users), -1)


def train_popularity(split: Split, evaluator: Evaluator) -> CFResult:
    start = time.perf_counter()
    scorer = popularity_scorer(split.items["popularity"].to_numpy())
    return CFResult(model="pop", user_embeddings=torch.empty(0), item_embeddings=torch.empty(0),
                    valid=evaluator.metrics(scorer, "valid"), test=evaluator.metrics(scorer, "test"),
                    best_epoch=0, seconds=time.perf_counter() - start)


@contextmanager
def deterministic_algorithms():
    """torch's deterministic kernels inside (warning where an op has none), the caller's setting restored after: with
    two CPU threads the embedding and index backward of a BPR step summed in a varying order, so LightGCN and MF of
    one seed differed across processes by ~1e-6, which DeftRec's training then amplified."""
    enabled, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def train_bpr_model(kind: str, split: Split, evaluator: Evaluator, cfg: CFTrainConfig) -> CFResult:
    """Train LightGCN ('lightgcn') or MF ('mf') with BPR, the same bits in every process; keep the epoch with the best
    validation NDCG@10."""
    with deterministic_algorithms():
        return _train_bpr_model(kind, split, evaluator, cfg)


def _train_bpr_model(kind: str, split: Split, evaluator: Evaluator, cfg: CFTrainConfig) -> CFResult:
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    users, items = split.train_pairs()
    model_config = CFConfig(split.n_users, split.n_items, cfg.dim, cfg.n_layers)
    model = LightGCN(model_config) if kind == "lightgcn" else MatrixFactorization(model_config)
    adj = normalized_adjacency(split.n_users, split.n_items, users, items) if kind == "lightgcn" else None
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sampler = NegativeSampler(split.n_items, users, items, rng)
    best = (-1.0, 0, None)
    since_best = 0
    status = ""
    with make_progress() as progress:
        task = progress.add_task(f"{kind:8s}", total=cfg.max_epochs, status="")
        for epoch in range(1, cfg.max_epochs + 1):
            model.train()
            order = rng.permutation(len(users))
            total = 0.0
            for begin in range(0, len(order), cfg.batch_size):
                batch = order[begin:begin + cfg.batch_size]
                u, p = users[batch], items[batch]
                n = sampler.sample(u)
                user_final, item_final = model.propagate(adj)
                tu, tp, tn = (torch.as_tensor(x) for x in (u, p, n))
                loss = bpr_loss(user_final[tu], item_final[tp], item_final[tn])
                ego_u, ego_p = model.ego(tu, tp)
                loss = loss + cfg.weight_decay * l2_penalty(ego_u, ego_p, model.ego(tu, tn)[1])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
            if epoch % cfg.eval_every == 0 or epoch == cfg.max_epochs:
                model.eval()
                with torch.no_grad():
                    user_final, item_final = model.propagate(adj)
                valid_ndcg = evaluator.metrics(embedding_scorer(user_final, item_final), "valid")["NDCG@10"]
                if valid_ndcg > best[0]:
                    best = (valid_ndcg, epoch, (user_final.clone(), item_final.clone()))
                    since_best = 0
                else:
                    since_best += 1
                status = f"val NDCG@10 {valid_ndcg:.4f} (best {best[0]:.4f} @ {best[1]})"
            progress.update(task, advance=1, status=f"loss {total / len(users):.4f}  {status}")
            if since_best >= cfg.patience:
                progress.update(task, total=epoch)
                break
    assert best[2] is not None
    user_final, item_final = best[2]
    scorer = embedding_scorer(user_final, item_final)
    result = CFResult(model=kind, user_embeddings=user_final, item_embeddings=item_final,
                      valid=evaluator.metrics(scorer, "valid"), test=evaluator.metrics(scorer, "test"),
                      best_epoch=best[1], seconds=time.perf_counter() - start, config=asdict(cfg))
    log(f"{kind}: best epoch {best[1]}, valid NDCG@10 {result.valid['NDCG@10']:.4f}, "
        f"test HR@10 {result.test['HR@10']:.4f} NDCG@10 {result.test['NDCG@10']:.4f} ({result.seconds:.0f} s)")
    return result
