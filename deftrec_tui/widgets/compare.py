"""The widgets of the two-run comparison: the user list with both runs' test ranks (sortable and filterable by
who hits alone), one run's side (preference text and top-K, shared items marked), and the paired figures."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, Static

from deftrec_tui.widgets.tables import Column, FitTable
from deftrec_tui.widgets.user_panel import highlight_category
from deftrec_tui.widgets.users import UserPicker, _id_key

SIDE_COLUMNS = (Column("rank", "#", 3, justify="right"), Column("title", "title"),
                Column("score", "score", 7, justify="right"), Column("mark", "", 2))
OUTCOME_ORDER = {"A only": ("A only", "both", "B only", "neither"), "B only": ("B only", "both", "A only", "neither")}
FILTERS = ("all", "A only", "B only", "both", "neither")


def rank_cell(rank: int | None, k: int) -> Text:
    """The test item's rank: green within the top-k, dim beyond it, '–' when not in the cached list."""
    if rank is None:
        return Text("–", style="dim")
    return Text(str(rank), style="bold green" if rank <= k else "dim")


def rank_words(rank: int | None, k: int, listed: int) -> str:
    if rank is None:
        return f"not in the top-{listed}" if listed else "no cached list"
    return f"rank {rank} ({'hit' if rank <= k else 'miss'}@{k})"


def paired_line(figures: dict, names: tuple[str, str]) -> Text:
    """HR@k of both runs, the users each hits alone, B − A with its 95% interval and McNemar's p."""
    k = figures["k"]
    text = Text()
    text.append(f"A {names[0]}", style="bold #61afef")
    text.append(f" HR@{k} {figures[f'HR@{k} A']:.4f} · ")
    text.append(f"B {names[1]}", style="bold #e5c07b")
    text.append(f" HR@{k} {figures[f'HR@{k} B']:.4f} · B − A {figures['B − A']:+.4f} "
                f"[{figures['ci95'][0]:+.4f}, {figures['ci95'][1]:+.4f}] · ")
    text.append(f"hit by A only {figures['hit by A only']}", style="#61afef")
    text.append(f", B only {figures['hit by B only']}", style="#e5c07b")
    text.append(f", both {figures['hit by both']} of {figures['users']} · McNemar p {figures['mcnemar_p']:.2g}")
    return text


class PairPicker(UserPicker):
    """The users of both runs: history length and the test item's rank under A and under B."""

    SORTS = ("id", "A only", "B only", "history")

    def __init__(self, rows: list, k: int = 10, **kwargs) -> None:
        super().__init__(rows, k, **kwargs)
        self.outcome_filter = "all"

    def columns(self) -> tuple:
        return ("user", "n", "A", "B")

    def cells(self, row) -> tuple:
        return (row.user_id, str(row.n_train), rank_cell(row.rank_a, self.k), rank_cell(row.rank_b, self.k))

    def sort_key(self, row):
        if self.sort in OUTCOME_ORDER:  # that run's lone hits first (best rank first), then both, the other, none
            rank = row.rank_a if self.sort == "A only" else row.rank_b
            return (OUTCOME_ORDER[self.sort].index(row.outcome(self.k)), rank or 10**9, _id_key(row.user_id))
        if self.sort == "history":
            return (-row.n_train, _id_key(row.user_id))
        return _id_key(row.user_id)

    def keep(self, row) -> bool:
        return self.outcome_filter == "all" or row.outcome(self.k) == self.outcome_filter

    def status(self) -> str:
        return f"sort: {self.sort} · show: {self.outcome_filter}"

    def cycle_filter(self) -> str:
        self.outcome_filter = FILTERS[(FILTERS.index(self.outcome_filter) + 1) % len(FILTERS)]
        self.refresh_rows(keep=self.current())
        return self.outcome_filter


class PairSide(Vertical):
    """One run of the comparison: its preference text and cached top-K (● in both lists, ★ the test item)."""

    def __init__(self, side: str, name: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.side, self.run_name = side, name

    def compose(self) -> ComposeResult:
        yield Label(f"{self.side} · {self.run_name}", classes="section-title pair-title")
        yield Static("", classes="pair-preference")
        yield FitTable(SIDE_COLUMNS, classes="pair-table", cursor_type="row", zebra_stripes=True)

    def clear(self, message: str) -> None:
        self.query_one(".pair-title", Label).update(f"{self.side} · {self.run_name}")
        self.query_one(".pair-preference", Static).update(Text(message, style="dim"))
        self.query_one(FitTable).set_rows([])

    def show(self, explanation, shared: set[str]) -> None:
        if explanation is None:
            self.clear("no cached result for this user in this run")
            return
        items = explanation.items
        self.query_one(".pair-title", Label).update(
            f"{self.side} · {self.run_name} · top-{len(items)} · {sum(i.item_id in shared for i in items)} shared (●)")
        self.query_one(".pair-preference", Static).update(highlight_category(explanation.text, explanation.category))
        rows = []
        for item in items:
            style = "bold magenta" if item.is_test else ""
            mark = Text()
            if item.item_id in shared:
                mark.append("●", style="bold green")
            if item.is_test:
                mark.append("★", style="bold magenta")
            rows.append((item.item_id, [str(item.rank), Text(item.title, style=style), f"{item.score:.4f}", mark]))
        self.query_one(FitTable).set_rows(rows)
