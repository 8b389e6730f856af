"""Every user of a run described under several MODE/PRECISION[@BATCH] (full|template|draft|constrained /
float32|bfloat16, batches of 32 unless @BATCH says otherwise; draft decoding guesses only in batches of at most 8):
time, users whose text is identical to the first pair's, users whose greedy decoding followed a template, the largest
|Δc| among those, validation and test HR@10 of each; the figures docs/inference.md quotes.
Usage: decoding_equal.py RUN [N (0: every user) [full/float32,template/float32,...]]."""
import json
import sys
import time

import numpy as np
import torch

from data.catalog import Catalog
from engine.model.llm.lora import merged_lora
from engine.model.metrics import metrics_from_ranks
from engine.model.ranking import target_ranks
from engine.services.loading import open_deftrec
from engine.services.run import Run

run = Run.open(sys.argv[1])
model = open_deftrec(run)
n = int(sys.argv[2]) if len(sys.argv) > 2 and int(sys.argv[2]) > 0 else len(model.histories)  # 0: every user
MODES = sys.argv[3].split(",") if len(sys.argv) > 3 else ["full/float32", "template/float32", "constrained/float32"]
users = list(range(n))
with Catalog.open(run.catalog_path, readonly=True) as catalog:
    valid, test = catalog.held_out().T
order = [u for u in np.argsort(model.prompt_lengths(users), kind="stable").tolist()]


def describe(name):
    mode, _, rest = name.partition("/")
    precision, _, size = rest.partition("@")
    size = int(size or 32)
    texts, conds, followed, cats = {}, {}, {}, {}
    started = time.perf_counter()
    for s in range(0, n, size):
        batch_users = order[s:s + size]
        with torch.no_grad():
            inputs = model.prompt_inputs(batch_users)
            gen = model.generate(inputs.embeds, inputs.attention_mask, decoding=mode, kept=inputs.kept,
                                 precision=precision)
            cond = model.heads.condition(gen.hidden.last_hidden, gen.hidden.response_mask, gen.hidden.input_embeds)
        for row, u in enumerate(batch_users):
            texts[u] = model.tokenizer.decode(gen.ids[row], skip_special_tokens=True).strip()
            conds[u] = cond[row].float()
            followed[u] = getattr(gen, "followed", [None] * len(batch_users))[row]
            cats[u] = model.extract_category(texts[u])
    return time.perf_counter() - started, texts, conds, followed, cats


def hr(conds, cats):
    """(valid HR@10, test HR@10, test NDCG@10): train items masked, and the validation item for test."""
    c = torch.stack([conds[u] for u in users])
    final = model.trajectories(c, users)[-1]
    scores = model.scores(final, [cats[u] for u in users])
    mask = torch.zeros_like(scores, dtype=torch.bool)
    for u in users:
        mask[u, torch.as_tensor(np.asarray(model.histories[u]))] = True
    v = metrics_from_ranks(target_ranks(scores, torch.as_tensor(valid[:n]), mask))
    mask[torch.arange(n), torch.as_tensor(valid[:n])] = True
    t = metrics_from_ranks(target_ranks(scores, torch.as_tensor(test[:n]), mask))
    return v["HR@10"], t["HR@10"], t["NDCG@10"]


out = {"run": str(run.path), "users": n, "threads": torch.get_num_threads()}
with merged_lora(model.llm):
    results = {name: describe(name) for name in MODES}
base_texts, base_conds = results[MODES[0]][1], results[MODES[0]][2]
for name, (seconds, texts, conds, followed, cats) in results.items():
    same = [u for u in users if texts[u] == base_texts[u]]
    follow = [u for u in users if followed[u]]
    dc = max((float((conds[u] - base_conds[u]).abs().max()) for u in follow), default=0.0)
    vh, h, nd = hr(conds, cats)
    out[name] = {"seconds": round(seconds, 1), "users_per_s": round(n / seconds, 2), "same_text": len(same),
                 "followed": len(follow) if not name.startswith("full") else None, "max_abs_dc_followed": dc,
                 "valid_HR@10": round(vh, 4), "test_HR@10": round(h, 4), "test_NDCG@10": round(nd, 4),
                 "distinct_texts": len(set(texts.values())),
                 "unknown_category": sum(cats[u] is None for u in users)}
    print(name, json.dumps(out[name]), flush=True)
print(json.dumps(out))
