"""Users/s of describing 16 users with the LoRA unmerged and merged (one CPU thread), as docs/quality.md quotes."""
import time

import torch

torch.set_num_threads(1)

from safetensors.torch import load_file

from data.protocol import prepare
from data.registry import load_dataset
from engine.model.deftrec import DeftRecConfig, DeftRecHeads
from engine.model.recommender import build_model
from train.deftrec import embedding_rms

split = prepare(load_dataset("ml-100k"), min_count=5, seed=0)
lg = load_file("runs/cf100k/lightgcn.safetensors")
cfg = DeftRecConfig().updated({"prompt.max_history": 8, "prompt.max_length": 160, "diffusion.cond_standardize": True})
model = build_model(cfg, (split.items["title"].tolist(), split.items["category"].tolist(), split.train_histories()), lg["user"], lg["item"], 0)
model.config = cfg.with_llm_hidden(576).updated({"tokenizer.out_scale": embedding_rms(model.llm)}); model.heads = DeftRecHeads(model.config)
model.llm.eval()
users = list(range(16))
for name in ("unmerged", "merged"):
    if name == "merged": model.llm.merge_adapter()
    t = time.perf_counter(); prefs = model.describe(users); dt = time.perf_counter() - t
    print(name, f"{len(users)/dt:.2f} users/s", repr(prefs[0].text[:60]), flush=True)
model.llm.unmerge_adapter()
