"""A weight average for the denoiser's refinement: a fresh denoiser of the run's configuration refit on the run's
cached LLM conditions like the run's refinement (best validation check kept), its checks reading the trained weights
(decay 0) or their exponential moving average (decay > 0; the training itself is the same, step for step):
python scripts/measure/refine_ema.py RUN EPOCHS DECAY [DECAY ...]."""
import sys
from pathlib import Path

import torch

from engine.services.diagnostics import ceiling_metrics, read_run
from engine.services.run import Run

torch.set_num_threads(1)
inp = read_run(Run.open(Path(sys.argv[1])))
epochs = int(sys.argv[2])
for decay in map(float, sys.argv[3:]):
    out = ceiling_metrics(inp.heads, inp.conditions.float(), inp.item_q, inp.item_categories, inp.categories,
                          inp.targets, inp.seed, epochs, 0, ema_decay=decay)
    print(f"{sys.argv[1]} refit on the run's c, {epochs} epochs, EMA decay {decay:g}: kept epoch {out['epoch']}, "
          f"valid HR@10 {out['valid']['HR@10']:.4f} NDCG@10 {out['valid']['NDCG@10']:.4f}, "
          f"test HR@10 {out['test']['HR@10']:.4f} NDCG@10 {out['test']['NDCG@10']:.4f}; checks",
          [(c["epoch"], round(c["HR@10"], 4)) for c in out["checks"]], flush=True)
