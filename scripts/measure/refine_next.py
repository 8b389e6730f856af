"""What the refinement's targets change, from a run's own LLM and nothing else retrained: a fresh denoiser of the
run's configuration refit (like ceiling_recent.py's 'run' refit) on pairs of
  prompt: (c of the inference prompt, each of the user's 5 latest train items) — the run's refinement, which targets
          items the prompt itself shows;
  next:   (c of a prompt shifted back 5 items, the 5 train items right after it) — the next-item pairs joint training
          uses, so refinement and joint training ask the same of c;
  both:   the two sets together;
each scored on validation with the inference conditions, and on test with them and with conditions of prompts that
also show the validation item (the user's whole history before the test item).
python scripts/measure/refine_next.py RUN EPOCHS [SETS] (SETS: comma list of prompt,next,both)."""
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from engine.model.diffusion import Denoiser
from engine.model.llm.lora import merged_lora
from engine.model.recommender import denoise
from engine.model.refine import RECENT_TARGETS, refine_epochs, refinement_pairs
from engine.model.retriever import HybridRetriever
from engine.services.diagnostics import DenoiserSampler, read_run, retrieval_metrics
from engine.services.loading import open_deftrec
from engine.services.run import Run

run = Run.open(Path(sys.argv[1]))
epochs = int(sys.argv[2])
sets = sys.argv[3].split(",") if len(sys.argv) > 3 else ["prompt", "next", "both"]
inp = read_run(run)
t = inp.targets
n_users = t.n_users
users_all, items_all = np.asarray(t.train_users), np.asarray(t.train_items)
cache = Path("runs/.measure") / f"{run.path.name}-refine-next.pt"
if cache.exists():
    extra = torch.load(cache)
else:
    model = open_deftrec(run)
    base = [np.asarray(h) for h in model.histories]
    shift = [min(RECENT_TARGETS, len(h) - 1) for h in base]
    extra = {"shift": shift}
    with merged_lora(model.llm):
        for name, hist in (("shifted", [h[:len(h) - s] for h, s in zip(base, shift)]),
                           ("with_valid", [np.append(h, t.valid_item[u]) for u, h in enumerate(base)])):
            model.histories = hist
            start = time.perf_counter()
            order = np.argsort(model.prompt_lengths(list(range(n_users))), kind="stable").tolist()
            prefs = {}
            for s in range(0, n_users, 32):
                for p in model.describe(order[s:s + 32]):
                    prefs[p.user_idx] = p
            extra[name] = torch.stack([prefs[u].condition for u in range(n_users)]).float()  # [U,D]
            extra[name + "_categories"] = [prefs[u].category for u in range(n_users)]
            print(f"described {name} prompts of {n_users} users in {time.perf_counter() - start:.0f} s", flush=True)
    model.histories = base
    cache.parent.mkdir(exist_ok=True)
    torch.save(extra, cache)

torch.set_num_threads(2)
heads, config = inp.heads, inp.heads.config
conditions = torch.cat([inp.conditions.float(), extra["shifted"]])  # [2U,D]: rows U.. are the shifted prompts
p_users, p_items = refinement_pairs("recent", users_all, items_all)  # the run's: each user's latest 5, tiled
n_users_list, n_items_list = [], []
for u in range(n_users):
    mine = items_all[users_all == u]
    s = extra["shift"][u]
    n_items_list.append(mine[len(mine) - s:])
    n_users_list.append(np.full(s, u + n_users))
n_users_arr, n_items_arr = np.concatenate(n_users_list), np.concatenate(n_items_list)
reps = max(1, len(users_all) // len(n_users_arr))
next_users, next_items = np.tile(n_users_arr, reps), np.tile(n_items_arr, reps)
history = (np.r_[users_all, users_all + n_users], np.r_[items_all, items_all])  # negatives avoid the real user's items
retriever = HybridRetriever(inp.item_q.numpy(), np.array(list(inp.item_categories), dtype=object))
pi, match = config.retrieval.pi, config.retrieval.pi_match


def evaluate(sampler, cond, categories, which):
    finals = denoise(sampler, cond, list(range(n_users)), inp.seed)[-1]  # [U,d]
    return retrieval_metrics(finals, retriever, categories, pi, match, t, which)


for name in sets:
    if name == "prompt":
        users, items = p_users, p_items
    elif name == "next":
        users, items = next_users, next_items
    else:  # both, subsampled to the same number of pairs per epoch
        keep = np.random.default_rng(inp.seed).permutation(len(p_users) + len(next_users))[:len(p_users)]
        users, items = np.r_[p_users, next_users][keep], np.r_[p_items, next_items][keep]
    torch.manual_seed(inp.seed)
    denoiser = Denoiser(replace(heads.diffusion_config(), cond_dim=conditions.shape[1], cond_standardize=True))
    sampler = DenoiserSampler(denoiser, config)
    checks, best = [], None

    def check(epoch, sampler=sampler, checks=checks, denoiser=denoiser):  # bound now: called within this iteration
        global best
        valid = evaluate(sampler, inp.conditions.float(), inp.categories, ("valid",))["valid"]
        checks.append((epoch, round(valid["HR@10"], 4)))
        if best is None or (valid["HR@10"], valid["NDCG@10"]) > best[:2]:
            best = (valid["HR@10"], valid["NDCG@10"], epoch, {k: v.clone() for k, v in denoiser.state_dict().items()})
        return best[2]

    start = time.perf_counter()
    best = None
    check(0)
    refine_epochs(denoiser, config, conditions, users, items, inp.item_q, epochs, 0, check,
                  np.random.default_rng(inp.seed + 1), torch.Generator().manual_seed(inp.seed + 1), "cpu",
                  history=history)
    denoiser.load_state_dict(best[3])
    valid = evaluate(sampler, inp.conditions.float(), inp.categories, ("valid", "test"))
    test_v = evaluate(sampler, extra["with_valid"], extra["with_valid_categories"], ("test",))["test"]
    print(f"{name}: {len(users)} pairs/epoch, best epoch {best[2]}: valid {valid['valid']['HR@10']:.4f} / "
          f"{valid['valid']['NDCG@10']:.4f}, test {valid['test']['HR@10']:.4f} / {valid['test']['NDCG@10']:.4f}, "
          f"test with the validation item shown {test_v['HR@10']:.4f} / {test_v['NDCG@10']:.4f}; checks {checks} "
          f"({time.perf_counter() - start:.0f} s)", flush=True)
