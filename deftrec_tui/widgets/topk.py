"""The top-K table with each item's cosine, π-bonus and score, the explanation of the selected row (its score
and its rank at each diffusion step), and LightGCN's list for the same user side by side."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Label, Static

from deftrec_tui.widgets.canvas import line_plot
from deftrec_tui.widgets.tables import Column, FitTable

COLUMNS = (Column("rank", "rank", 4, justify="right"), Column("title", "title", share=3),
           Column("category", "category", share=2), Column("cos", "cos", 7, justify="right"),
           Column("π", "π", 4, justify="right"), Column("score", "score", 7, justify="right"),
           Column("test", "test", 4))
BASELINE_COLUMNS = (Column("rank", "rank", 4, justify="right"), Column("title", "title"),
                    Column("score", "score", 7, justify="right"), Column("shared", "", 1))
STACK_BELOW = 110  # narrower than this, LightGCN's list goes under DeftRec's instead of beside it


def explain_score(item, ranks: list[int] | None, width: int = 40) -> Text:
    """'s = cos × (1 + π)' with the numbers, and the item's rank over the denoising steps."""
    text = Text()
    text.append(f"{item.title}", style="bold")
    text.append(f"  [{item.category}]\n")
    if item.weight != 1.0:  # the run ranks with the item_norm option: w = ‖q‖^α
        text.append(f"s = cos × w × (1 + π) = {item.cosine:.4f} × {item.weight:.4f} × (1 + {item.pi_bonus:.2f}) "
                    f"= {item.score:.4f}\n")
        text.append("w = ‖q‖^α: the item's CF norm to the run's item_norm α\n", style="dim")
    else:
        text.append(f"s = cos × (1 + π) = {item.cosine:.4f} × (1 + {item.pi_bonus:.2f}) = {item.score:.4f}\n")
    text.append("π = 0.1: the generated text names this item's category" if item.pi_bonus > 0
                else "π = 0: the category in the generated text does not match", style="dim")
    if item.is_test:
        text.append("\nthis is the user's held-out test item", style="bold magenta")
    if ranks:
        text.append(f"\nrank over the {len(ranks) - 1} denoising steps: {ranks[0]} → {ranks[-1]} "
                    f"(best {min(ranks)})\n")
        text.append_text(line_plot([-float(r) for r in ranks], width, 2, style="#e5c07b"))
    return text


class TopKPanel(Vertical):
    """DeftRec's list (sortable), the selected row's explanation, and optionally LightGCN's list."""

    @dataclass
    class RowChosen(Message):
        item_idx: int

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.items: list = []
        self.baseline: list | None = None
        self.sort_column = "rank"
        self.sort_reverse = False

    def compose(self) -> ComposeResult:
        with Horizontal(id="topk-tables"):
            with Vertical(id="topk-main"):
                yield Label("DeftRec top-K", classes="section-title", id="topk-title")
                yield FitTable(COLUMNS, id="topk-table", cursor_type="row", zebra_stripes=True)
            with Vertical(id="topk-compare"):
                yield Label("LightGCN top-K (● also in DeftRec's list)", classes="section-title")
                yield FitTable(BASELINE_COLUMNS, id="compare-table", cursor_type="row", zebra_stripes=True)
        yield Static(Text("select a row to see how its score is made", style="dim"), id="topk-explain")

    def show(self, items: list, source: str) -> None:
        self.items = items
        self.query_one("#topk-title", Label).update(
            f"DeftRec top-{len(items)} ({'cached' if source == 'cache' else 'live'}) · "
            f"{sum(i.pi_bonus > 0 for i in items)} with π-bonus")
        self._fill()
        if self.baseline is not None:
            self.show_baseline(self.baseline)

    def sort_by(self, column: str) -> None:
        if column == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column, self.sort_reverse = column, column in ("cos", "π", "score")
        self._fill()

    def on_resize(self) -> None:
        self.query_one("#topk-tables").set_class(self.size.width < STACK_BELOW, "stacked")

    def _fill(self) -> None:
        key = {"rank": lambda i: i.rank, "title": lambda i: i.title.lower(), "category": lambda i: i.category,
               "cos": lambda i: i.cosine, "π": lambda i: i.pi_bonus, "score": lambda i: i.score,
               "test": lambda i: i.is_test}[self.sort_column]
        rows = []
        for item in sorted(self.items, key=key, reverse=self.sort_reverse):
            style = "bold magenta" if item.is_test else ""
            rows.append((str(item.item_idx), [
                str(item.rank), Text(item.title, style=style), item.category, f"{item.cosine:.4f}",
                Text(f"{item.pi_bonus:.1f}", style="bold #e5c07b" if item.pi_bonus else "dim"),
                f"{item.score:.4f}", Text("★", style=style) if item.is_test else ""]))
        self.query_one("#topk-table", FitTable).set_rows(rows)

    def show_baseline(self, baseline: list) -> None:
        self.baseline = baseline
        ours = {i.item_idx for i in self.items}
        self.query_one("#compare-table", FitTable).set_rows([
            (str(item.item_idx), [str(item.rank), Text(item.title, style="bold magenta" if item.is_test else ""),
                                  f"{item.score:.3f}", Text("●", style="bold green") if item.item_idx in ours else ""])
            for item in baseline])
        overlap = len(ours & {i.item_idx for i in baseline})
        self.query_one("#topk-compare Label", Label).update(
            f"LightGCN top-{len(baseline)} · overlap {overlap} (●)")

    def clear(self) -> None:
        self.items, self.baseline = [], None
        self.query_one("#topk-table", FitTable).set_rows([])
        self.query_one("#compare-table", FitTable).set_rows([])
        self.query_one("#topk-explain", Static).update(Text("waiting for results…", style="dim"))

    def explain(self, item_idx: int, ranks: list[int] | None) -> None:
        for item in self.items:
            if item.item_idx == item_idx:
                width = max(20, self.query_one("#topk-explain", Static).size.width - 2)
                self.query_one("#topk-explain", Static).update(explain_score(item, ranks, width))
                return

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        if event.data_table.id == "topk-table":
            event.stop()
            self.sort_by(str(event.column_key.value))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "topk-table" and event.row_key is not None and event.row_key.value:
            event.stop()
            self.post_message(self.RowChosen(int(event.row_key.value)))
