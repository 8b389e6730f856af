"""How well each probe L_align could use fits a run's cached conditions (held-out R² to the LightGCN user vector, the
last 189 of a seeded permutation held out): a learned linear probe (standardized c, AdamW, batches of 8 users) after
60 steps at lr 1e-3 and 1e-2 and 600 at 1e-3, and the closed-form RidgeProbe after banks of 128 / 256 / 512 pairs at
λ 10 / 100 / 1000. Usage (from the repo root): python scripts/measure/probe_fit.py RUN"""
import sys

import numpy as np
import torch
from torch import nn

from engine.model.diffusion import ConditionStandardizer
from engine.services.diagnostics import r2_score, read_run
from engine.services.run import Run
from train.objective import RidgeProbe

inputs = read_run(Run.open(sys.argv[1]))
c, u = inputs.conditions.float(), inputs.user_q.float()
perm = np.random.default_rng(0).permutation(len(c))
train, held = perm[:754], perm[754:]
for steps, lr in ((60, 1e-3), (60, 1e-2), (600, 1e-3)):
    torch.manual_seed(0)
    probe = nn.Sequential(ConditionStandardizer(c.shape[1]), nn.Linear(c.shape[1], u.shape[1]))
    optimizer = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=1e-5)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        batch = rng.choice(train, 8, replace=False)
        loss = (probe(c[batch]) - u[batch]).pow(2).mean() / u[batch].pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    probe.eval()
    with torch.no_grad():
        print(f"learned probe, {steps} steps, lr {lr:g}: held-out R² {r2_score(u[held].numpy(), probe(c[held]).numpy()):.3f}")
for size in (128, 256, 512):
    for lam in (10.0, 100.0, 1000.0):
        ridge = RidgeProbe(c.shape[1], u.shape[1], size=size, lam=lam)
        for start in range(0, size, 8):
            ridge(c[perm[start:start + 8]], u[perm[start:start + 8]])
        predicted = ridge(c[held], u[held]).detach().numpy()
        print(f"ridge probe, bank {size}, λ {lam:g}: held-out R² {r2_score(u[held].numpy(), predicted):.3f}")
