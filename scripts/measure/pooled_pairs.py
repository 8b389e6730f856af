"""Pairs of runs of one dataset that differ in one setting, each pair's paired test-hit comparison (HR@10 of DeftRec's
stored lists) and the pairs pooled (users hit by one run only, summed over the pairs; McNemar's exact p), plus the
validation HR@10 of both: python scripts/measure/pooled_pairs.py A1 B1 [A2 B2 ...]."""
import sys
from pathlib import Path

from engine.services.evaluation import mcnemar_p, paired_hits, run_metrics, test_hits
from engine.services.run import Run

paths = sys.argv[1:]
if len(paths) % 2 or not paths:
    sys.exit("usage: pooled_pairs.py A1 B1 [A2 B2 ...]")
print("| A | B | valid HR@10 A → B | test HR@10 A → B | test users hit by A only / B only | McNemar p |")
print("|---|---|---|---|---|---|")
only_a = only_b = 0
for a_path, b_path in zip(paths[::2], paths[1::2]):
    a, b = Run.open(Path(a_path)), Run.open(Path(b_path))
    paired = paired_hits(test_hits(a), test_hits(b))
    only_a += paired["hit by A only"]
    only_b += paired["hit by B only"]
    va, vb = (run_metrics(run)["deftrec"]["valid"]["HR@10"] for run in (a, b))
    print(f"| {a.path.name} | {b.path.name} | {va:.4f} → {vb:.4f} | {paired['HR@10 A']:.4f} → {paired['HR@10 B']:.4f} "
          f"| {paired['hit by A only']} / {paired['hit by B only']} | {paired['mcnemar_p']:.3g} |")
if len(paths) > 2:
    print(f"| {len(paths) // 2} pairs pooled | | | | {only_a} / {only_b} | {mcnemar_p(only_a, only_b):.3g} |")
