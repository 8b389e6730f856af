"""SVG snapshots of the explorer's main views (pytest-textual-snapshot); update with --snapshot-update."""

import pytest

from deftrec_tui.app import create_app
from engine.services.session import RunSession
from tests.tui_helpers import LongTitles


@pytest.fixture(scope="module")
def session(tiny_run):
    return RunSession(tiny_run)


def settled(*keys):
    async def run_before(pilot) -> None:
        app = pilot.app
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        for key in keys:
            await pilot.press(key)
            await app.workers.wait_for_complete()
            await pilot.pause()
    return run_before


def test_main_screen_80x24(snap_compare, session):
    assert snap_compare(create_app(session), terminal_size=(80, 24), run_before=settled())


def test_trajectory_tab_120x36(snap_compare, session):
    assert snap_compare(create_app(session), terminal_size=(120, 36), run_before=settled("2", "comma", "comma"))


def test_topk_with_lightgcn_120x36(snap_compare, session):
    assert snap_compare(create_app(session), terminal_size=(120, 36), run_before=settled("3", "c"))


def test_help_screen_80x24(snap_compare, session):
    assert snap_compare(create_app(session), terminal_size=(80, 24), run_before=settled("question_mark"))


@pytest.fixture(scope="module")
def long_session(tiny_run):
    return LongTitles(tiny_run)


def test_topk_long_titles_100x30(snap_compare, long_session):
    assert snap_compare(create_app(long_session), terminal_size=(100, 30), run_before=settled("3"))


def test_topk_long_titles_with_lightgcn_160x48(snap_compare, long_session):
    assert snap_compare(create_app(long_session), terminal_size=(160, 48), run_before=settled("3", "c"))
