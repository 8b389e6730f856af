"""`deftrec eval`: the metrics table of a run, every model, validation and test, under a masking policy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deftrec_tui.errors import cli_errors

METRIC_ORDER = ("HR@10", "NDCG@10", "HR@20", "NDCG@20")


@cli_errors
def eval_run(
    run: Annotated[Path, typer.Argument(help="A run directory written by deftrec train.")],
    other: Annotated[Path | None, typer.Argument(help="A second run of the same dataset, shown beside the first with the differences of settings and metrics.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    mask_history: Annotated[str, typer.Option(help="train+valid (ours: the user's train items, and the validation item for test, are not ranked) | none (the authors' code: everything ranked).")] = "train+valid",
    paper: Annotated[bool, typer.Option("--paper", help="Put the test metrics beside the paper's Table 2 for this dataset, with the deltas.")] = False,
    slices: Annotated[bool, typer.Option("--slices", help="Where the models win and lose: test HR@10/NDCG@10 by history length, test-item category and popularity; coverage, popularity and diversity of each top-10; DeftRec vs LightGCN overlap; generated vs history categories (the explorer's analysis tab).")] = False,
) -> None:
    """Show HR@K and NDCG@K of every model in the run, with the protocol and masking policy they were measured under."""
    import json

    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    from data.errors import DeftrecError
    from engine.services.evaluation import MASK_POLICIES, POLICY_TEXT, paper_comparison, paper_dataset, run_metrics
    from engine.services.run import Run
    from train.evaluate import metrics_table

    if mask_history not in MASK_POLICIES:
        raise DeftrecError(f"unknown --mask-history {mask_history!r}", hint=f"use one of: {', '.join(MASK_POLICIES)}")
    if slices and (other is not None or paper or mask_history != "train+valid"):
        raise DeftrecError("--slices takes one run under the stored train+valid masking",
                           hint="leave out the second run, --paper and --mask-history")
    opened = Run.open(run)
    if slices:
        from engine.services.slices import slice_report
        report = slice_report(opened)
        if json_out:
            print(json.dumps(report.to_dict(), indent=2))
        else:
            _print_slices(report)
        return
    dataset = opened.config["dataset"]["name"]
    table2 = paper_dataset(dataset) if paper else None
    if paper and table2 is None:
        raise DeftrecError(f"the paper's Table 2 has no rows for dataset {dataset!r}",
                           hint="Table 2 covers paper:…/software, paper:…/beauty and paper:…/lastfm")
    nested = run_metrics(opened, mask_history)
    if other is not None:
        from engine.services.evaluation import compare_runs
        second = Run.open(other)
        comparison = compare_runs(opened, nested, second, run_metrics(second, mask_history))
        if json_out:
            print(json.dumps({"mask_history": mask_history, **comparison}, indent=2, default=str))
            return
        _print_comparison(comparison, mask_history)
        return
    versus = None
    if mask_history == "train+valid":  # the stored lists are train+valid masked; None for a run without DeftRec
        from engine.services.slices import versus_reference
        versus = versus_reference(opened)
    if json_out:
        out = {"run": str(opened.path), "dataset": dataset, "protocol": opened.config["protocol"],
               "mask_history": mask_history, "metrics": nested}
        if versus:
            out["versus_reference"] = versus
        diagnostics = (opened.config.get("deftrec") or {}).get("diagnostics")
        if diagnostics:  # stored by the training (everything of `deftrec diagnose` but the ceiling)
            out["diagnostics"] = diagnostics
        if table2:
            out["paper_table2"] = paper_comparison(nested, table2)
        print(json.dumps(out, indent=2))
        return
    console = Console()
    frame = pd.DataFrame([{"model": m, "split": s, "metric": k, "value": v}
                          for m, splits in nested.items() for s, values in splits.items() for k, v in values.items()])
    console.print(metrics_table(frame, title=f"{opened.path.name} ({dataset}), mask: {mask_history}"))
    console.print(f"protocol: {opened.config['protocol']}", highlight=False)
    console.print(f"masking policy {mask_history}: {POLICY_TEXT[mask_history]}", highlight=False)
    if versus:
        console.print(f"paired, test HR@{versus['k']} on the same users: {versus['hit_by_a_only']} hit by "
                      f"{versus['a']} only, {versus['hit_by_b_only']} by {versus['b']} only, {versus['hit_by_both']} by "
                      f"both; exact McNemar p {versus['mcnemar_p']:.3g} (a lead with p ≥ 0.05 is not told apart from "
                      "the run-to-run spread)", highlight=False)
    if table2:
        table = Table(title=f"test, beside the paper's Table 2 ({table2}); Δ = this run − paper")
        table.add_column("model")
        table.add_column("source")
        for metric in METRIC_ORDER:
            table.add_column(metric, justify="right")
        for row in paper_comparison(nested, table2):
            cells = []
            for metric in METRIC_ORDER:
                value = row.get(metric)
                text = "—" if value is None else f"{value:.4f}"
                delta = row.get("delta", {}).get(metric)
                if delta is not None:
                    text += f" ({delta:+.4f})"
                cells.append(text)
            table.add_row(row["model"], row["source"], *cells, end_section=row["source"] == "this run")
        console.print(table)
        console.print("the paper's protocol is not fully stated; its authors' code ranks every item without masking "
                      "the history at test (compare with --mask-history none)", highlight=False)


def _print_comparison(comparison: dict, mask_history: str) -> None:
    """Metrics of two runs side by side (A, B, B − A), one row per metric, the settings that differ, the paired
    test-hit comparison and the tokenizers' collapse statistics."""
    from rich.console import Console
    from rich.table import Table
    console = Console()
    a, b = comparison["a"]["name"], comparison["b"]["name"]
    table = Table(title=f"A = {a}, B = {b} ({comparison['dataset']}, mask: {mask_history})")
    for column in ("model", "split", "metric", "A", "B", "B − A"):
        table.add_column(column, justify="right" if column in ("A", "B", "B − A") else "left")
    for row in comparison["rows"]:
        for metric in METRIC_ORDER:
            va, vb = row["a"].get(metric), row["b"].get(metric)
            text = lambda v: "—" if v is None else f"{v:.4f}"  # noqa: E731
            delta = "" if va is None or vb is None else f"{vb - va:+.4f}"
            table.add_row(row["model"], row["split"], metric, text(va), text(vb), delta,
                          end_section=metric == METRIC_ORDER[-1])
    console.print(table)
    if comparison["settings"]:
        settings = Table(title="settings that differ")
        for column in ("setting", "A", "B"):
            settings.add_column(column)
        for key, (va, vb) in comparison["settings"].items():
            settings.add_row(key, str(va), str(vb))
        console.print(settings)
    else:
        console.print("the two runs have the same settings", highlight=False)
    paired = comparison.get("paired_test")
    if paired:
        k = paired["k"]
        low, high = paired["ci95"]
        console.print(f"paired on the {paired['users']} users' test items (stored DeftRec top-{k}, train+valid masked): "
                      f"HR@{k} B − A {paired['B − A']:+.4f}, 95% bootstrap interval [{low:+.4f}, {high:+.4f}]; "
                      f"hit by A only {paired['hit by A only']}, by B only {paired['hit by B only']}, by both "
                      f"{paired['hit by both']}; McNemar exact p = {paired['mcnemar_p']:.3g}", highlight=False)
    if comparison.get("tokenizer"):
        health = Table(title="tokenizer after training (collapse statistics; — : not recorded)")
        for column in ("statistic", "A", "B"):
            health.add_column(column, justify="left" if column == "statistic" else "right")
        for key, (va, vb) in comparison["tokenizer"].items():
            health.add_row(key, "—" if va is None else f"{va:g}", "—" if vb is None else f"{vb:g}")
        console.print(health)


def _print_slices(report) -> None:
    """The figures of engine.services.slices.SliceReport as rich tables (the same numbers as --json, rounded)."""
    from rich.console import Console

    from deftrec_tui import slice_tables as st
    console = Console()
    k = report.k
    console.print(st.header_line(report), highlight=False)
    console.print(st.slice_table(report, st.history_rows(report), "train items",
                                 f"\nHR@{k} NDCG@{k} by history length (train items of the user)"))
    console.print(st.slice_table(report, report.category, "category", "\n" + st.category_title(report)))
    console.print(st.slice_table(report, report.popularity, "popularity",
                                 "\nby the test item's popularity (its train interactions)"))
    console.print(st.lists_table(report, f"\neach model's top-{k}"))
    console.print(st.LISTS_NOTE, style="dim", highlight=False)
    if report.overlap:
        console.print(st.overlap_line(report), highlight=False)
    if report.generated:
        console.print(st.generated_table(report, "\ngenerated categories against the histories' (share of users)"))
        console.print(st.generated_line(report), highlight=False)
    for note in report.notes:
        console.print(note, style="yellow", highlight=False)
