"""The subnormal-float timing of docs/lab-notes.md: seconds for one refinement epoch of a run's refined denoiser (the
run's pairs, optimizer settings and negatives), with torch's defaults and with subnormals flushed, one after the
other in one process: python scripts/measure/refine_epoch.py RUN."""
import sys
import time
from pathlib import Path

import numpy as np
import torch

from engine.model.refine import refine_epochs, refinement_pairs
from engine.services.diagnostics import read_run
from engine.services.run import Run

run = Run.open(Path(sys.argv[1]))
inp = read_run(run)  # loads the heads with subnormals flushed, which zeroes those in the weights it copies
config, targets = inp.heads.config, inp.targets
users, items = refinement_pairs(config.prompt.history, targets.train_users, targets.train_items,
                                config.training.refine_targets)
weights = {k[9:]: v for k, v in run.tensors("denoiser").items() if k.startswith("denoiser.")}  # as saved
for flush in (False, True):
    torch.set_flush_denormal(flush)
    inp.heads.denoiser.load_state_dict(weights)  # the saved weights, copied under this mode
    start = time.perf_counter()
    refine_epochs(inp.heads.denoiser, config, inp.conditions.float(), users, items, inp.item_q.float(), 1, 0,
                  lambda epoch: 0, np.random.default_rng(1), torch.Generator().manual_seed(1), "cpu",
                  history=(targets.train_users, targets.train_items))
    print(f"{sys.argv[1]}: one refinement epoch ({len(users)} pairs), subnormals {'flushed' if flush else 'kept'}: "
          f"{time.perf_counter() - start:.1f} s", flush=True)
