"""What c could carry if it were pooled elsewhere in the prompt: ridge R² (held-out users) to the LightGCN user vector
and to the mean vector of the 5 latest train items, for the run's cached c (the response positions, §2.4.2) against
the last hidden states pooled over the prompt's continuous-token positions, over the user's own K continuous tokens,
over the whole prompt, at the prompt's last position, and the continuous-token input embeddings themselves:
python scripts/measure/condition_pool.py RUN [POOLS.pt] (POOLS.pt: every pool saved, [U,D] each by name, for
scripts/measure/condition_refit.py)."""
import sys
from pathlib import Path

import torch

from engine.model.deftrec import masked_mean, user_token_mask
from engine.model.llm.forward import lm_forward
from engine.services.diagnostics import read_run, recent_item_means, ridge_r2
from engine.services.loading import open_deftrec
from engine.services.run import Run

run = Run.open(Path(sys.argv[1]))
inp = read_run(run)
model = open_deftrec(run)
model.llm.eval()
users = list(range(len(inp.conditions)))
pools: dict[str, list[torch.Tensor]] = {"ct hidden": [], "user ct hidden": [], "prompt hidden": [], "last hidden": [],
                                        "ct input": []}
with torch.no_grad(), model.autocast("bfloat16"):
    for start in range(0, len(users), 32):
        batch_users = users[start:start + 32]
        inputs = model.prompt_inputs(batch_users)
        embeds, mask = inputs.embeds, inputs.attention_mask  # [B,L,D], [B,L]
        hidden = lm_forward(model.llm, embeds, mask).last_hidden.float()  # [B,L,D]
        ct = inputs.input_ids == model.ct_id  # [B,L]
        user_ct = user_token_mask(inputs.input_ids, model.ct_id, model.config.tokenizer.k,
                                  inputs.template_ids)  # [B,L] the user's K tokens
        pools["ct hidden"].append(masked_mean(hidden, ct))
        pools["user ct hidden"].append(masked_mean(hidden, user_ct))
        pools["prompt hidden"].append(masked_mean(hidden, mask))
        pools["last hidden"].append(hidden[:, -1])
        pools["ct input"].append(masked_mean(embeds, ct))
        print(start, flush=True, file=sys.stderr)
recent = recent_item_means(inp.targets, inp.item_q)
rows = {"cached c (response)": inp.conditions} | {k: torch.cat(v) for k, v in pools.items()}
if len(sys.argv) > 2:
    torch.save({k: v for k, v in rows.items() if k != "cached c (response)"}, sys.argv[2])
for name, x in rows.items():
    print(f"{name:22s} R² user {ridge_r2(x, inp.user_q, inp.seed)['r2']:.3f}  "
          f"R² recent {ridge_r2(x, recent, inp.seed)['r2']:.3f}", flush=True)
