"""Helpers of the explorer's tests: a session with long titles, the screen as text, the rows a table shows."""

from __future__ import annotations

import io

from rich.console import Console

from engine.services.session import RunSession


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



def second_run(run, dest):
    """A copy of `run` whose cached DeftRec lists differ by user (a second run of the same dataset): for
    user_idx % 3 == 0 the same list, 1 the test item replaced (a miss), 2 the test item at rank 1 (a hit)."""
    import shutil
    import sqlite3

    shutil.copytree(run, dest)
    db = sqlite3.connect(dest / "catalog.sqlite")
    n_items = db.execute("select count(*) from items").fetchone()[0]
    tests = dict(db.execute("select user_idx, test_item_idx from users"))
    for user_idx, test in tests.items():
        rows = db.execute("select rank, item_idx, cosine, pi_bonus, score from recommendations "
                          "where model = 'deftrec' and user_idx = ? order by rank", (user_idx,)).fetchall()
        items = [r[1] for r in rows]
        if user_idx % 3 == 1 and test in items:
            items[items.index(test)] = next(i for i in range(n_items) if i not in items and i != test)
        elif user_idx % 3 == 2:
            items = [test] + [i for i in items if i != test][:len(items) - 1]
        db.executemany("update recommendations set item_idx = ? where model = 'deftrec' and user_idx = ? and rank = ?",
                       [(item, user_idx, rank) for (rank, *_), item in zip(rows, items)])
    db.execute("update preferences set text = 'B: ' || text")
    db.commit()
    db.close()
    return dest


def other_dataset_run(run, dest):
    """A copy of `run` that says it was trained on another dataset (another checksum in config.json)."""
    import json
    import shutil

    shutil.copytree(run, dest)
    config = json.loads((dest / "config.json").read_text())
    config["dataset"] = {**config["dataset"], "name": "csv:other", "checksum": "0" * 64}
    (dest / "config.json").write_text(json.dumps(config))
    return dest
