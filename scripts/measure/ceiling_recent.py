"""The ceiling of a run with a perfect *recent* condition: a fresh denoiser of the run's configuration conditioned on
the mean CF vector of each user's latest train items (what a condition read from the latest history can carry),
refined like the run's: python scripts/measure/ceiling_recent.py RUN EPOCHS [N_LATEST]."""
import sys
from pathlib import Path

import torch

from engine.services.diagnostics import ceiling_metrics, read_run, recent_item_means
from engine.services.run import Run

torch.set_num_threads(1)
inp = read_run(Run.open(Path(sys.argv[1])))
n = int(sys.argv[3]) if len(sys.argv) > 3 else 5
recent = recent_item_means(inp.targets, inp.item_q, n)  # [U,d]
out = ceiling_metrics(inp.heads, recent, inp.item_q, inp.item_categories, inp.categories, inp.targets, inp.seed,
                      int(sys.argv[2]), 0)
print(f"recent-{n} ceiling", out["epoch"], out["valid"], out["test"],
      [(c["epoch"], round(c["HR@10"], 4)) for c in out["checks"]], flush=True)
