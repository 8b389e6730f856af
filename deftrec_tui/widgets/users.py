"""The user picker: every user with their history length and whether DeftRec hit their test item. The filter
takes a user id, or an item title ("Fargo"): then it keeps the users with a matching item in their history,
looked up in the catalog's full-text index by a thread worker."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Label

from deftrec_tui.messages import UsersFound, WorkFailed

SORTS = ("id", "history", "hit")


def _id_key(user_id: str):
    return (0, int(user_id), "") if user_id.isdigit() else (1, 0, user_id)


class UserPicker(Vertical):
    """Filter box + table of users; posts UserPicker.Selected when the highlighted user changes."""

    SORTS = SORTS
    PLACEHOLDER = "id or title (/)"

    @dataclass
    class Selected(Message):
        user_idx: int

    def __init__(self, rows: list, k: int = 10, find_users=None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rows = rows
        self.k = k
        self.find_users = find_users  # query -> engine.services.session.UserSearch (a catalog lookup: run in a worker)
        self.sort = self.SORTS[0]
        self.query_text = ""
        self.title_search = None  # the UserSearch of the latest title query
        self.shown: list = []

    def compose(self) -> ComposeResult:
        yield Input(placeholder=self.PLACEHOLDER, id="user-filter")
        yield Label("", id="user-count")
        table = DataTable(id="user-table", cursor_type="row", zebra_stripes=True)
        table.add_columns(*self.columns())
        yield table

    def on_mount(self) -> None:
        self.refresh_rows()

    # ------------------------------------------------------------------ what a subclass may change

    def columns(self) -> tuple:
        return ("user", "n", f"@{self.k}")

    def cells(self, row) -> tuple:
        mark = (Text("hit", style="bold green") if row.hit(self.k)
                else Text("miss", style="red") if row.cached else Text("·", style="dim"))
        return (row.user_id, str(row.n_train), mark)

    def sort_key(self, row):
        if self.sort == "history":
            return (-row.n_train, _id_key(row.user_id))
        if self.sort == "hit":  # hits first, best rank first, then misses
            return (not row.hit(self.k), row.test_rank or 10**9, _id_key(row.user_id))
        return _id_key(row.user_id)

    def keep(self, row) -> bool:
        return True

    def status(self) -> str:
        return f"sort: {self.sort}"

    # ------------------------------------------------------------------ filtering

    @property
    def by_id(self) -> bool:
        """Whether the filter is a user id (empty, or part of some user's id); else it is an item title."""
        return not self.query_text or self.find_users is None or any(self.query_text in r.user_id for r in self.rows)

    def refresh_rows(self, keep: int | None = None) -> None:
        search = self.title_search if self.title_search is not None and \
            self.title_search.query == self.query_text else None
        if self.by_id:
            rows = [r for r in self.rows if self.query_text in r.user_id]
        else:
            rows = [r for r in self.rows if search is not None and r.user_idx in search.user_idxs]
        rows = sorted((r for r in rows if self.keep(r)), key=self.sort_key)
        self.shown = rows
        table = self.query_one("#user-table", DataTable)
        table.clear()
        for r in rows:
            table.add_row(*self.cells(r), key=str(r.user_idx))
        if self.by_id:
            count = f"{len(rows)}/{len(self.rows)} users · {self.status()}"
        elif search is None:
            count = f"searching titles for {self.query_text!r}…"
        elif not search.titles:
            count = f"no user id or title matches {self.query_text!r}"
        else:
            more = f" (+{len(search.titles) - 1} titles)" if len(search.titles) > 1 else ""
            count = f"{len(rows)} users had {search.titles[0]}{more} · {self.status()}"
        self.query_one("#user-count", Label).update(count)
        if keep is not None:
            self.move_to(keep)

    @work(thread=True, exclusive=True, group="title-search")
    def search_titles(self, query: str) -> None:
        """The users with a matching title in their history, from the catalog, off the UI thread."""
        try:
            self.post_message(UsersFound(self.find_users(query)))
        except Exception as exc:  # noqa: BLE001  shown in a dialog; the app keeps running
            self.post_message(WorkFailed("the title search failed", " ".join(str(exc).split())))

    @on(UsersFound)
    def users_found(self, event: UsersFound) -> None:
        event.stop()
        if event.search.query == self.query_text:
            self.title_search = event.search
            self.refresh_rows()

    # ------------------------------------------------------------------ navigation

    def move_to(self, user_idx: int) -> None:
        table = self.query_one("#user-table", DataTable)
        for i, r in enumerate(self.shown):
            if r.user_idx == user_idx:
                table.move_cursor(row=i)
                return

    def cycle_sort(self) -> str:
        self.sort = self.SORTS[(self.SORTS.index(self.sort) + 1) % len(self.SORTS)]
        self.refresh_rows(keep=self.current())
        return self.sort

    def current(self) -> int | None:
        table = self.query_one("#user-table", DataTable)
        if not self.shown or table.cursor_row is None or table.cursor_row >= len(self.shown):
            return None
        return self.shown[table.cursor_row].user_idx

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_text = event.value.strip()
        if not self.by_id:
            self.search_titles(self.query_text)
        self.refresh_rows()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one("#user-table", DataTable).focus()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value is not None:
            self.post_message(self.Selected(int(event.row_key.value)))
