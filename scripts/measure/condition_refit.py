"""Would the denoiser use the user's own continuous tokens? A fresh denoiser of the run's configuration refit (like
scripts/measure/ceiling_recent.py's `run` refit) on one condition: `run` (the cached c, the mean of the response's
last hidden states), `user` (the last hidden states at the user's K continuous-token positions of the prompt) or
`both` (the mean of the two), nothing else changed and the LLM untouched:
python scripts/measure/condition_refit.py RUN EPOCHS run|user|both POOLS.pt
POOLS.pt: the pools `python scripts/measure/condition_pool.py RUN POOLS.pt` saved (the run's LoRA, bf16 prefill)."""
import sys
from pathlib import Path

import torch

from engine.services.diagnostics import ceiling_metrics, read_run, recent_item_means, ridge_r2
from engine.services.run import Run

run_path, epochs, which, pools = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
inp = read_run(Run.open(run_path))
conditions = inp.conditions.float()  # [U,D]
if which in ("user", "both"):
    user_states = torch.load(pools)["user ct hidden"]  # [U,D]
    conditions = user_states if which == "user" else (conditions + user_states) / 2
recent = recent_item_means(inp.targets, inp.item_q)
print(f"{which}: R² user {ridge_r2(conditions, inp.user_q, inp.seed)['r2']:.3f} "
      f"R² recent {ridge_r2(conditions, recent, inp.seed)['r2']:.3f}", flush=True)
torch.set_num_threads(1)
out = ceiling_metrics(inp.heads, conditions, inp.item_q, inp.item_categories, inp.categories, inp.targets, inp.seed,
                      epochs, 0)
print(f"{which} refit", out["epoch"], out["valid"], out["test"],
      [(c["epoch"], round(c["HR@10"], 4)) for c in out["checks"]], flush=True)
