"""Helpers of the explorer's tests: a session with long titles, the screen as text, the rows a table shows."""

from __future__ import annotations

import io

from rich.console import Console

from engine.session import RunSession


class LongTitles(RunSession):
    """The tiny run with titles and categories as long as ML-100K's longest (so a table can overflow)."""

    def __init__(self, run) -> None:
        super().__init__(run)
        self.items = [{**item, "title": f"{item['title']}: The Extraordinarily Long Director's Cut (1996)",
                       "category": f"{item['category']}|Adventure|Children's|Sci-Fi"} for item in self.items]


def screen_lines(app) -> list[str]:
    """The screen as plain text, one string per terminal line."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, color_system=None,
                      record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text().splitlines()


def visible_rows(app, table) -> dict[str, str]:
    """The on-screen text of each row of a DataTable that is in view, by row key."""
    lines, region = screen_lines(app), table.region
    shown = {}
    for index in range(table.row_count):
        y = region.y + 1 + index - round(table.scroll_y)  # one header line
        if region.y < y < region.bottom - (1 if table.show_horizontal_scrollbar else 0):
            key = table.coordinate_to_cell_key((index, 0)).row_key.value
            shown[key] = lines[y][region.x:region.right]
    return shown

