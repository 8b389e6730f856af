"""Would the denoiser use the user's own continuous tokens? A fresh denoiser of the run's configuration refit (like
scripts/measure/ceiling_recent.py's `run` refit) on one condition: `run` (the cached c, the mean of the response's
last hidden states), `user` (the last hidden states at the user's K continuous-token positions of the prompt) or
`both` (the mean of the two), nothing else changed and the LLM untouched:
python scripts/measure/condition_refit.py RUN EPOCHS run|user|both CACHE.pt
CACHE.pt holds the user-token states (computed once with the run's LoRA in bf16, then read by the other variants)."""
import sys
from pathlib import Path

import torch

from engine.model.deftrec import user_slot_first
from engine.model.llm.batches import encode_batch
from engine.model.llm.forward import lm_forward
from engine.model.prompts import DEFAULT_INPUT_TEMPLATE
from engine.services.diagnostics import ceiling_metrics, read_run, recent_item_means, ridge_r2
from engine.services.loading import open_deftrec
from engine.services.run import Run

run_path, epochs, which, cache = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
run = Run.open(run_path)
inp = read_run(run)
if which != "run" and not cache.exists():
    model = open_deftrec(run)
    model.llm.eval()
    k, first = model.config.tokenizer.k, user_slot_first(DEFAULT_INPUT_TEMPLATE)
    states = []
    with torch.no_grad(), model.autocast("bfloat16"):
        for start in range(0, len(inp.conditions), 32):
            users = list(range(start, min(start + 32, len(inp.conditions))))
            templates = [DEFAULT_INPUT_TEMPLATE] * len(users)
            prompts, kept = model.build_prompts(users, [model.inference_history(u) for u in users], templates)
            batch = encode_batch(model.tokenizer, prompts, None, model.config.prompt.max_length)
            embeds = model.embed(users, kept, templates, batch["input_ids"])
            hidden = lm_forward(model.llm, embeds, batch["attention_mask"]).last_hidden.float()  # [B,L,D]
            ct = (batch["input_ids"] == model.ct_id).float()  # [B,L]
            order = ct.cumsum(1) if first else ct.flip(1).cumsum(1).flip(1)  # [B,L] rank among ct positions
            user_ct = (ct * (order <= k)).unsqueeze(-1)  # [B,L,1] the user's K tokens
            states.append((hidden * user_ct).sum(1) / user_ct.sum(1))  # [B,D]
    torch.save(torch.cat(states), cache)
conditions = inp.conditions.float()  # [U,D]
if which in ("user", "both"):
    user_states = torch.load(cache)  # [U,D]
    conditions = user_states if which == "user" else (conditions + user_states) / 2
recent = recent_item_means(inp.targets, inp.item_q)
print(f"{which}: R² user {ridge_r2(conditions, inp.user_q, inp.seed)['r2']:.3f} "
      f"R² recent {ridge_r2(conditions, recent, inp.seed)['r2']:.3f}", flush=True)
torch.set_num_threads(1)
out = ceiling_metrics(inp.heads, conditions, inp.item_q, inp.item_categories, inp.categories, inp.targets, inp.seed,
                      epochs, 0)
print(f"{which} refit", out["epoch"], out["valid"], out["test"],
      [(c["epoch"], round(c["HR@10"], 4)) for c in out["checks"]], flush=True)
