"""Issue 18's open lead: ms per single-token decoding pass at batch 1 (KV cache, after a 150-token prefill) of the
bare SmolLM2-135M with fp32 weights, fp32 weights under bf16 autocast, and bf16 weights, interleaved:
python scripts/measure/decode_weights.py [REPEATS]."""
import copy
import sys
import time

import torch

from engine.model.recommender import load_llm

repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
model, _ = load_llm("smollm2")
model.eval()
models = {"fp32": (model, False), "fp32+autocast": (model, True), "bf16 weights": (copy.deepcopy(model).to(torch.bfloat16), False)}
ids = torch.randint(100, 40000, (1, 150))  # [1,150]
steps = 16
times: dict[str, list[float]] = {name: [] for name in models}
with torch.no_grad():
    for _ in range(repeats):
        for name, (m, autocast) in models.items():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                out = m(input_ids=ids, use_cache=True)
                cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)  # [1,1]
                start = time.perf_counter()
                for _ in range(steps):
                    out = m(input_ids=token, past_key_values=cache, use_cache=True)
                    cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
                times[name].append((time.perf_counter() - start) / steps * 1000)
for name, values in times.items():
    print(f"{name:14s} ms/pass {' '.join(f'{v:.1f}' for v in values)}  (min {min(values):.1f})", flush=True)
