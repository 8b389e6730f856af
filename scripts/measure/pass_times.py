"""Each LLM pass of template decoding timed for one batch of users under float32, mixed and bfloat16, interleaved:
where a batched description spends its time, the figures of docs/inference.md ("mixed").
Usage: python scripts/measure/pass_times.py RUN [BATCH (32)] [REPEATS (2)]"""
import sys
import time

import numpy as np
import torch

from engine.model.decoding import decoder_of
from engine.model.llm.lora import merged_lora
from engine.services.loading import open_deftrec
from engine.services.run import Run

run = Run.open(sys.argv[1])
model = open_deftrec(run)
size = int(sys.argv[2]) if len(sys.argv) > 2 else 32
repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 2
users = list(range(len(model.histories)))
order = np.argsort(model.prompt_lengths(users), kind="stable").tolist()
middle = len(order) // 2
batch = order[middle - size // 2:middle - size // 2 + size]  # users of median prompt length
decoder = decoder_of(model.llm)
passes: list[list] = []


def before(_module, _args, kwargs) -> None:
    passes.append([time.perf_counter(), tuple(kwargs["inputs_embeds"].shape[:2])])


def after(_module, _args, _kwargs, _out) -> None:
    passes[-1][0] = time.perf_counter() - passes[-1][0]


decoder.register_forward_pre_hook(before, with_kwargs=True)
decoder.register_forward_hook(after, with_kwargs=True)
with merged_lora(model.llm), torch.no_grad():
    inputs = model.prompt_inputs(batch)
    print(f"{run.path}: {size} users of median prompt length, {inputs.input_ids.shape[1]} tokens padded, "
          f"{torch.get_num_threads()} threads, template decoding", flush=True)
    for _ in range(repeats):
        for precision in ("float32", "mixed", "bfloat16"):
            passes.clear()
            started = time.perf_counter()
            model.generate(inputs.embeds, inputs.attention_mask, decoding="template", kept=inputs.kept,
                           precision=precision)
            total = time.perf_counter() - started
            shown = " ".join(f"{seconds:.2f}s{list(shape)}" for seconds, shape in passes)
            print(f"{precision:9s} total {total:.2f} s, passes (s[rows, tokens]): {shown}", flush=True)
