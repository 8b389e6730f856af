"""How much of each loss term of Eq. 15 (and of ContRec's) reaches the LLM: the norm of each weighted term's gradient
on the LoRA weights, mean over a few joint batches of 8 users, for a run's settings either at the start of joint
training (a fresh LoRA and heads, `init`) or with the run's trained LoRA and heads (`trained`); ALIGN adds L_align
with that weight (its probe's bank is filled by 4 batches first).
Usage (from the repo root): python scripts/measure/term_gradients.py RUN [init|trained] [ALIGN] [BATCHES]"""
import sys
from types import SimpleNamespace

import numpy as np
import torch

from data.catalog import Catalog
from engine.model.deftrec import DeftRecHeads
from engine.model.recommender import build_model
from engine.services.loading import load_heads
from engine.services.run import Run, cf_weights_name
from train.deftrec import JointSampler
from train.objective import JointObjective

path = sys.argv[1]
mode = sys.argv[2] if len(sys.argv) > 2 else "init"
align = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
n_batches = int(sys.argv[4]) if len(sys.argv) > 4 else 3
torch.manual_seed(0)
run = Run.open(path)
config = run.deftrec_config.updated({"training.align_weight": align})
with Catalog.open(run.catalog_path, readonly=True) as catalog:
    items, train, n_users = catalog.items(), catalog.train_pairs(), catalog.n_users()
histories = np.split(train[:, 1], np.cumsum(np.bincount(train[:, 0], minlength=n_users))[:-1])
cf = run.tensors(cf_weights_name(config.training.cf))
model = build_model(config, ([r["title"] for r in items], [r["category"] for r in items], histories),
                    cf["user"], cf["item"], 0)
model.heads = DeftRecHeads(config)
if mode == "trained":
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    set_peft_model_state_dict(model.llm, load_file(str(run.path / "lora" / "adapter_model.safetensors")))
    load_heads(run, model.heads)
    model.heads.train()
split = SimpleNamespace(n_items=len(items), n_users=n_users, train_pairs=lambda: (train[:, 0], train[:, 1]))
sampler = JointSampler(model, split, config.profile, np.random.default_rng(0))
objective = JointObjective(model.llm, model.heads, config, model.ct_id)
objective.train()
generator = torch.Generator().manual_seed(0)
lora = [p for name, p in objective.llm.named_parameters() if p.requires_grad and "lora_" in name]
if objective.probe is not None:
    with torch.no_grad():
        for _ in range(4):
            objective(sampler.batch(8), generator)
weights = {"l_diff": 1.0, "l_llm": config.training.gamma1, "l_neg": config.aux_weight(), "l_align": align,
           "l_disp": config.aux_weight(), "l_rec": config.training.gamma3}  # the last two: ContRec's
norms: dict[str, list[float]] = {}
for _ in range(n_batches):
    parts = objective(sampler.batch(8), generator)
    for key, weight in weights.items():
        if key in parts and parts[key].requires_grad and weight != 0:
            grads = torch.autograd.grad(weight * parts[key], lora, retain_graph=True, allow_unused=True)
            used = [g.flatten() for g in grads if g is not None]  # none: the term has no path to the LoRA weights
            norms.setdefault(key, []).append(float(torch.cat(used).norm()) if used else 0.0)
print(f"{path} ({mode}, align {align:g}, {n_batches} batches of 8): LoRA gradient norm of each weighted term")
for key, values in norms.items():
    print(f"  {key:8s} {np.mean(values):.5f}  (per batch: {', '.join(f'{v:.5f}' for v in values)})")
