"""The user picker: every user with their history length and whether DeftRec hit their test item."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Label

SORTS = ("id", "history", "hit")


def _id_key(user_id: str):
    return (0, int(user_id), "") if user_id.isdigit() else (1, 0, user_id)


class UserPicker(Vertical):
    """Filter box + table of users; posts UserPicker.Selected when the highlighted user changes."""

    @dataclass
    class Selected(Message):
        user_idx: int

    def __init__(self, rows: list, k: int = 10, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rows = rows
        self.k = k
        self.sort = "id"
        self.query_text = ""
        self.shown: list = []

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter user id  (/)", id="user-filter")
        yield Label("", id="user-count")
        table = DataTable(id="user-table", cursor_type="row", zebra_stripes=True)
        table.add_columns("user", "n", f"@{self.k}")
        yield table

    def on_mount(self) -> None:
        self.refresh_rows()

    def refresh_rows(self, keep: int | None = None) -> None:
        rows = [r for r in self.rows if self.query_text in r.user_id]
        if self.sort == "id":
            rows.sort(key=lambda r: _id_key(r.user_id))
        elif self.sort == "history":
            rows.sort(key=lambda r: (-r.n_train, _id_key(r.user_id)))
        else:  # hits first, best rank first, then misses
            rows.sort(key=lambda r: (not r.hit(self.k), r.test_rank or 10**9, _id_key(r.user_id)))
        self.shown = rows
        table = self.query_one("#user-table", DataTable)
        table.clear()
        for r in rows:
            mark = (Text("hit", style="bold green") if r.hit(self.k)
                    else Text("miss", style="red") if r.cached else Text("·", style="dim"))
            table.add_row(r.user_id, str(r.n_train), mark, key=str(r.user_idx))
        self.query_one("#user-count", Label).update(
            f"{len(rows)}/{len(self.rows)} users · sort: {self.sort}")
        if keep is not None:
            self.move_to(keep)

    def move_to(self, user_idx: int) -> None:
        table = self.query_one("#user-table", DataTable)
        for i, r in enumerate(self.shown):
            if r.user_idx == user_idx:
                table.move_cursor(row=i)
                return

    def cycle_sort(self) -> str:
        self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        self.refresh_rows(keep=self.current())
        return self.sort

    def current(self) -> int | None:
        table = self.query_one("#user-table", DataTable)
        if not self.shown or table.cursor_row is None or table.cursor_row >= len(self.shown):
            return None
        return self.shown[table.cursor_row].user_idx

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_text = event.value.strip()
        self.refresh_rows()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one("#user-table", DataTable).focus()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value is not None:
            self.post_message(self.Selected(int(event.row_key.value)))
