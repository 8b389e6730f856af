"""Cosine ranking by the mean LightGCN vector of a user's n latest items, on validation (train items only) and on test
with the same train-only mean and with the validation item appended (the whole history before the test item):
python scripts/measure/recent_with_valid.py RUN."""
import sys

import numpy as np
import torch
from safetensors.torch import load_file

from data.catalog import Catalog
from engine.services.diagnostics import Targets, embedding_metrics, recent_item_means

torch.set_num_threads(1)
run = sys.argv[1]
with Catalog.open(f"{run}/catalog.sqlite", readonly=True) as catalog:
    t = Targets.from_catalog(catalog)
q = load_file(f"{run}/lightgcn.safetensors")["item"].float()  # [n,d]
users, items = np.asarray(t.train_users), np.asarray(t.train_items)
per_user = [items[users == u] for u in range(t.n_users)]
for n in (1, 2, 3, 5, 8):
    h = recent_item_means(t, q, n)  # [U,d]
    hv = torch.stack([q[torch.as_tensor(np.append(p[len(p) - (n - 1):] if n > 1 else p[:0], t.valid_item[u]))].mean(0)
                      for u, p in enumerate(per_user)])  # [U,d]
    m, mv = embedding_metrics(h, q, t, cosine=True), embedding_metrics(hv, q, t, cosine=True)
    print(f"n={n}: valid {m['valid']['HR@10']:.4f} / {m['valid']['NDCG@10']:.4f}  test, train items only "
          f"{m['test']['HR@10']:.4f} / {m['test']['NDCG@10']:.4f}  test, validation item appended "
          f"{mv['test']['HR@10']:.4f} / {mv['test']['NDCG@10']:.4f}", flush=True)
