"""Seconds of template decoding for one batch of 32 users with and without the shared prompt head computed once,
interleaved (best of 3 each), and whether the ids agree: the figure docs/inference.md quotes for the KV reuse."""
import sys
import time

import torch

from engine.model.decoding import shared_prompt_tokens, template_generate
from engine.services.loading import open_deftrec
from engine.services.run import Run

model = open_deftrec(Run.open(sys.argv[1] if len(sys.argv) > 1 else "runs/q-recent-s1"))
users = list(range(32))
shared = shared_prompt_tokens(model.tokenizer, 0, model.config.tokenizer.k)
times = {0: [], shared: []}
ids = {}
with torch.no_grad():
    inputs = model.prompt_inputs(users)
    for _ in range(3):
        for n in (0, shared):
            t = time.perf_counter()
            out = template_generate(model.llm, model.tokenizer, inputs.embeds, inputs.attention_mask,
                                    model.config.llm.max_new_tokens, shared_prefix=n)
            times[n].append(time.perf_counter() - t)
            ids[n] = out.ids
print(f"32 users, {int(inputs.attention_mask.sum())} prompt tokens, shared head {shared} tokens: "
      f"best {min(times[0]):.2f} s without, {min(times[shared]):.2f} s with "
      f"({min(times[0]) / min(times[shared]):.2f}x); same ids: {ids[0] == ids[shared]}")
