"""`deftrec eval`: the metrics table of a run, every model, validation and test."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deftrec_tui.errors import cli_errors

METRIC_ORDER = ("HR@10", "NDCG@10", "HR@20", "NDCG@20")


@cli_errors
def eval_run(
    run: Annotated[Path, typer.Argument(help="A run directory written by deftrec train.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show HR@K and NDCG@K of every model in the run, with the protocol they were measured under."""
    import json

    from rich.console import Console

    from data.catalog import connect, read_metrics
    from engine.run import Run
    from train.evaluate import metrics_table

    opened = Run.open(run)
    db = connect(opened.catalog_path, readonly=True)
    metrics = read_metrics(db)
    db.conn.close()
    if json_out:
        nested: dict = {}
        for row in metrics.itertuples():
            nested.setdefault(row.model, {}).setdefault(row.split, {})[row.metric] = row.value
        print(json.dumps({"run": str(opened.path), "dataset": opened.config["dataset"]["name"],
                          "protocol": opened.config["protocol"], "metrics": nested}, indent=2))
        return
    console = Console()
    console.print(metrics_table(metrics, title=f"{opened.path.name} ({opened.config['dataset']['name']})"))
    console.print(f"protocol: {opened.config['protocol']}", highlight=False)
