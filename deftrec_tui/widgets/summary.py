"""The run summary: the metrics table of `deftrec eval` (DeftRec beside the baselines) and the run's config."""

from __future__ import annotations

import json

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Label, Static

from train.evaluate import metrics_table


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
        yield Static(metrics_table(self.session.metrics, mark_best=True, boxed=False), id="metrics-table")
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
