"""The quality table of docs/quality.md from runs alone: each run's test/validation metrics, what its condition
carries (the diagnostics stored at training), its settings against the first run, and the paired test of its
DeftRec test hits against the first run of the same seed-0 reference (deftrec eval A B), and against its own
LightGCN on the same users (the overlap of deftrec eval --slices, exact McNemar)."""

from __future__ import annotations

import sys
from pathlib import Path

from engine.model.retriever import category_parts
from engine.services.diagnostics import diagnose_run, prompt_leads, read_run, text_stats
from engine.services.evaluation import compare_runs, run_metrics
from engine.services.run import Run
from engine.services.slices import versus_reference

KEYS = ("prompt.response", "prompt.history", "prompt.title_year", "prompt.item_text", "condition.pool", "prompt.max_history", "diffusion.neg_norm", "training.distinct_positives", "training.refine_targets", "training.refine_init", "training.align_weight", "profile.refine_epochs", "profile.refine_patience",
        "retrieval.pi_match", "tokenizer.kind", "diffusion.aux_loss", "llm.inference_precision")  # the settings the rows differ in (dotted paths of engine/model/config.py)


def _share(value: float | None) -> str:
    return "" if value is None else f"{value:.0%}"


def _pi(pi: dict) -> str:
    return " / ".join(f"{pi[m]['valid']['HR@10']:.4f}" if m in pi else "–" for m in ("off", "exact", "overlap"))


def main(paths: list[str]) -> None:
    runs = [Run.open(Path(p)) for p in paths]
    reference = runs[0]
    ref_metrics = run_metrics(reference)
    header = ("| run | profile | settings | test HR@10 | test NDCG@10 | valid HR@10 | c R² user / recent | distinct texts | top text | text = history's leading parts (a constant text) | valid HR@10 π off / exact / overlap | train s | "
             f"vs {reference.path.name}, paired HR@10 (95% CI, McNemar p) | LightGCN test HR@10 / NDCG@10 | MF | pop | "
             "test hits only DeftRec / only LightGCN (McNemar p) |")
    lines = [header,
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        metrics = run_metrics(run)
        deftrec = run.config.get("deftrec") or {}
        diag = deftrec.get("diagnostics") or diagnose_run(run, ceiling=False)  # a run trained before they were stored
        text = diag.get("text") or {}
        mine, theirs = run.deftrec_config, reference.deftrec_config  # migrated in memory for format-1 runs
        settings = ", ".join(f"{k.split('.')[-1]}={mine.get(k)}" for k in KEYS if mine.get(k) != theirs.get(k))
        paired = ""
        if run is not reference:
            test = compare_runs(reference, ref_metrics, run, metrics)["paired_test"]
            if test:
                paired = (f"{test['B − A']:+.4f} [{test['ci95'][0]:+.3f}, {test['ci95'][1]:+.3f}], "
                          f"p {test['mcnemar_p']:.3g}")
        t, v = metrics["deftrec"]["test"], metrics["deftrec"]["valid"]
        lg, mf, pop = (metrics[m]["test"] for m in ("lightgcn", "mf", "pop"))
        pair = versus_reference(run)  # the run's DeftRec vs its own LightGCN, same users and test items
        versus = f"{pair['hit_by_a_only']} / {pair['hit_by_b_only']} (p {pair['mcnemar_p']:.3g})" if pair else ""
        r2s = [(diag.get(key) or {}).get("r2") for key in ("condition_r2", "recent_items_r2")]
        inputs = read_run(run)  # the text against its prompt's history, recomputed (runs before it did not store it)
        faithful = text_stats(inputs.texts, inputs.categories,
                              prompt_leads(inputs.targets, inputs.item_categories, mine, inputs.seed),
                              category_parts(inputs.item_categories))
        lines.append(
            f"| {run.path.name} | {mine.profile.name} | {settings or 'reference'} | "
            f"{t['HR@10']:.4f} | {t['NDCG@10']:.4f} | {v['HR@10']:.4f} | "
            f"{' / '.join('–' if r is None else f'{r:.2f}' for r in r2s)} | {text.get('distinct_sentences', '')} | "
            f"{_share(text.get('top_sentence_share'))} | "
            f"{_share(faithful['history_match_share'])} ({_share(faithful['history_match_constant'])}) | {_pi(diag.get('pi') or {})} | {run.config.get('seconds', '')} | "
            f"{paired} | "
            f"{lg['HR@10']:.4f} / {lg['NDCG@10']:.4f} | {mf['HR@10']:.4f} | {pop['HR@10']:.4f} | {versus} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
