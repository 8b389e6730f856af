"""Inference prompt lengths of a run under each prompt.item_text (titles alone, titles with their categories): mean and
largest token count, and the share of users whose prompt drops a history item to fit the run's max_length.
Usage: python scripts/measure/prompt_fit.py RUN [MAX_LENGTH]"""
import sys

import numpy as np

from engine.services.loading import open_deftrec
from engine.services.run import Run

run = Run.open(sys.argv[1])
model = open_deftrec(run)
base = model.config
max_length = int(sys.argv[2]) if len(sys.argv) > 2 else base.prompt.max_length
users = list(range(len(model.histories)))
histories = [model.inference_history(u) for u in users]
for item_text in ("title", "title-category"):
    model.config = base.updated({"prompt.item_text": item_text, "prompt.max_length": max_length})
    prompts, kept = model.build_prompts(users, histories, [0] * len(users))
    lengths = [len(ids) for ids in model.tokenizer(prompts, add_special_tokens=True)["input_ids"]]
    lost = np.mean([len(k) < len(h) for k, h in zip(kept, histories)])
    print(f"{item_text:15s} max_length {max_length}: tokens mean {np.mean(lengths):.1f} max {max(lengths)}, "
          f"users losing an item {lost:.1%}", flush=True)
print("example:", prompts[0][:400])
