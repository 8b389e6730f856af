"""Offline ranking figures of docs/quality.md: LightGCN dot/cosine and the cosine of the mean of the latest n train items."""
import torch
from safetensors.torch import load_file

from data.protocol import prepare
from data.registry import load_dataset
from train.cf import Evaluator

torch.set_num_threads(1)
split = prepare(load_dataset("ml-100k"), min_count=5, seed=0)
ev = Evaluator(split)
lg = load_file("runs/cf100k/lightgcn.safetensors")
U, I = lg["user"].float(), lg["item"].float()
H = split.train_histories()
def rep(name, fn):
    v = ev.metrics(fn, "valid"); t = ev.metrics(fn, "test")
    print(f"{name:40s} valid HR10 {v['HR@10']:.4f} N10 {v['NDCG@10']:.4f} | test HR10 {t['HR@10']:.4f} N10 {t['NDCG@10']:.4f}", flush=True)
In = torch.nn.functional.normalize(I, dim=1)
rep("lightgcn dot", lambda u: U[torch.as_tensor(u)] @ I.T)
rep("lightgcn cos", lambda u: torch.nn.functional.normalize(U[torch.as_tensor(u)], dim=1) @ In.T)
for n in (1, 3, 5, 8, 20):
    R = torch.stack([I[torch.as_tensor(h[-n:])].mean(0) for h in H])
    rep(f"recent{n} mean cos", lambda u, R=R: torch.nn.functional.normalize(R[torch.as_tensor(u)], dim=1) @ In.T)
R = torch.stack([I[torch.as_tensor(h)].mean(0) for h in H])
rep("all-history mean cos", lambda u: torch.nn.functional.normalize(R[torch.as_tensor(u)], dim=1) @ In.T)
