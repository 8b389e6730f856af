"""Presenting a run's metrics (computed at training time under the run's protocol)."""

from __future__ import annotations

import pandas as pd
from rich.table import Table

METRIC_ORDER = ("HR@10", "NDCG@10", "HR@20", "NDCG@20")
MODEL_ORDER = ("deftrec", "lightgcn", "mf", "pop")


def ordered_models(models) -> list[str]:
    return sorted(set(models), key=lambda m: (MODEL_ORDER.index(m) if m in MODEL_ORDER else 99, m))


def metrics_table(metrics: pd.DataFrame, title: str = "") -> Table:
    """One row per model and split (test first), the four metrics as columns; fits 80 columns."""
    table = Table(title=title)
    table.add_column("model")
    table.add_column("split")
    for metric in METRIC_ORDER:
        table.add_column(metric, justify="right")
    for split_name in ("test", "valid"):
        for model in ordered_models(metrics["model"]):
            rows = metrics[(metrics.model == model) & (metrics.split == split_name)]
            values = dict(zip(rows["metric"], rows["value"]))
            table.add_row(model, split_name, *(f"{values[m]:.4f}" if m in values else "—" for m in METRIC_ORDER),
                          end_section=model == ordered_models(metrics["model"])[-1])
    return table
