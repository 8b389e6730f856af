"""Presenting a run's metrics (computed at training time under the run's protocol)."""

from __future__ import annotations

import pandas as pd
from rich.table import Table
from rich.text import Text

from engine.services.contract import MODEL_ORDER  # the order of every table's models

METRIC_ORDER = ("HR@10", "NDCG@10", "HR@20", "NDCG@20")


def ordered_models(models) -> list[str]:
    return sorted(set(models), key=lambda m: (MODEL_ORDER.index(m) if m in MODEL_ORDER else 99, m))


def metrics_table(metrics: pd.DataFrame, title: str = "", mark_best: bool = False, boxed: bool = True) -> Table:
    """Rows model × split (test first, MODEL_ORDER), the four metrics as columns; mark_best: best test value bold."""
    table = Table(title=title) if boxed else Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("model")
    table.add_column("split")
    for metric in METRIC_ORDER:
        table.add_column(metric, justify="right")
    models = ordered_models(metrics["model"])
    values = {(r.model, r.split, r.metric): r.value for r in metrics.itertuples()}
    best = {m: max((values.get((model, "test", m), -1.0) for model in models), default=-1.0) for m in METRIC_ORDER}
    for split_name in ("test", "valid"):
        for model in models:
            cells = []
            for metric in METRIC_ORDER:
                value = values.get((model, split_name, metric))
                marked = mark_best and split_name == "test" and value is not None and value == best[metric]
                cells.append(Text("—" if value is None else f"{value:.4f}", style="bold green" if marked else ""))
            table.add_row(model, split_name, *cells, end_section=model == models[-1])
    return table
