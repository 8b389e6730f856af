"""The joint-step timing of docs/quality.md: seconds per SmolLM2 joint step of 8 users, fp32 or bf16 autocast.
Usage (from the repo root, after a CF run named cf100k): python scripts/measure/joint_step.py recent|random no|bf16; the title
lengths block measured the share of prompts that lose an item (set its tuple to (60, 40, 30))."""
import sys
import time

import numpy as np
import torch
from safetensors.torch import load_file

from data.protocol import prepare
from data.registry import load_dataset
from engine.model.deftrec import DeftRecConfig, DeftRecHeads
from engine.model.recommender import build_model
from train.deftrec import PROFILES, JointSampler, accumulate_step, embedding_rms
from train.objective import JointObjective

torch.manual_seed(0)
split = prepare(load_dataset("ml-100k"), min_count=5, seed=0)
lg = load_file("runs/cf100k/lightgcn.safetensors")
prof = PROFILES["quick"]
hist = sys.argv[1] if len(sys.argv) > 1 else "random"
cfg = DeftRecConfig().updated({"prompt.max_history": prof.max_history, "prompt.max_length": prof.max_length,
                                "diffusion.target_scale": float(lg["item"].pow(2).mean().sqrt()),
                                "diffusion.cond_standardize": True, "prompt.history": hist})
model = build_model(cfg, (split.items["title"].tolist(), split.items["category"].tolist(), split.train_histories()), lg["user"], lg["item"], 0)
cfg = cfg.with_llm_hidden(model.llm.config.hidden_size).updated({"tokenizer.out_scale": embedding_rms(model.llm)})
model.config = cfg; model.heads = DeftRecHeads(cfg)
# prompt fit statistics
for chars in ():
    model.config = cfg.updated({"prompt.max_title_chars": chars})
    s = JointSampler(model, split, prof, np.random.default_rng(0))
    lost = 0; n = 0; lens = []
    for _ in range(20):
        b = s.batch(8)
        lens += b.attention_mask.sum(1).tolist()
        lost += sum(len(h) < prof.max_history for h in b.history_q); n += 8
    print(f"title chars {chars}: prompts with < {prof.max_history} items {lost/n:.2%}, mean len {np.mean(lens):.0f}, max {max(lens)}", flush=True)
model.config = cfg
from accelerate import Accelerator

for mixed in (sys.argv[2],):
    acc = Accelerator(cpu=True, mixed_precision=mixed)
    obj = JointObjective(model.llm, model.heads, cfg, model.ct_id)
    params = [p for p in obj.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    obj, opt = acc.prepare(obj, opt)
    s = JointSampler(model, split, prof, np.random.default_rng(1)); g = torch.Generator().manual_seed(0)
    accumulate_step(obj, s, acc, g, 8, 1); opt.zero_grad()
    t = time.perf_counter()
    for _ in range(3):
        parts = accumulate_step(obj, s, acc, g, 8, 1); opt.step(); opt.zero_grad()
    print(mixed, f"{(time.perf_counter()-t)/3:.2f} s/step", {k: round(v, 3) for k, v in parts.items()}, flush=True)
