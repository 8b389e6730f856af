"""The ceiling of a run with a perfect *recent* condition: a fresh denoiser of the run's configuration (or with
KEY=VALUE settings changed, e.g. diffusion.prediction=x0) conditioned on the mean CF vector of each user's N latest
train items (what a condition read from the latest history can carry), or with N = 'run' on the run's own cached
LLM conditions (a refit: what the denoiser's settings alone change), refined like the run's:
python scripts/measure/ceiling_recent.py RUN EPOCHS [N_LATEST|run] [KEY=VALUE ...]."""
import sys
from pathlib import Path

import torch

from engine.model.deftrec import DeftRecHeads
from engine.services.diagnostics import ceiling_metrics, read_run, recent_item_means
from engine.services.run import Run

torch.set_num_threads(1)
inp = read_run(Run.open(Path(sys.argv[1])))
rest = sys.argv[3:]
n = rest.pop(0) if rest and "=" not in rest[0] else "5"
changes = {}
for pair in rest:
    key, value = pair.split("=", 1)
    old = inp.heads.config.get(key)
    changes[key] = type(old)(value) if not isinstance(old, bool) else value == "true"
heads = DeftRecHeads(inp.heads.config.updated(changes)) if changes else inp.heads
recent = inp.conditions.float() if n == "run" else recent_item_means(inp.targets, inp.item_q, int(n))  # [U,D]
out = ceiling_metrics(heads, recent, inp.item_q, inp.item_categories, inp.categories, inp.targets, inp.seed,
                      int(sys.argv[2]), 0)
print(f"{'run-condition refit' if n == 'run' else f'recent-{n} ceiling'} {changes or ''}", out["epoch"], out["valid"], out["test"],
      [(c["epoch"], round(c["HR@10"], 4)) for c in out["checks"]], flush=True)
