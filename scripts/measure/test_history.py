"""Test HR@10 of a run when the test prompt also shows the validation item (the user's history before the test item)
against the stored train-only prompt, from the run's own weights; nothing is retrained."""
import sys
import time

import numpy as np
import torch

from data.catalog import Catalog
from engine.model.llm.lora import merged_lora
from engine.model.metrics import metrics_from_ranks
from engine.model.ranking import target_ranks
from engine.services.loading import open_deftrec
from engine.services.run import Run

run = Run.open(sys.argv[1])
model = open_deftrec(run)
with Catalog.open(run.catalog_path, readonly=True) as catalog:
    valid, test = catalog.held_out().T
n = len(model.histories)
users = list(range(n))
mask_base = [np.asarray(h) for h in model.histories]


def score(prefs, label):
    cond = torch.stack([p.condition for p in prefs])
    final = model.trajectories(cond, users)[-1]
    scores = model.scores(final, [p.category for p in prefs])
    mask = torch.zeros_like(scores, dtype=torch.bool)
    for u in users:
        mask[u, torch.as_tensor(mask_base[u])] = True
        mask[u, int(valid[u])] = True
    ranks = target_ranks(scores, torch.as_tensor(test), mask)
    m = metrics_from_ranks(ranks)
    top = max(np.unique([p.text for p in prefs], return_counts=True)[1]) / n
    print(f"{label:28s} test HR@10 {m['HR@10']:.4f} NDCG@10 {m['NDCG@10']:.4f}  top sentence {top:.0%}", flush=True)
    return ranks


with merged_lora(model.llm):
    for label, hist in (("train history (stored)", mask_base),
                        ("train + validation item", [np.append(h, valid[u]) for u, h in enumerate(mask_base)])):
        model.histories = hist
        t = time.perf_counter()
        order = np.argsort(model.prompt_lengths(users), kind="stable").tolist()
        prefs = {}
        for s in range(0, n, 32):
            for p in model.describe(order[s:s + 32]):
                prefs[p.user_idx] = p
        print(f"described {n} users in {time.perf_counter() - t:.0f} s", flush=True)
        score([prefs[u] for u in users], label)
