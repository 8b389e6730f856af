"""`deftrec diagnose`: how much of the user the condition c carries, and what retrieval reaches with a perfect one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deftrec_tui.errors import cli_errors


@cli_errors
def diagnose(
    run: Annotated[Path, typer.Argument(help="A run directory trained with --stage all.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    ceiling: Annotated[bool, typer.Option("--ceiling/--no-ceiling", help="Train the ceiling: a fresh denoiser conditioned on the LightGCN user vector, with the run's refinement budget (minutes on a CPU).")] = True,
    ceiling_epochs: Annotated[int | None, typer.Option(help="Refinement epochs of the ceiling (default: the run's profile).", min=0)] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the R² split, the sampler and the ceiling (default: the run's).")] = None,
) -> None:
    """Ridge R² from the cached conditions to the LightGCN user vector, LightGCN dot/cosine ranking, the variety of
    the generated text, DeftRec with π off / exact / overlap, and the ceiling of the retrieval side."""
    import json

    from engine.services.diagnostics import diagnose_run
    from engine.services.run import Run
    from train.progress import make_progress

    opened = Run.open(run)
    with make_progress(transient=True) as progress:
        task = None

        def on_epoch(epoch: int, total: int, status: str) -> None:
            nonlocal task
            if task is None:
                task = progress.add_task("ceiling", total=total, status="")
            progress.update(task, completed=epoch, status=status)

        result = diagnose_run(opened, ceiling=ceiling, seed=seed, ceiling_epochs=ceiling_epochs, on_epoch=on_epoch)
    if json_out:
        print(json.dumps(result, indent=2))
        return
    print_diagnostics(result, opened.path.name)


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def print_diagnostics(result: dict, name: str) -> None:
    """The retrieval figures as one table (valid and test HR@10/NDCG@10), then R² and the text statistics."""
    from rich.console import Console
    from rich.table import Table
    console = Console()
    cf = "random CF vectors" if result.get("cf") == "random" else "LightGCN"
    table = Table(title=f"{name}: diagnostics (full ranking; train masked for valid, train+valid for test)")
    table.add_column("figure")
    for column in ("valid HR@10", "valid NDCG@10", "test HR@10", "test NDCG@10"):
        table.add_column(column, justify="right")
    pi = result["pi"]
    rows = [(f"{cf} user · item (dot)", result["lightgcn_dot"]),
            (f"{cf} cosine", result["lightgcn_cosine"]),
            *([(f"cosine of the latest 5 train items' mean ({cf})", result["recent_items_cosine"])]
              if result.get("recent_items_cosine") else []),
            ("DeftRec, π = 0", pi["off"]),
            (f"DeftRec, π = {pi['pi']:g} exact", pi["exact"]),
            (f"DeftRec, π = {pi['pi']:g} overlap", pi["overlap"])]
    ceiling = result.get("ceiling")
    if ceiling and "valid" in ceiling:
        rows.append((f"ceiling: denoiser on the {cf} user vector (epoch {ceiling['epoch']})", ceiling))
    for label, figures in rows:
        table.add_row(label, *(_cell(figures[split][metric]) for split in ("valid", "test")
                               for metric in ("HR@10", "NDCG@10")))
    console.print(table)
    r2 = result["condition_r2"]
    if r2["r2"] is None:
        console.print("condition → user vector: too few users for the ridge R²", highlight=False)
    else:
        console.print(f"condition c → {cf} user vector: ridge R² {r2['r2']:.4f} on {r2['held_out_users']} held-out "
                      f"users (λ = {r2['lambda']:g}, chosen on the {r2['train_users']} training users)", highlight=False)
    recent = result.get("recent_items_r2") or {}
    if recent.get("r2") is not None:
        console.print(f"condition c → mean {cf} vector of the user's latest train items: ridge R² {recent['r2']:.4f} "
                      f"(λ = {recent['lambda']:g})", highlight=False)
    text = result["text"]
    console.print(f"generated text: {text['distinct_sentences']} distinct sentences for {text['users']} users, the most "
                  f"frequent for {text['top_sentence_share']:.1%}; {text['distinct_categories']} distinct categories, "
                  f"the most frequent ({text['top_category'] or '—'}) for {text['top_category_share']:.1%}, none for "
                  f"{text['no_category_share']:.1%}", highlight=False)
    if "history_match_share" in text:  # runs diagnosed before it lack it
        console.print(f"text against its prompt's history: names exactly the history's leading category parts for "
                      f"{text['history_match_share']:.1%} (a constant text: {text['history_match_constant']:.1%}), at "
                      f"least one of them for {text['history_overlap_share']:.1%} (a constant text: "
                      f"{text['history_overlap_constant']:.1%}); {text['distinct_leads']} distinct "
                      f"leading pairs", highlight=False)
    if ceiling is None:
        console.print("ceiling not computed (--no-ceiling)", highlight=False)
    elif "skipped" in ceiling:
        console.print(f"ceiling: {ceiling['skipped']}", highlight=False)
