"""Two runs of one dataset user by user (`deftrec tui RUN_A --compare RUN_B`): the users with the test item's
rank under each run, sortable and filterable by who hits alone; both preference texts and top-K lists with the
shared items marked. Catalog reads and the paired figures run in thread workers that post messages."""

from __future__ import annotations

import random

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Static
from textual.worker import get_current_worker

from deftrec_tui.messages import PairLoaded, PairSummary, WorkFailed
from deftrec_tui.screens.dialogs import ErrorDialog
from deftrec_tui.screens.help import HelpScreen
from deftrec_tui.widgets.compare import PairPicker, PairSide, paired_line, rank_words
from deftrec_tui.widgets.users import UserPicker

AREAS = [
    ("users", "the users of both runs: train items, and the test item's rank in A's and in B's cached list "
              "(green: in the top-10, –: not listed); type an id, or a title to keep the users who had it"),
    ("figures", "HR@10 of both runs over the same users, who each hits alone, B − A with its 95% paired "
                "bootstrap interval and McNemar's exact p (the figures of deftrec eval A B)"),
    ("A and B", "each run's preference text (its category highlighted) and cached top-K; ● an item both lists "
                "hold, ★ the user's test item"),
]


def _one_line(exc: BaseException) -> str:
    text = exc.one_line() if hasattr(exc, "one_line") else f"{type(exc).__name__}: {exc}"
    return " ".join(str(text).split())


class CompareScreen(Screen):
    BINDINGS = [
        Binding("question_mark", "help", "help"),
        Binding("slash", "filter", "filter"),
        Binding("s", "sort", "sort"),
        Binding("f", "outcome", "A only / B only"),
        Binding("r", "random_user", "random"),
    ]
    KEY_HELP = [("↑/↓, mouse", "pick a user (the list on the left)"),
                ("/", "filter users by id, or by a title in their history"),
                ("s", "sort by id / A's lone hits first / B's lone hits first / history length"),
                ("f", "show all users / hit by A only / by B only / by both / by neither"),
                ("r", "jump to a random user"), ("?", "this help"), ("q, ctrl+q", "quit")]

    def __init__(self, pair) -> None:
        super().__init__()
        self.pair = pair  # engine.services.compare.RunPair
        self.user_idx: int | None = None
        self.detail = None

    def compose(self) -> ComposeResult:
        name_a, name_b = self.pair.names
        yield Header()
        with Horizontal(id="body"):
            yield PairPicker(self.pair.rows, k=self.pair.k, find_users=self.pair.a.find_users, id="users")
            with Vertical(id="pair"):
                yield Static(Text("computing the paired figures…", style="dim"), id="pair-summary")
                yield Static("", id="pair-test")
                with Horizontal(id="pair-sides"):
                    yield PairSide("A", name_a, id="side-a")
                    yield PairSide("B", name_b, id="side-b")
        yield Footer()

    def on_mount(self) -> None:
        name_a, name_b = self.pair.names
        self.title = f"deftrec · {name_a} vs {name_b}"
        self.sub_title = (self.pair.a.config.get("dataset") or {}).get("name", "")
        self.query_one("#user-table").focus()
        self.summary_worker()

    @work(thread=True, exclusive=True, group="pair-summary")
    def summary_worker(self) -> None:
        """The paired figures over every shared user (imports torch once), off the UI thread."""
        try:
            self.post_message(PairSummary(self.pair.paired()))
        except Exception as exc:  # noqa: BLE001
            self.post_message(WorkFailed("the paired figures could not be computed", _one_line(exc)))

    @on(PairSummary)
    def pair_summary(self, event: PairSummary) -> None:
        self.query_one("#pair-summary", Static).update(paired_line(event.figures, self.pair.names))

    # ------------------------------------------------------------------ one user

    @on(UserPicker.Selected)
    def user_selected(self, event: UserPicker.Selected) -> None:
        self.select_user(event.user_idx)

    def select_user(self, user_idx: int) -> None:
        self.user_idx, self.detail = user_idx, None
        row = self.pair.by_idx[user_idx]
        self.query_one("#pair-test", Static).update(f"user {row.user_id} · {row.n_train} train items")
        for side in self.query(PairSide):
            side.clear("reading the catalogs…")
        self.load_user(user_idx)

    @work(thread=True, exclusive=True, group="pair-user")
    def load_user(self, user_idx: int) -> None:
        """Both runs' cached results for the user, read from the catalogs off the UI thread."""
        worker = get_current_worker()
        try:
            detail = self.pair.detail(user_idx)
        except Exception as exc:  # noqa: BLE001
            self.post_message(WorkFailed("the catalogs could not be read", _one_line(exc)))
            return
        if not worker.is_cancelled:
            self.post_message(PairLoaded(user_idx, detail))

    @on(PairLoaded)
    def pair_loaded(self, event: PairLoaded) -> None:
        if event.user_idx != self.user_idx:
            return
        detail, row, k = event.detail, self.pair.by_idx[event.user_idx], self.pair.k
        self.detail = detail
        text = Text(f"user {row.user_id} · {row.n_train} train items · test item ")
        text.append(detail.test_title, style="bold magenta")
        text.append(f" [{detail.test_category}]" if detail.test_category else "")
        text.append(" · A: ")
        text.append(rank_words(row.rank_a, k, len(detail.a.items) if detail.a else 0), style="#61afef")
        text.append(" · B: ")
        text.append(rank_words(row.rank_b, k, len(detail.b.items) if detail.b else 0), style="#e5c07b")
        text.append(f" · hit by {row.outcome(k)}", style="bold")
        self.query_one("#pair-test", Static).update(text)
        self.query_one("#side-a", PairSide).show(detail.a, detail.shared)
        self.query_one("#side-b", PairSide).show(detail.b, detail.shared)

    @on(WorkFailed)
    def work_failed(self, event: WorkFailed) -> None:
        self.app.push_screen(ErrorDialog(event.title, event.error))

    # ------------------------------------------------------------------ actions

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(self.KEY_HELP, AREAS))

    def action_filter(self) -> None:
        self.query_one("#user-filter").focus()

    def action_sort(self) -> None:
        self.query_one(PairPicker).cycle_sort()

    def action_outcome(self) -> None:
        self.query_one(PairPicker).cycle_filter()

    def action_random_user(self) -> None:
        picker = self.query_one(PairPicker)
        if picker.shown:
            picker.move_to(random.choice(picker.shown).user_idx)
