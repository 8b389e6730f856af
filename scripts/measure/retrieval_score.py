"""Would another score than Eq. 14's cosine rank a run's final preference vectors better? cos(y_i, q_j)·‖q_j‖^α for
α from 0 (the cosine, π off) to 1 (the dot product up to ‖y_i‖; LightGCN's item norm carries popularity), and the
LightGCN user vector under the same scores: valid / test HR@10 and NDCG@10.
python scripts/measure/retrieval_score.py RUN"""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from engine.model.recommender import denoise
from engine.services.diagnostics import read_run
from engine.services.run import Run

inp = read_run(Run.open(Path(sys.argv[1])))
finals = denoise(inp.heads, inp.conditions.float(), list(range(inp.targets.n_users)), inp.seed)[-1]  # [U,d]
item_q = inp.item_q.float()  # [n,d]
norms = item_q.norm(dim=1)  # [n]


def scored(queries: torch.Tensor, alpha: float) -> str:
    """valid / test HR@10 and NDCG@10 of cos(query, q_j)·‖q_j‖^α."""
    users = F.normalize(queries.float(), dim=1)  # [U,d]
    items = F.normalize(item_q, dim=1) * norms[:, None] ** alpha  # [n,d]
    out = inp.targets.both(lambda batch: users[torch.as_tensor(batch)] @ items.T)  # [B,n]
    return " ".join(f"{split} {m['HR@10']:.4f} / {m['NDCG@10']:.4f}" for split, m in out.items())


print(f"{sys.argv[1]}: item norms {norms.mean():.3f} ± {norms.std():.3f}; HR@10 / NDCG@10")
for alpha in (0.0, 0.25, 0.5, 0.75, 1.0, 1.5):
    print(f"DeftRec final vector, cos·‖q‖^{alpha:g}: {scored(finals, alpha)}", flush=True)
for alpha in (0.0, 0.5, 1.0):
    print(f"LightGCN user vector, cos·‖q‖^{alpha:g}: {scored(inp.user_q, alpha)}", flush=True)
