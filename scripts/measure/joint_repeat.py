"""Are the joint steps bit-for-bit repeatable? The losses of the first STEPS quick-profile joint steps (SmolLM2, 8
users, the defaults), built from scratch twice in this process, under fp32 ('no') or bf16 autocast; run it in two
processes and compare the printed losses too. Needs a CF run named cf100k.
Usage: python scripts/measure/joint_repeat.py no|bf16 [STEPS]"""
import sys

import numpy as np
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from data.protocol import prepare
from data.registry import load_dataset
from engine.model.deftrec import DeftRecConfig, DeftRecHeads
from engine.model.recommender import build_model
from train.deftrec import PROFILES, JointSampler, accumulate_step, embedding_rms
from train.objective import JointObjective

mixed = sys.argv[1]
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
split = prepare(load_dataset("ml-100k"), min_count=5, seed=0)
lg = load_file("runs/cf100k/lightgcn.safetensors")
prof = PROFILES["quick"]


def losses() -> list[float]:
    torch.manual_seed(0)
    cfg = DeftRecConfig().updated({"prompt.max_history": prof.max_history, "prompt.max_length": prof.max_length,
                                   "diffusion.target_scale": float(lg["item"].pow(2).mean().sqrt()),
                                   "diffusion.cond_standardize": True})
    model = build_model(cfg, (split.items["title"].tolist(), split.items["category"].tolist(),
                              split.train_histories()), lg["user"], lg["item"], 0)
    cfg = cfg.with_llm_hidden(model.llm.config.hidden_size).updated({"tokenizer.out_scale": embedding_rms(model.llm)})
    model.config, model.heads = cfg, DeftRecHeads(cfg)
    acc = Accelerator(cpu=True, mixed_precision=mixed)
    objective = JointObjective(model.llm, model.heads, cfg, model.ct_id)
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=prof.lr, weight_decay=prof.weight_decay)
    objective, optimizer = acc.prepare(objective, optimizer)
    objective.train()
    sampler = JointSampler(model, split, prof, np.random.default_rng([0, 0]))
    generator = torch.Generator().manual_seed(0)
    out = []
    for _ in range(steps):
        parts = accumulate_step(objective, sampler, acc, generator, prof.batch_size, 1)
        acc.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        out.append(parts["loss"])
    return out


first, second = losses(), losses()
print(mixed, "first ", [f"{v:.8f}" for v in first], flush=True)
print(mixed, "second", [f"{v:.8f}" for v in second], "equal" if first == second else "DIFFERENT", flush=True)
