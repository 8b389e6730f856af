"""How many of each user's latest train items the refinement should target (history 'recent'): a fresh denoiser of
the run's configuration refit on the run's cached LLM conditions with N latest items as targets, refined like the
run's, best validation check kept: python scripts/measure/refine_targets.py RUN EPOCHS N [PATIENCE] (0: never stop)."""
import sys
from dataclasses import replace
from pathlib import Path

import torch

from engine.services.diagnostics import ceiling_metrics, read_run
from engine.services.run import Run

torch.set_num_threads(1)
inp = read_run(Run.open(Path(sys.argv[1])))
n_targets, patience = int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 0
config = inp.heads.config
inp.heads.config = replace(config, training=replace(config.training, refine_targets=n_targets))  # the one change
out = ceiling_metrics(inp.heads, inp.conditions.float(), inp.item_q, inp.item_categories, inp.categories, inp.targets,
                      inp.seed, int(sys.argv[2]), patience)
print(f"refit on the run's c, {n_targets} latest targets, patience {patience}: epoch {out['epoch']}", out["valid"], out["test"],
      [(c["epoch"], round(c["HR@10"], 4)) for c in out["checks"]], flush=True)
