"""Pairs of runs of one dataset that differ in one setting, each pair's paired test-hit comparison (HR@10 of DeftRec's
stored lists) and the pairs pooled (users hit by one run only, summed over the pairs; McNemar's exact p), plus the
same comparison on validation (each run's final vectors denoised again from its cached conditions and ranked by its
own retriever, train masked; checked against the run's stored validation HR@10):
python scripts/measure/pooled_pairs.py A1 B1 [A2 B2 ...]."""
import sys
from pathlib import Path

import numpy as np

from engine.model.recommender import denoise
from engine.model.retriever import HybridRetriever
from engine.services.diagnostics import read_run, retrieval_ranks
from engine.services.evaluation import mcnemar_p, paired_hits, run_metrics, test_hits
from engine.services.run import Run


def valid_hits(run: Run) -> np.ndarray:
    """[U] whether each user's validation item is in the run's top 10 (train masked), recomputed as training scored it."""
    inp = read_run(run)
    retrieval = inp.heads.config.retrieval
    retriever = HybridRetriever(inp.item_q.numpy(), np.array(inp.item_categories, dtype=object),
                                item_norm=retrieval.item_norm)
    finals = denoise(inp.heads, inp.conditions.float(), list(range(inp.targets.n_users)), inp.seed)[-1]  # [U,d]
    hits = retrieval_ranks(finals, retriever, inp.categories, retrieval.pi, retrieval.pi_match, inp.targets,
                           ("valid",))["valid"] < 10  # [U]
    stored = run_metrics(run)["deftrec"]["valid"]["HR@10"]
    if abs(float(hits.mean()) - stored) > 1e-9:
        sys.exit(f"{run.path}: recomputed validation HR@10 {hits.mean():.4f} is not the stored {stored:.4f}")
    return hits


paths = sys.argv[1:]
if len(paths) % 2 or not paths:
    sys.exit("usage: pooled_pairs.py A1 B1 [A2 B2 ...]")
print("| A | B | valid HR@10 A → B | valid users hit by A only / B only (p) | test HR@10 A → B "
      "| test users hit by A only / B only | McNemar p |")
print("|---|---|---|---|---|---|---|")
only_a = only_b = valid_a = valid_b = 0
for a_path, b_path in zip(paths[::2], paths[1::2]):
    a, b = Run.open(Path(a_path)), Run.open(Path(b_path))
    paired = paired_hits(test_hits(a), test_hits(b))
    only_a += paired["hit by A only"]
    only_b += paired["hit by B only"]
    ha, hb = valid_hits(a), valid_hits(b)
    va_only, vb_only = int((ha & ~hb).sum()), int((hb & ~ha).sum())
    valid_a += va_only
    valid_b += vb_only
    print(f"| {a.path.name} | {b.path.name} | {ha.mean():.4f} → {hb.mean():.4f} "
          f"| {va_only} / {vb_only} ({mcnemar_p(va_only, vb_only):.3g}) | {paired['HR@10 A']:.4f} → {paired['HR@10 B']:.4f} "
          f"| {paired['hit by A only']} / {paired['hit by B only']} | {paired['mcnemar_p']:.3g} |")
if len(paths) > 2:
    print(f"| {len(paths) // 2} pairs pooled | | | {valid_a} / {valid_b} ({mcnemar_p(valid_a, valid_b):.3g}) | "
          f"| {only_a} / {only_b} | {mcnemar_p(only_a, only_b):.3g} |")
