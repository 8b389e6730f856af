"""Each run's DeftRec against its own LightGCN on the same test users (users hit by one only, exact McNemar, as
`deftrec eval RUN` prints under its table) and the runs pooled, for seeds of one setting:
python scripts/measure/pooled_lightgcn.py RUN [RUN ...]."""
import sys
from pathlib import Path

from engine.services.evaluation import mcnemar_p, run_metrics
from engine.services.run import Run
from engine.services.slices import versus_reference

paths = sys.argv[1:]
if not paths:
    sys.exit("usage: pooled_lightgcn.py RUN [RUN ...]")
print("| run | DeftRec test HR@10 / NDCG@10 | LightGCN test HR@10 / NDCG@10 | test users hit by DeftRec only / LightGCN only | McNemar p |")
print("|---|---|---|---|---|")
only_deftrec = only_lightgcn = 0
for path in paths:
    run = Run.open(Path(path))
    metrics = run_metrics(run)
    versus = versus_reference(run)
    if not versus:
        sys.exit(f"{path}: no DeftRec / LightGCN pair to compare")
    a, b = versus["hit_by_a_only"], versus["hit_by_b_only"]
    only_deftrec, only_lightgcn = only_deftrec + a, only_lightgcn + b
    d, lg = metrics["deftrec"]["test"], metrics["lightgcn"]["test"]
    print(f"| {run.path.name} | {d['HR@10']:.4f} / {d['NDCG@10']:.4f} | {lg['HR@10']:.4f} / {lg['NDCG@10']:.4f} | "
          f"{a} / {b} | {versus['mcnemar_p']:.3g} |")
if len(paths) > 1:
    print(f"| {len(paths)} runs pooled | | | {only_deftrec} / {only_lightgcn} | {mcnemar_p(only_deftrec, only_lightgcn):.3g} |")
