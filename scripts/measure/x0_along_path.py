"""HR@10 of the denoiser's own estimate x̂_0 at points of a run's reverse chain (the run's sampler, seed and τ; x̂_0
from ε̂ by Eq. 8 inverted), against the chain's end: where along the reverse path the ranking is best.
python scripts/measure/x0_along_path.py RUN [STEP,...]."""
import sys
from pathlib import Path

import numpy as np
import torch

from engine.model.diffusion import DDPMSchedule, guided
from engine.model.recommender import denoise
from engine.model.retriever import HybridRetriever
from engine.services.diagnostics import read_run, retrieval_metrics
from engine.services.run import Run

torch.set_num_threads(1)
inp = read_run(Run.open(Path(sys.argv[1])))
marks = [int(x) for x in sys.argv[2].split(",")] if len(sys.argv) > 2 else [0, 1, 10, 50, 90, 99]
config = inp.heads.config
schedule = DDPMSchedule.from_config(inp.heads.diffusion_config())
steps = schedule.timesteps()
users = list(range(len(inp.conditions)))
path = denoise(inp.heads, inp.conditions, users, inp.seed)  # [S+1,U,d]
retriever = HybridRetriever(inp.item_q.numpy(), np.array(list(inp.item_categories), dtype=object))
fn = guided(inp.heads.denoiser, config.diffusion.guidance)
inp.heads.eval()


def show(label, vectors):
    m = retrieval_metrics(vectors, retriever, inp.categories, config.retrieval.pi, config.retrieval.pi_match,
                          inp.targets)
    print(f"{label}: valid {m['valid']['HR@10']:.4f} / {m['valid']['NDCG@10']:.4f}  test {m['test']['HR@10']:.4f} / "
          f"{m['test']['NDCG@10']:.4f}", flush=True)


with torch.no_grad():
    for i in marks:
        t = steps[i]
        x = path[i]  # [U,d] x_t before step i
        out = fn(x, torch.full((len(users),), t, dtype=torch.long), inp.conditions.float())  # [U,d]
        x0 = schedule.step(out, t, -1, x, None)  # [U,d] t_prev = -1: the step's own x̂_0 (Eq. 8 inverted for ε)
        show(f"step {i} (t={t}) x0-hat", x0)
show("chain end (the run)", path[-1])
