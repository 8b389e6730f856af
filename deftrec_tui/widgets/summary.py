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


def diagnostics_lines(diagnostics: dict) -> list[str]:
    """A few lines of the diagnostics training stored (`deftrec diagnose` has them all): R², text variety, π."""
    lines = []
    r2 = diagnostics.get("condition_r2") or {}
    if r2.get("r2") is not None:
        lines.append(f"condition c → user vector: ridge R² {r2['r2']:.3f} (λ {r2.get('lambda', 0):g}, "
                     f"{r2.get('held_out_users', '?')} held-out users)")
    text = diagnostics.get("text") or {}
    if text:
        lines.append(f"generated text: {text.get('distinct_sentences', '?')} distinct sentences for "
                     f"{text.get('users', '?')} users, the most frequent for {text.get('top_sentence_share', 0):.1%}; "
                     f"{text.get('distinct_categories', '?')} categories, the top one for "
                     f"{text.get('top_category_share', 0):.1%}")
    pi = diagnostics.get("pi") or {}
    modes = [(name, pi[name]) for name in ("off", "exact", "overlap") if isinstance(pi.get(name), dict)]
    if modes:
        lines.append("DeftRec HR@10 valid/test by π: " + " · ".join(
            f"{name} {m['valid']['HR@10']:.4f}/{m['test']['HR@10']:.4f}" for name, m in modes))
    return lines


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
        lines = diagnostics_lines((config.get("deftrec") or {}).get("diagnostics") or {})
        if lines:
            yield Label("diagnostics (stored at training; deftrec diagnose RUN for the ceiling)",
                        classes="section-title")
            yield Static(Text("\n".join(lines)), id="diagnostics-text")
        yield Label("protocol", classes="section-title")
        yield Static(Text(str(config.get("protocol", "")), style="dim"))
        yield Label("config", classes="section-title")
        shown = {k: v for k, v in config.items() if k not in ("files", "protocol")}
        yield Static(Text(json.dumps(shown, indent=2, default=str)), id="config-text")
