"""The explorer driven through Textual's Pilot on a tiny run built in the test: pick users, read the text,
step the trajectory, compare with LightGCN, export, survive errors. Waits for workers; never sleeps."""

import csv
import re
import shutil
import sqlite3

import pytest
from textual.widgets import DataTable, Input

from deftrec_tui.app import create_app
from deftrec_tui.screens.dialogs import ErrorDialog, ExportDialog
from deftrec_tui.screens.help import HelpScreen
from deftrec_tui.widgets.trajectory import Slider, TrajectoryPanel
from engine.services.session import RunSession
from tests.tui_helpers import LongTitles, visible_rows


async def settle(app, pilot):
    """Let posted messages run, wait for every worker, then let their messages run."""
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()


@pytest.fixture(scope="module")
def session(tiny_run):
    return RunSession(tiny_run)


async def test_opens_on_users_and_shows_the_cached_result(session):
    app = create_app(session)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        screen = app.screen
        table = screen.query_one("#user-table", DataTable)
        assert table.row_count == 60
        assert screen.user_idx == session.user_index("u0")
        cached = session.cached(screen.user_idx)
        assert screen.explanation.text == cached.text and screen.explanation.source == "cache"
        history = screen.query_one("#history-table", DataTable)
        assert history.row_count == len(session.history(screen.user_idx))
        # the trajectory of the cached result has every step, ending at the cached list's preference vector
        panel = screen.query_one(TrajectoryPanel)
        assert len(panel.explanation.steps) == 101 and panel.step == 100
        assert [i.item_idx for i in screen.explanation.items] == [i.item_idx for i in cached.items]

        await pilot.press("down")  # the next user: history and result follow
        await settle(app, pilot)
        assert screen.user_idx == session.user_index("u1")
        assert screen.explanation.user_idx == screen.user_idx


async def test_filter_sort_and_random_user(session):
    app = create_app(session)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("slash", "u", "5")
        picker = app.screen.query_one("#users")
        assert {r.user_id for r in picker.shown} == {r.user_id for r in session.user_rows if "u5" in r.user_id}
        assert app.screen.query_one("#user-filter", Input).value == "u5"
        await pilot.press("enter")  # back to the table
        await pilot.press("s", "s")  # id → history → hit
        assert picker.sort == "hit"
        hits = [r.hit(10) for r in picker.shown]
        assert hits == sorted(hits, reverse=True)
        await pilot.press("r")
        await settle(app, pilot)
        assert app.screen.user_idx in {r.user_idx for r in picker.shown}


async def test_trajectory_steps_play_and_slider(session):
    app = create_app(session)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        panel = app.screen.query_one(TrajectoryPanel)
        await pilot.press("comma", "comma", "comma")
        assert panel.step == 97
        await pilot.press("full_stop")
        assert panel.step == 98
        slider = app.screen.query_one(Slider)
        assert slider.value == 98
        slider.focus()
        await pilot.press("home")
        assert panel.step == 0
        stats = panel.explanation.steps[0]
        assert "‖x_t‖" in str(app.screen.query_one("#traj-stats").render())
        assert stats.step == 0
        await pilot.press("space")  # play from step 0
        assert panel.playing
        await pilot.press("space")
        assert not panel.playing


async def test_live_generation_streams_and_matches_the_final_text(session):
    app = create_app(session)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        screen = app.screen
        chunks = []
        original = screen.query_one("#preference").append
        screen.query_one("#preference").append = lambda text: (chunks.append(text), original(text))
        await pilot.press("g")
        await settle(app, pilot)
        assert screen.explanation.source == "live"
        assert chunks, "the text arrived in pieces while it was generated"
        assert "".join(chunks).strip() == screen.explanation.text
        assert len(screen.explanation.items) == 20


async def test_topk_breakdown_sort_and_lightgcn_comparison(session):
    app = create_app(session)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(app, pilot)
        await pilot.press("3")
        table = app.screen.query_one("#topk-table", DataTable)
        assert table.row_count == 20
        table.focus()
        await pilot.press("down")
        await pilot.pause()
        explained = str(app.screen.query_one("#topk-explain").render())
        assert "s = cos × (1 + π)" in explained and "rank over the 100 denoising steps" in explained
        app.screen.query_one("#topk").sort_by("score")
        scores = [float(str(table.get_row_at(i)[5])) for i in range(table.row_count)]
        assert scores == sorted(scores, reverse=True)
        await pilot.press("c")
        await settle(app, pilot)
        compare = app.screen.query_one("#compare-table", DataTable)
        assert compare.row_count == 20
        expected = session.baseline(app.screen.user_idx, "lightgcn", 20)
        overlap = len({i.item_idx for i in expected} & {i.item_idx for i in app.screen.explanation.items})
        assert f"overlap {overlap}" in str(app.screen.query_one("#topk-compare Label").render())


async def test_export_every_user_from_the_app(session, tmp_path):
    app = create_app(session)
    out = tmp_path / "all.csv"
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("e")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, ExportDialog)
        dialog.query_one("#scope-all").value = True
        dialog.query_one("#export-path", Input).value = str(out)
        await pilot.click("#export-go")
        await settle(app, pilot)
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 60 * 20
    db = sqlite3.connect(session.run.catalog_path)
    first = db.execute("select i.item_id, r.score from recommendations r join items i using (item_idx) "
                       "join users u using (user_idx) where u.user_id = 'u0' and r.rank = 1").fetchone()
    row = next(r for r in rows if r["user_id"] == "u0" and r["rank"] == "1")
    assert row["item_id"] == first[0] and float(row["score"]) == pytest.approx(first[1], abs=1e-6)


async def test_export_current_user(session, tmp_path):
    app = create_app(session)
    out = tmp_path / "one.csv"
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("e")
        await pilot.pause()
        app.screen.query_one("#export-path", Input).value = str(out)
        await pilot.press("enter")
        await settle(app, pilot)
    rows = list(csv.DictReader(open(out, newline="")))
    assert [r["user_id"] for r in rows] == ["u0"] * 20
    assert list(rows[0]) == ["user_id", "rank", "item_id", "title", "category", "cosine", "weight", "pi_bonus", "score"]


class BrokenModelSession(RunSession):
    """A real run whose model fails to load (e.g. a weight file removed after the app opened)."""

    def model(self):
        from data.errors import RunError
        raise RunError("the run has no tokenizer weights", path=self.path / "tokenizer.safetensors")


async def test_errors_show_in_a_dialog_and_the_app_keeps_running(tiny_run):
    app = create_app(BrokenModelSession(tiny_run))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        assert isinstance(app.screen, ErrorDialog)
        assert "no tokenizer weights" in str(app.screen.query_one("#error-message").render())
        await pilot.press("escape")
        await pilot.press("down")  # still answering keys; the cached result still shows
        await settle(app, pilot)
        if isinstance(app.screen, ErrorDialog):
            await pilot.press("escape")
        assert app.screen.explanation is not None and app.screen.explanation.source == "cache"


async def test_help_screen_lists_the_bindings(session):
    app = create_app(session)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_cf_only_run_opens_without_a_model(tmp_path, tiny_run):
    run = tmp_path / "cf"
    shutil.copytree(tiny_run, run)
    import json
    config = json.loads((run / "config.json").read_text())
    config["models"] = [m for m in config["models"] if m != "deftrec"]
    config["deftrec"] = None
    (run / "config.json").write_text(json.dumps(config))
    app = create_app(RunSession(run))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        assert "no DeftRec model" in str(app.screen.query_one("#traj-stats").render())


def test_tui_command_without_any_run(tmp_path):
    from typer.testing import CliRunner

    from deftrec_tui.cli import app
    result = CliRunner().invoke(app, ["tui", "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "no run under" in result.output and "deftrec train" in result.output


@pytest.fixture(scope="module")
def long_session(tiny_run):
    return LongTitles(tiny_run)


@pytest.mark.parametrize("size", [(100, 30), (120, 36), (160, 48)])
@pytest.mark.parametrize("with_lightgcn", [False, True])
async def test_topk_values_on_screen_at_any_width(long_session, size, with_lightgcn):
    app = create_app(long_session)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        await pilot.press("3", *(["c"] if with_lightgcn else []))
        await settle(app, pilot)
        table = app.screen.query_one("#topk-table", DataTable)
        assert table.row_count == 20 and table.max_scroll_x == 0 and table.virtual_size.width <= table.size.width
        shown = visible_rows(app, table)
        assert len(shown) >= 5
        items = {str(i.item_idx): i for i in app.screen.explanation.items}
        for key, line in shown.items():
            item = items[key]
            numbers = rf"\s{re.escape(f'{item.cosine:.4f}')}\s+{item.pi_bonus:.1f}\s+{re.escape(f'{item.score:.4f}')}\s"
            assert re.search(numbers, line), (size, line)
            title = str(table.get_cell(key, "title"))
            assert title == item.title or (title.endswith("…") and item.title.startswith(title[:-1]))
            assert title in line
        if with_lightgcn:
            compare = app.screen.query_one("#compare-table", DataTable)
            assert compare.row_count == 20 and compare.max_scroll_x == 0
            scores = {str(i.item_idx): i.score for i in app.screen.query_one("#topk").baseline}
            for key, line in visible_rows(app, compare).items():
                assert f"{scores[key]:.3f}" in line


def test_fit_widths_share_the_rest_and_never_overflow():
    from deftrec_tui.widgets.tables import Column, fit_cell, fit_widths
    columns = [Column("rank", "rank", 4), Column("title", "title", share=3), Column("category", "category", share=2),
               Column("score", "score", 7)]
    rows = [["1", "x" * 80, "y" * 40, "0.1234"]]
    for available in (30, 60, 100, 200):
        widths = fit_widths(columns, rows, available)
        assert widths["rank"] == 4 and widths["score"] == 7
        assert sum(widths.values()) + 2 * len(columns) <= max(available, 11 + 2 * len(columns) + 2)
    wide = fit_widths(columns, [["1", "short", "y" * 40, "0.1"]], 200)
    assert wide["title"] == 5 and wide["category"] == 40  # a column never takes more than its content
    assert str(fit_cell("Schindler's List (1993)", 10)) == "Schindler…"
    assert str(fit_cell("Fargo (1996)", 20)) == "Fargo (1996)"


async def test_filter_by_a_title_finds_the_users_who_had_it(session):
    db = sqlite3.connect(session.run.catalog_path)
    expected = {row[0] for row in db.execute("select distinct x.user_idx from interactions x join items i "
                                             "using (item_idx) where i.title = 'Movie 12'")}
    app = create_app(session)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("slash", *"movie 12")
        await settle(app, pilot)
        picker = app.screen.query_one("#users")
        assert not picker.by_id and picker.title_search.titles == ["Movie 12"]
        assert {r.user_idx for r in picker.shown} == expected and 0 < len(expected) < 60
        assert str(app.screen.query_one("#user-count").render()).startswith(f"{len(expected)} users had Movie 12")
        await pilot.press("enter", "down")
        await settle(app, pilot)
        assert app.screen.user_idx in expected
        assert "Movie 12" in [h.title for h in app.screen.history_rows]
        await pilot.press("slash", *(["backspace"] * 8), *"zzz")  # neither an id nor a title
        await settle(app, pilot)
        assert picker.shown == [] and "no user id or title matches 'zzz'" in str(
            app.screen.query_one("#user-count").render())
        await pilot.press(*(["backspace"] * 3), "u", "1")  # an id again: no catalog search
        assert {r.user_id for r in picker.shown} == {r.user_id for r in session.user_rows if "u1" in r.user_id}


async def test_history_starts_at_the_most_recent_items(session):
    app = create_app(session)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        table = app.screen.query_one("#history-table", DataTable)
        history = session.history(app.screen.user_idx)
        first, last = table.get_row_at(0), table.get_row_at(table.row_count - 1)
        assert str(first[0]) == str(len(history)) and str(first[4]) == "test"  # newest first: the test item
        assert str(first[1]) == history[-1].title and str(last[0]) == "1"
        assert table.cursor_row == 0 and table.scroll_y == 0


async def test_no_catalog_or_model_call_on_the_ui_thread(tiny_run, monkeypatch):
    import threading

    on_ui = []

    class Watched(RunSession):
        def model(self):
            if threading.current_thread() is threading.main_thread():
                on_ui.append("model")
            return super().model()

    session = Watched(tiny_run)  # opening the run reads the catalog before the app starts: allowed
    connect = sqlite3.connect

    def watched_connect(*args, **kwargs):
        if threading.current_thread() is threading.main_thread():
            on_ui.append(f"sqlite3.connect{args[:1]}")
        return connect(*args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", watched_connect)
    app = create_app(session)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(app, pilot)
        for keys in (["down"], ["down", "up"], ["3", "c"], ["2"], ["slash", *"movie 3"], ["enter", "down"],
                     ["1", "g"], ["4"], ["5"]):
            await pilot.press(*keys)
            await settle(app, pilot)
        assert app.screen.explanation is not None and app.screen.explanation.source == "live"
    assert on_ui == []


async def test_a_live_text_on_other_kernels_comes_with_a_warning(tiny_run, tmp_path):
    """Where this machine's kernels compute otherwise than the training's, the first live text says its list may
    differ from the cached one; on the training's own kernels nothing is said."""
    import json
    for tampered in (False, True):
        run = shutil.copytree(tiny_run, tmp_path / f"run-{tampered}")
        if tampered:
            config = json.loads((run / "config.json").read_text())
            config["deftrec"]["kernels"]["float32"] = "0" * 16
            (run / "config.json").write_text(json.dumps(config))
        app = create_app(RunSession(run))
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(app, pilot)
            await pilot.press("g")
            await settle(app, pilot)
            assert app.screen.explanation.source == "live"
            warned = [n for n in app._notifications if n.title == "kernels"]
            assert len(warned) == tampered
            if tampered:
                assert warned[0].severity == "warning" and "float32 kernels" in warned[0].message
