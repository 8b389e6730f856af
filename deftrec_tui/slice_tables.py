"""Rich tables and lines of an engine.services.slices.SliceReport, shared by `deftrec eval --slices` and the analysis tab."""

from __future__ import annotations

from pathlib import Path

from rich import box
from rich.table import Table
from rich.text import Text

MODEL_COLORS = {"deftrec": "#e5a03b", "lightgcn": "#61afef", "mf": "#98c379", "pop": "#a0a0a0"}
HISTORY_COLOR = "#c678dd"


def model_color(model: str) -> str:
    """The colour of a model in every plot and legend."""
    return MODEL_COLORS.get(model, "#e06c75")


def legend(names: list[str], colors: list[str]) -> Text:
    """'██ name  ██ name …' in the plots' colours."""
    text = Text()
    for name, color in zip(names, colors):
        text.append("██ ", style=color)
        text.append(f"{name}  ")
    return text


def metric_cell(values: dict, k: int, best: bool) -> Text:
    """'HR NDCG' to 3 decimals, HR in bold green when it is the row's best."""
    text = Text(f"{values[f'HR@{k}']:.3f}", style="bold green" if best else "")
    text.append(f" {values[f'NDCG@{k}']:.3f}")
    return text


def slice_table(report, rows, first: str, title: str | None = None) -> Table:
    """Slices × models: users, then HR@k and NDCG@k of each model (the best HR of a row in bold)."""
    k = report.k
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False,
                  padding=(0, 1, 0, 0))
    table.add_column(first, overflow="ellipsis", no_wrap=True)
    table.add_column("users", justify="right", no_wrap=True)
    for model in report.models:
        table.add_column(Text(f"{model}\n{'HR':<5} {'NDCG':>5}", justify="right"), justify="right", no_wrap=True,
                         min_width=11)
    for row in rows:
        best = max(row.metrics[m][f"HR@{k}"] for m in report.models)
        table.add_row(row.label, str(row.users),
                      *(metric_cell(row.metrics[m], k, row.metrics[m][f"HR@{k}"] == best) for m in report.models))
    return table


class _Overall:
    """The 'all users' row of a slice table."""

    def __init__(self, report) -> None:
        self.label, self.users, self.metrics = "all users", report.users, report.overall


def history_rows(report) -> list:
    """The history-length slices and the row of all users (their pooled figures)."""
    return [*report.history, _Overall(report)]


def category_title(report) -> str:
    """The category table's title (parts: a user counts in each part of its test item's category)."""
    if report.category_mode == "parts":
        return "by the test item's category part (a user counts in each part of the test item)"
    return "by the test item's category"


def lists_table(report, title: str | None = None) -> Table:
    """Per model: catalog coverage, mean popularity and intra-list diversity of its top-k."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in ("model", "coverage", "mean popularity", "diversity"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for model, stats in report.lists.items():
        table.add_row(Text(model, style=model_color(model)), f"{stats['coverage']:.1%}",
                      f"{stats['mean_popularity']:.1f}", f"{stats['diversity']:.3f}")
    return table


LISTS_NOTE = ("coverage: share of the catalog in any user's list; popularity: train interactions of a listed item; "
              "diversity: mean 1 − Jaccard of the category parts of two items of a list")


def overlap_line(report) -> str:
    """DeftRec's and LightGCN's lists: mean Jaccard@k, the users each one hits alone and McNemar's p of those."""
    o, k = report.overlap, report.k
    return (f"{o['a']} vs {o['b']}: mean Jaccard@{k} {o['jaccard']:.3f} ({o['shared_items']:.2f} shared items of "
            f"{k}); test item hit by {o['a']} only {o['hit_by_a_only']}, by {o['b']} only {o['hit_by_b_only']}, "
            f"by both {o['hit_by_both']}, by neither {o['hit_by_neither']}; exact McNemar p {o['mcnemar_p']:.3g}")


def generated_table(report, title: str | None = None) -> Table:
    """Per category part: share of users whose generated category names it, whose history leads with it, and
    its share of the train interactions."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in ("category part", "generated", "history leading", "history items"):
        table.add_column(column, justify="left" if column == "category part" else "right")
    for row in report.generated["rows"]:
        table.add_row(row["category"], f"{row['generated']:.1%}", f"{row['history_leading']:.1%}",
                      f"{row['history_items']:.1%}")
    return table


def generated_line(report) -> str:
    """How often the generated category agrees with the history and names the test item."""
    g = report.generated
    return (f"history leading: the two leading parts of the {g['history_scope']}; {g['users_with_category']} users "
            f"have a generated category ({g['distinct_generated']} distinct): equal to the history's leading parts "
            f"{g['equals_history_leading']:.1%}, naming a part of the history {g['names_a_history_part']:.1%}, "
            f"a part of the test item {g['names_a_test_item_part']:.1%}")


def header_line(report) -> str:
    """The run, its size and the protocol of the figures."""
    return (f"{Path(report.run).name} ({report.dataset}): {report.users} users, {report.items} items; the test item ranked "
            f"with train+valid masked; models: {', '.join(report.models)}")
