"""The ceiling of a run refit with L_neg over the sum or the mean of d: python scripts/measure/ceiling_neg_norm.py RUN sum|mean EPOCHS."""
import sys
from dataclasses import replace
from pathlib import Path

import torch

from engine.services.diagnostics import ceiling_metrics, read_run
from engine.services.run import Run

torch.set_num_threads(1)
inp = read_run(Run.open(Path(sys.argv[1])))
heads = inp.heads
heads.config = replace(heads.config, neg_norm=sys.argv[2])
out = ceiling_metrics(heads, inp.user_q, inp.item_q, inp.item_categories, inp.categories, inp.targets, inp.seed,
                      int(sys.argv[3]), 0)
print(sys.argv[2], out["epoch"], out["valid"], out["test"], [(c["epoch"], round(c["HR@10"], 4)) for c in out["checks"]], flush=True)
