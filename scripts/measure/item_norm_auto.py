"""What `deftrec train --item-norm auto` chooses on runs trained without it, and what it gives on test: each run's
final preference vectors (denoised from its cached conditions, as eval re-ranks them) scored by the run's retriever
with item weight ‖q_j‖^α (π as the run has it), α among --item-norm auto's grid; the α with the best validation HR@10,
then NDCG@10 (ties to the smaller), against α = 0 (Eq. 14) on the same test users (exact McNemar), then a table with
the runs of each dataset pooled (discordant users summed over its seeds, against α = 0 and against MF).
python scripts/measure/item_norm_auto.py RUN [RUN ...]"""
import sys
from pathlib import Path

import numpy as np

from engine.model.config import ITEM_NORM_GRID
from engine.model.metrics import metrics_from_ranks
from engine.model.ranking import rank_all
from engine.model.recommender import denoise
from engine.model.retriever import HybridRetriever
from engine.services.contract import recommender
from engine.services.diagnostics import read_run, retrieval_ranks
from engine.services.evaluation import mcnemar_p
from engine.services.run import Run


def ranks(run_path: str, alpha: float) -> dict[str, np.ndarray]:
    """0-based rank of each user's validation (train masked) and test (train + valid masked) item under α."""
    inp = INPUTS[run_path]
    config = inp.heads.config.retrieval
    retriever = HybridRetriever(inp.item_q.numpy(), np.array(inp.item_categories, dtype=object), item_norm=alpha)
    return retrieval_ranks(FINALS[run_path], retriever, inp.categories, config.pi, config.pi_match, inp.targets)


INPUTS, FINALS = {}, {}
rows = []
for path in sys.argv[1:]:
    inp = INPUTS[path] = read_run(Run.open(Path(path)))
    FINALS[path] = denoise(inp.heads, inp.conditions.float(), list(range(inp.targets.n_users)), inp.seed)[-1]  # [U,d]
    by_alpha = {alpha: ranks(path, alpha) for alpha in ITEM_NORM_GRID}
    figures = {a: {s: metrics_from_ranks(r) for s, r in by.items()} for a, by in by_alpha.items()}
    for alpha in ITEM_NORM_GRID:
        f = figures[alpha]
        print(f"{path} α {alpha:g}: valid {f['valid']['HR@10']:.4f} / {f['valid']['NDCG@10']:.4f}  "
              f"test {f['test']['HR@10']:.4f} / {f['test']['NDCG@10']:.4f}", flush=True)
    best = max(ITEM_NORM_GRID, key=lambda a: (figures[a]["valid"]["HR@10"], figures[a]["valid"]["NDCG@10"], -a))
    base, chosen = by_alpha[0.0]["test"] < 10, by_alpha[best]["test"] < 10  # [U] test hits
    only_best, only_base = int((chosen & ~base).sum()), int((base & ~chosen).sum())
    run = Run.open(Path(path))
    t = inp.targets
    mf_model = recommender(run, "mf")
    mf_ranks = rank_all(lambda batch, m=mf_model: m.scores(np.asarray(batch)), t.n_users, t.n_items, t.test_history,
                        t.test_item)  # [U] MF's 0-based test ranks
    mf = mf_ranks < 10  # [U] MF's test hits
    vs_mf = (int((chosen & ~mf).sum()), int((mf & ~chosen).sum()), metrics_from_ranks(mf_ranks)["HR@10"])
    rows.append((path, best, figures[0.0], figures[best], only_best, only_base, mcnemar_p(only_best, only_base),
                 run.config["dataset"]["name"], vs_mf))

print("\n| run | α chosen on validation | valid HR@10 α = 0 → α | test HR@10 α = 0 → α | test NDCG@10 α = 0 → α "
      "| test users hit only with α / only with 0 | McNemar p | the run's MF test HR@10 | hit only by DeftRec (α) / "
      "only by MF (p) |")
print("|---|---|---|---|---|---|---|---|---|")
for path, best, zero, chosen, only_best, only_base, p, _, (b, c, mf_hr) in rows:
    print(f"| {Path(path).name} | {best:g} | {zero['valid']['HR@10']:.4f} → {chosen['valid']['HR@10']:.4f} "
          f"| {zero['test']['HR@10']:.4f} → {chosen['test']['HR@10']:.4f} "
          f"| {zero['test']['NDCG@10']:.4f} → {chosen['test']['NDCG@10']:.4f} | {only_best} / {only_base} | {p:.3g} "
          f"| {mf_hr:.4f} | {b} / {c} (p {mcnemar_p(b, c):.3g}) |")
for dataset in dict.fromkeys(r[7] for r in rows):
    mine = [r for r in rows if r[7] == dataset]
    if len(mine) > 1:
        b, c = sum(r[4] for r in mine), sum(r[5] for r in mine)
        mf_b, mf_c = sum(r[8][0] for r in mine), sum(r[8][1] for r in mine)
        print(f"| {dataset}, {len(mine)} runs pooled | | | | | {b} / {c} | {mcnemar_p(b, c):.3g} | "
              f"| {mf_b} / {mf_c} (p {mcnemar_p(mf_b, mf_c):.3g}) |")
