"""Whether torch's dynamic int8 quantization (every nn.Linear, per-tensor scales) keeps a run's preference texts: the
first N users described in float32, then with the LLM's linear layers quantized; texts equal, texts that name a known
category, the largest |Δc|, and the speed of one MLP's two products at a batch-32 prompt pass's shape (M = 4,384)
in each, interleaved, best of 5. Why deftrec offers no int8 inference (docs/inference.md). Usage: int8_probe.py RUN [N]."""
import json
import sys
import time
import warnings

import torch
from torch import nn
from torch.ao.quantization import quantize_dynamic

from engine.services.loading import open_deftrec
from engine.services.run import Run

model = open_deftrec(Run.open(sys.argv[1]))
users = list(range(int(sys.argv[2]) if len(sys.argv) > 2 else 32))


def described() -> tuple[float, list]:
    started = time.perf_counter()
    prefs = [p for s in range(0, len(users), 32) for p in model.describe(users[s:s + 32])]
    return time.perf_counter() - started, prefs


def quantized(module: nn.Module) -> nn.Module:
    with warnings.catch_warnings():  # torch marks its quantized tensor types deprecated (2.13 still has them)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8)


@torch.no_grad()
def mlp_speedup(hidden: int, inner: int, rows: int = 4384) -> float:
    """fp32 seconds / int8 seconds of Linear(hidden, inner) then Linear(inner, hidden) on [rows, hidden]."""
    fp32_mlp = nn.Sequential(nn.Linear(hidden, inner), nn.Linear(inner, hidden)).eval()
    int8_mlp, x = quantized(fp32_mlp), torch.randn(rows, hidden)  # [M,D]
    times = {fp32_mlp: [], int8_mlp: []}
    for _ in range(5):
        for mlp, seconds in times.items():
            started = time.perf_counter()
            mlp(x)
            seconds.append(time.perf_counter() - started)
    return min(times[fp32_mlp]) / min(times[int8_mlp])


config = model.llm.config
speedup = mlp_speedup(config.hidden_size, config.intermediate_size)
seconds_fp32, fp32 = described()
model.llm = quantized(model.llm)
seconds_int8, int8 = described()
print(json.dumps({
    "run": sys.argv[1], "users": len(users), "threads": torch.get_num_threads(),
    "same_text": sum(a.text == b.text for a, b in zip(fp32, int8)),
    "known_category": {"float32": sum(p.category is not None for p in fp32),
                       "int8": sum(p.category is not None for p in int8)},
    "max_abs_dc": max(float((a.condition - b.condition).abs().max()) for a, b in zip(fp32, int8)),
    "seconds": {"float32": round(seconds_fp32, 1), "int8": round(seconds_int8, 1)},
    "mlp_products_int8_speedup": round(speedup, 2),
    "examples": [[a.text, b.text] for a, b in zip(fp32[:3], int8[:3])]}, indent=1))
