"""How many of each user's latest train items the refinement should target (history 'recent'): a fresh denoiser of
the run's configuration refit on the run's cached LLM conditions with N latest items as targets, refined like the
run's, best validation check kept: python scripts/measure/refine_targets.py RUN EPOCHS N."""
import sys
from pathlib import Path

import torch

from engine.model import refine
from engine.services.diagnostics import ceiling_metrics, read_run
from engine.services.run import Run

torch.set_num_threads(1)
inp = read_run(Run.open(Path(sys.argv[1])))
refine.RECENT_TARGETS = int(sys.argv[3])
out = ceiling_metrics(inp.heads, inp.conditions.float(), inp.item_q, inp.item_categories, inp.categories, inp.targets,
                      inp.seed, int(sys.argv[2]), 0)
print(f"refit on the run's c, {refine.RECENT_TARGETS} latest targets: epoch {out['epoch']}", out["valid"], out["test"],
      [(c["epoch"], round(c["HR@10"], 4)) for c in out["checks"]], flush=True)
