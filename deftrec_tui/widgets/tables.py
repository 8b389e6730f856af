"""A DataTable that always fits its width: numeric columns of fixed width, text columns share what is left and
are shortened with an ellipsis, so no value ever needs horizontal scrolling."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import DataTable


@dataclass(frozen=True)
class Column:
    """A column of a FitTable: fixed `width`, or None to take a `share` of the width left over."""

    key: str
    label: str
    width: int | None = None
    share: int = 1
    justify: str = "left"


def _length(cell) -> int:
    return cell.cell_len if isinstance(cell, Text) else cell_len(str(cell))


def fit_widths(columns: Sequence[Column], rows: Sequence[Sequence], available: int, padding: int = 1) -> dict[str, int]:
    """Each column's width: fixed ones as given, flexible ones share the rest (never wider than their content)."""
    widths = {c.key: c.width for c in columns if c.width is not None}
    flexible = [(i, c) for i, c in enumerate(columns) if c.width is None]
    left = available - sum(widths.values()) - 2 * padding * len(columns)
    natural = {c.key: max([cell_len(c.label)] + [_length(row[i]) for row in rows]) for i, c in flexible}
    pending = [c for _, c in flexible]
    while pending:  # water-filling: a column whose content is narrower than its share keeps only what it needs
        shares = sum(c.share for c in pending)
        narrow = [c for c in pending if natural[c.key] <= max(left, 0) * c.share // shares]
        if not narrow:
            for c in pending:
                widths[c.key] = max(1, max(left, 0) * c.share // shares)
            break
        for c in narrow:
            widths[c.key] = natural[c.key]
            left -= natural[c.key]
            pending.remove(c)
    return widths


def fit_cell(cell, width: int, justify: str = "left") -> Text:
    """The cell as Text no wider than `width` (an ellipsis marks what was cut)."""
    text = cell.copy() if isinstance(cell, Text) else Text(str(cell))
    text.justify = justify
    if text.cell_len > width:
        text.truncate(width, overflow="ellipsis")
    return text


class FitTable(DataTable):
    """A DataTable whose columns are laid out again on every resize so the whole row stays visible."""

    def __init__(self, columns: Sequence[Column], **kwargs) -> None:
        super().__init__(**kwargs)
        self.spec = list(columns)
        self.rows_data: list[tuple[str | None, list]] = []
        self.widths: dict[str, int] = {}

    def on_mount(self) -> None:
        self._layout(force=True)

    def on_resize(self) -> None:
        self._layout()

    @property
    def available(self) -> int:
        """The width the columns may use (a vertical scrollbar's width is always kept free)."""
        return max(0, self.size.width - self.styles.scrollbar_size_vertical)

    def set_rows(self, rows: Sequence[tuple[str | None, Sequence]]) -> None:
        """Replace every row: (key, cells) pairs in the order of the columns."""
        self.rows_data = [(key, list(cells)) for key, cells in rows]
        self._layout(force=True)

    def _layout(self, force: bool = False) -> None:
        if not self.is_mounted:
            return
        widths = fit_widths(self.spec, [cells for _, cells in self.rows_data], self.available or 80,
                            self.cell_padding)
        if widths == self.widths and not force:
            return
        cursor = self.cursor_row
        if widths != self.widths:
            self.clear(columns=True)
            for c in self.spec:
                self.add_column(Text(c.label, justify=c.justify), width=widths[c.key], key=c.key)
            self.widths = widths
        else:
            self.clear()
        for key, cells in self.rows_data:
            self.add_row(*(fit_cell(cell, widths[c.key], c.justify) for c, cell in zip(self.spec, cells)), key=key)
        if self.rows_data and 0 < cursor < len(self.rows_data):
            self.move_cursor(row=cursor)
