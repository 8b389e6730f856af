"""The help screen (?): what each area shows and every key binding."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

AREAS = [
    ("users", "every user, their number of train interactions and whether DeftRec's list hit the test item "
              "(hit@10); type an id, or a title to keep the users who had it; s cycles the sort (id, history "
              "length, hit/miss)"),
    ("user", "the history, newest first (validation and test items marked), a bar chart of its categories, and "
             "the preference sentence the LLM wrote, the category it names highlighted"),
    ("trajectory", "the 100 denoising steps from noise to the preference vector y: ‖x_t‖, cos(x_t, y), the "
                   "nearest item, the test item's rank; the PCA map of the item vectors with the path "
                   "(○ start, ◆ current step, + history, ★ test item)"),
    ("top-K", "rank, cosine, π-bonus and score s = cos × (1 + π); click a header to sort; the selected row "
              "explains its score and its rank at each step; c shows LightGCN's list beside it"),
    ("run", "the metrics of every model of the run (validation and test) and the run's config"),
]


def bindings_table(bindings: list[tuple[str, str]]) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold #e5c07b")
    table.add_column()
    for key, description in bindings:
        table.add_row(key, description)
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "close")]

    def __init__(self, bindings: list[tuple[str, str]], areas: list[tuple[str, str]] | None = None) -> None:
        super().__init__()
        self.key_bindings, self.areas = bindings, AREAS if areas is None else areas

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-dialog", classes="dialog"):
            yield Label("deftrec explorer", classes="dialog-title")
            for name, text in self.areas:
                yield Static(f"[bold]{name}[/]  {text}")
            yield Label("keys", classes="section-title")
            yield Static(bindings_table(self.key_bindings))
            yield Static("[dim]mouse: click rows, tabs, headers, buttons and the slider · Esc closes this[/]")
