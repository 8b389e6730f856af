"""`deftrec tui A --compare B`: two runs of one dataset user by user (both texts, both lists with the shared items
marked, both test ranks, who hits alone), its paired figures equal to `deftrec eval A B`'s, and the one-line
refusal of two datasets. Waits for workers; never sleeps."""

import pytest
from textual.widgets import DataTable

from deftrec_tui.app import create_app
from deftrec_tui.screens.help import HelpScreen
from deftrec_tui.widgets.compare import PairPicker, PairSide
from engine.services.compare import RunPair, open_pair
from engine.services.session import RunSession
from tests.tui_helpers import other_dataset_run, second_run, visible_rows


async def settle(app, pilot):
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()


@pytest.fixture(scope="module")
def run_b(tiny_run, tmp_path_factory):
    return second_run(tiny_run, tmp_path_factory.mktemp("compare") / "tiny-b")


@pytest.fixture(scope="module")
def sessions(tiny_run, run_b):
    return open_pair(tiny_run, run_b)


def test_pair_rows_and_paired_figures_equal_eval_a_b(sessions):
    from engine.services.evaluation import compare_runs, stored_metrics
    a, b = sessions
    pair = RunPair(a, b)
    assert len(pair.rows) == 60 and [r.user_id for r in pair.rows] == [r.user_id for r in a.user_rows]
    figures = pair.paired()
    assert figures == compare_runs(a.run, stored_metrics(a.run), b.run, stored_metrics(b.run))["paired_test"]
    outcomes = [r.outcome() for r in pair.rows]
    assert outcomes.count("A only") == figures["hit by A only"] > 0
    assert outcomes.count("B only") == figures["hit by B only"] > 0
    assert outcomes.count("both") == figures["hit by both"]
    assert all(r.hit_b() for r in pair.rows if r.user_idx % 3 == 2)  # the fixture's B puts the test item first
    detail = pair.detail(0)  # user 0 keeps A's list in B: every item shared
    assert detail.b.text == "B: " + detail.a.text and len(detail.shared) == len(detail.a.items) == 20


async def test_compare_view_shows_both_runs_for_a_user(sessions):
    a, b = sessions
    app = create_app(a, compare=b)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(app, pilot)
        screen = app.screen
        pair = screen.pair
        figures = pair.paired()
        summary = str(screen.query_one("#pair-summary").render())
        assert f"hit by A only {figures['hit by A only']}, B only {figures['hit by B only']}" in summary
        assert f"HR@10 {figures['HR@10 A']:.4f}" in summary and f"HR@10 {figures['HR@10 B']:.4f}" in summary

        await pilot.press("down", "down")  # the third user in id order
        await settle(app, pilot)
        row = pair.by_idx[screen.user_idx]
        detail = screen.detail
        assert detail is not None and detail.user_idx == screen.user_idx
        side_a, side_b = screen.query_one("#side-a", PairSide), screen.query_one("#side-b", PairSide)
        assert str(side_a.query_one(".pair-preference").render()) == detail.a.text
        assert str(side_b.query_one(".pair-preference").render()) == detail.b.text
        table_a, table_b = side_a.query_one(DataTable), side_b.query_one(DataTable)
        assert table_a.row_count == table_b.row_count == 20
        marked_a = [str(table_a.get_cell_at((i, 3))) for i in range(20)]
        assert sum("●" in m for m in marked_a) == len(detail.shared) and f"{len(detail.shared)} shared" in str(
            side_a.query_one(".pair-title").render())
        assert sum("★" in m for m in marked_a) == (row.rank_a is not None)
        test_line = str(screen.query_one("#pair-test").render())
        assert detail.test_title in test_line and f"hit by {row.outcome()}" in test_line
        for rank, words in ((row.rank_a, "A: "), (row.rank_b, "B: ")):
            assert (f"{words}rank {rank}" if rank else f"{words}not in the top-20") in test_line
        for table in (table_a, table_b):  # scores on screen, no horizontal scrolling
            assert table.max_scroll_x == 0 and len(visible_rows(app, table)) >= 5

        picker = screen.query_one(PairPicker)
        await pilot.press("f")  # hit by A only
        assert picker.outcome_filter == "A only"
        assert len(picker.shown) == figures["hit by A only"] and all(r.outcome() == "A only" for r in picker.shown)
        await pilot.press("f")
        assert [r.outcome() for r in picker.shown] == ["B only"] * figures["hit by B only"]
        await pilot.press("f", "f", "f")  # both, neither, all
        assert picker.outcome_filter == "all" and len(picker.shown) == 60
        await pilot.press("s")  # A's lone hits first, best rank first
        assert picker.sort == "A only"
        first = picker.shown[:figures["hit by A only"]]
        assert all(r.outcome() == "A only" for r in first)
        assert [r.rank_a for r in first] == sorted(r.rank_a for r in first)
        await pilot.press("s")
        assert all(r.outcome() == "B only" for r in picker.shown[:figures["hit by B only"]])

        await pilot.press("slash", *"movie 12")  # users who had a title, in the comparison too
        await settle(app, pilot)
        expected = a.find_users("movie 12").user_idxs
        assert {r.user_idx for r in picker.shown} == set(expected) and expected
        await pilot.press("enter", "question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")


def test_tui_compare_refuses_two_datasets_in_one_line(tiny_run, tmp_path):
    from typer.testing import CliRunner

    from deftrec_tui.cli import app
    other = other_dataset_run(tiny_run, tmp_path / "other")
    result = CliRunner().invoke(app, ["tui", str(tiny_run), "--compare", str(other)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the two runs are of different datasets")
    with pytest.raises(Exception, match="different datasets"):
        create_app(RunSession(tiny_run), compare=RunSession(other))


def test_compare_refuses_a_run_without_deftrec_lists(tiny_run, tmp_path):
    import json
    import shutil

    from data.errors import RunError
    cf_only = tmp_path / "cf"
    shutil.copytree(tiny_run, cf_only)
    config = json.loads((cf_only / "config.json").read_text())
    config["models"], config["deftrec"] = [m for m in config["models"] if m != "deftrec"], None
    (cf_only / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunError, match="no DeftRec lists to compare"):
        create_app(RunSession(tiny_run), compare=RunSession(cf_only))


def settled(*keys):
    async def run_before(pilot) -> None:
        await settle(pilot.app, pilot)
        for key in keys:
            await pilot.press(key)
            await settle(pilot.app, pilot)
    return run_before


def test_compare_snapshot_100x30(snap_compare, sessions):
    assert snap_compare(create_app(*sessions), terminal_size=(100, 30), run_before=settled("down"))


def test_compare_snapshot_160x48(snap_compare, sessions):
    assert snap_compare(create_app(*sessions), terminal_size=(160, 48), run_before=settled("f", "down"))
