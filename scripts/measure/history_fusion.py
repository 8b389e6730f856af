"""HR@10 of a run's final preference vectors fused with the mean CF vector of the user's latest train items
(q = x0/|x0| + w·h/|h|, ranked by the run's cos·(1+π)), over a grid of w and history lengths:
python scripts/measure/history_fusion.py RUN [N,...]."""
import sys
from pathlib import Path

import torch

from engine.model.recommender import denoise
from engine.model.retriever import HybridRetriever
from engine.services.diagnostics import read_run, recent_item_means, retrieval_metrics
from engine.services.run import Run

torch.set_num_threads(1)
inp = read_run(Run.open(Path(sys.argv[1])))
lengths = [int(x) for x in sys.argv[2].split(",")] if len(sys.argv) > 2 else [5, 8]
finals = denoise(inp.heads, inp.conditions, list(range(len(inp.conditions))), inp.seed)[-1]  # [U,d]
x0 = torch.nn.functional.normalize(finals.float(), dim=-1)  # [U,d]
retriever = HybridRetriever(inp.item_q.numpy(), list(inp.item_categories))
pi, match = inp.heads.config.retrieval.pi, inp.heads.config.retrieval.pi_match
for n in lengths:
    h = torch.nn.functional.normalize(recent_item_means(inp.targets, inp.item_q, n), dim=-1)  # [U,d]
    for w in (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, None):
        q = h if w is None else x0 + w * h  # [U,d]
        m = retrieval_metrics(q, retriever, inp.categories, pi, match, inp.targets)
        print(f"n={n} w={'inf' if w is None else w}: valid {m['valid']['HR@10']:.4f} / {m['valid']['NDCG@10']:.4f}"
              f"  test {m['test']['HR@10']:.4f} / {m['test']['NDCG@10']:.4f}", flush=True)
