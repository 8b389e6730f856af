"""How far below 120 s `deftrec export --recompute` can go on this CPU in float32: the prompt tokens of every user in the
export's batches (sorted by length, padding included), the decoder's linear-layer FLOPs for them, the time this CPU's
fp32 GEMM needs for exactly those products (timed at the prefill's own shapes), and the measured prefill of a few of
the export's batches (and in batches of 8), scaled to all of them. Usage: python scripts/measure/export_bound.py RUN [BATCHES_TIMED]"""
import sys
import time
from collections import Counter

import numpy as np
import torch
from torch import nn

from engine.model.decoding import decoder_of
from engine.services.loading import open_deftrec
from engine.services.run import Run

BATCH = 32  # engine.services.export.compute_and_cache's batch size
torch.manual_seed(0)
model = open_deftrec(Run.open(sys.argv[1]))
timed_batches = int(sys.argv[2]) if len(sys.argv) > 2 else 3
users = list(range(len(model.histories)))
lengths = np.array(model.prompt_lengths(users))
order = [users[i] for i in np.argsort(lengths, kind="stable")]
batches = [order[i:i + BATCH] for i in range(0, len(order), BATCH)]
padded = sum(len(b) * int(lengths[b].max()) for b in batches)
tokens = int(lengths.sum())

decoder = decoder_of(model.llm)
linears = Counter((m.in_features, m.out_features) for m in decoder.modules() if isinstance(m, nn.Linear))
flops_per_token = sum(2 * i * o * n for (i, o), n in linears.items())  # every decoder layer's projections
rows = BATCH * int(np.median(lengths))  # one batch's activations: the GEMMs' M


def gemm_seconds(i: int, o: int, repeats: int = 20) -> float:
    """Best time of one fp32 linear [rows,i] x [i,o] on this CPU."""
    x, w = torch.randn(rows, i), torch.randn(o, i)
    for _ in range(3):
        nn.functional.linear(x, w)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        nn.functional.linear(x, w)
        best = min(best, time.perf_counter() - started)
    return best


def prefill_rate(group: list[int], size: int) -> float:
    """Prompt tokens per second (padding included) of the left-padded prompt pass over `group` in batches of `size`."""
    seconds, count = 0.0, 0
    for start in range(0, len(group), size):
        batch = group[start:start + size]
        inputs = model.prompt_inputs(batch)
        embeds, mask = inputs.embeds, inputs.attention_mask  # [B,L,D], [B,L] left padded, as in template decoding
        started = time.perf_counter()
        decoder(inputs_embeds=embeds, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                use_cache=True)
        seconds += time.perf_counter() - started
        count += embeds.shape[0] * embeds.shape[1]
    return count / seconds


with torch.no_grad():
    per_row = sum(gemm_seconds(i, o) * n for (i, o), n in linears.items()) / rows  # s per token, linears only
    gflops = flops_per_token / per_row / 1e9
    middle = len(order) // 2 - timed_batches * BATCH // 2
    group = order[middle:middle + timed_batches * BATCH]  # users of the export's middle batches
    rates: dict[int, list[float]] = {8: [], BATCH: []}
    for _ in range(2):  # interleaved
        for size, measured in rates.items():
            measured.append(prefill_rate(group, size))

print(f"{len(users)} users in {len(batches)} batches of {BATCH}: {tokens:,} prompt tokens ({tokens / len(users):.1f} "
      f"per user), {padded:,} with the batches' padding")
print(f"decoder linears: {flops_per_token / 1e6:.1f} MFLOP per token, {padded * flops_per_token / 1e12:.2f} TFLOP "
      f"for the padded prompts")
print(f"fp32 GEMM at the prefill's shapes (M = {rows}): {gflops:.0f} GFLOP/s -> the linears alone need "
      f"{padded * per_row:.0f} s")
for size, measured in rates.items():
    print(f"measured prompt pass, the {len(group)} users of the middle batches in batches of {size}: "
          f"{' / '.join(f'{r:.0f}' for r in measured)} tokens/s -> {padded / max(measured):.0f} s for every user's "
          f"prompt, before any response token")
