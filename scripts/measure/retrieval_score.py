"""Would another score than Eq. 14's cosine rank a run's final preference vectors better? cos(y_i, q_j)·‖q_j‖^α for
α from 0 (the cosine, π off) to 1 (the dot product up to ‖y_i‖; LightGCN's item norm carries popularity), and the
LightGCN user vector under the same scores: valid / test HR@10 and NDCG@10; then the α with the best validation HR@10
against α = 0 on the same test users (exact McNemar).
python scripts/measure/retrieval_score.py RUN"""
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.model.metrics import hit_ratio, metrics_from_ranks
from engine.model.ranking import rank_all
from engine.model.recommender import denoise
from engine.services.diagnostics import read_run
from engine.services.evaluation import mcnemar_p
from engine.services.run import Run

inp = read_run(Run.open(Path(sys.argv[1])))
targets = inp.targets
finals = denoise(inp.heads, inp.conditions.float(), list(range(targets.n_users)), inp.seed)[-1]  # [U,d]
item_q = inp.item_q.float()  # [n,d]
norms = item_q.norm(dim=1)  # [n]


def score_fn(queries: torch.Tensor, alpha: float):
    """user_idx batch -> [B, n] scores cos(query, q_j)·‖q_j‖^α."""
    users = F.normalize(queries.float(), dim=1)  # [U,d]
    items = F.normalize(item_q, dim=1) * norms[:, None] ** alpha  # [n,d]
    return lambda batch: users[torch.as_tensor(batch)] @ items.T  # [B,n]


def ranks(queries: torch.Tensor, alpha: float) -> dict[str, np.ndarray]:
    """0-based rank of each user's validation and test item under cos(query, q_j)·‖q_j‖^α, history masked."""
    fn = score_fn(queries, alpha)
    return {"valid": rank_all(fn, targets.n_users, targets.n_items, targets.train_history, targets.valid_item),
            "test": rank_all(fn, targets.n_users, targets.n_items, targets.test_history, targets.test_item)}


def text(by_split: dict[str, np.ndarray]) -> str:
    """'valid HR@10 / NDCG@10 test HR@10 / NDCG@10'."""
    out = {split: metrics_from_ranks(r) for split, r in by_split.items()}
    return " ".join(f"{split} {m['HR@10']:.4f} / {m['NDCG@10']:.4f}" for split, m in out.items())


print(f"{sys.argv[1]}: item norms {norms.mean():.3f} ± {norms.std():.3f}; HR@10 / NDCG@10")
runs = {}
for alpha in (0.0, 0.25, 0.5, 0.75, 1.0, 1.5):
    runs[alpha] = ranks(finals, alpha)
    print(f"DeftRec final vector, cos·‖q‖^{alpha:g}: {text(runs[alpha])}", flush=True)
for alpha in (0.0, 0.5, 1.0):
    print(f"LightGCN user vector, cos·‖q‖^{alpha:g}: {text(ranks(inp.user_q, alpha))}", flush=True)
best = max(runs, key=lambda a: (hit_ratio(runs[a]["valid"], 10), -a))  # best validation HR@10, ties to the smaller α
base, chosen = runs[0.0]["test"] < 10, runs[best]["test"] < 10  # [U] test hits
only_best, only_base = int((chosen & ~base).sum()), int((base & ~chosen).sum())
print(f"α = {best:g} (best on validation) against α = 0 on test: {only_best} users hit only with α = {best:g}, "
      f"{only_base} only with α = 0, McNemar p {mcnemar_p(only_best, only_base):.3g}")
