"""The run summary: the metrics table of `deftrec eval` (DeftRec beside the baselines) and the run's config."""

from __future__ import annotations

import json

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Label, Static

METRICS = ("HR@10", "NDCG@10", "HR@20", "NDCG@20")


def metrics_table(metrics) -> Table:
    """Rows model × split, columns the four metrics; the best test value of each column in bold."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("model")
    table.add_column("split")
    for name in METRICS:
        table.add_column(name, justify="right")
    values = {(r.model, r.split, r.metric): r.value for r in metrics.itertuples()}
    models = sorted({m for m, _, _ in values}, key=lambda m: (m != "deftrec", m))
    best = {name: max((values.get((m, "test", name), -1.0) for m in models), default=-1.0) for name in METRICS}
    for model in models:
        for split in ("valid", "test"):
            cells = []
            for name in METRICS:
                value = values.get((model, split, name))
                style = "bold green" if split == "test" and value is not None and value == best[name] else ""
                cells.append(Text("–" if value is None else f"{value:.4f}", style=style))
            table.add_row(model, split, *cells)
    return table


class RunSummary(VerticalScroll):
    def __init__(self, session, **kwargs) -> None:
        super().__init__(**kwargs)
        self.session = session

    def compose(self) -> ComposeResult:
        config = self.session.config
        dataset = config.get("dataset", {})
        after = dataset.get("after", {})
        yield Label(f"run {self.session.path}", classes="section-title")
        yield Static(f"dataset {dataset.get('name', '?')}: {after.get('users', '?')} users, "
                     f"{after.get('items', '?')} items, {after.get('interactions', '?')} interactions · "
                     f"trained in {config.get('seconds', '?')} s")
        yield Label("metrics (model selection on validation only)", classes="section-title")
        yield Static(metrics_table(self.session.metrics), id="metrics-table")
        yield Label("protocol", classes="section-title")
        yield Static(Text(str(config.get("protocol", "")), style="dim"))
        yield Label("config", classes="section-title")
        shown = {k: v for k, v in config.items() if k not in ("files", "protocol")}
        yield Static(Text(json.dumps(shown, indent=2, default=str)), id="config-text")
