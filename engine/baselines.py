"""Score functions of the CF models stored in a run (LightGCN, MF, popularity)."""

from __future__ import annotations

import torch

from data.catalog import Catalog
from data.errors import RunError
from engine.run import Run

CF_MODELS = ("lightgcn", "mf", "pop")


def cf_scorer(run: Run, model: str):
    """user_idx batch [B] -> scores [B, n_items] for a CF model of the run."""
    if model not in CF_MODELS:
        raise RunError(f"unknown model {model!r}", hint=f"use one of: {', '.join(CF_MODELS)}")
    if model == "pop":
        with Catalog.open(run.catalog_path, readonly=True) as catalog:
            popularity = catalog.item_popularity()
        pop = torch.as_tensor(popularity)
        return lambda users: pop.expand(len(users), -1)
    tensors = run.tensors(model)
    users, items = tensors["user"].float(), tensors["item"].float()
    return lambda batch: users[torch.as_tensor(batch)] @ items.T
