"""The explorer's analysis tab on the tiny run: the same figures as `deftrec eval --slices --json`, computed once
in a worker when the tab is first shown, errors shown in the tab; SVG snapshots at 100×30 and 160×48.
Waits for workers; never sleeps."""

import json
import shutil

import pytest
from rich.console import Console
from textual.widgets import TabbedContent
from typer.testing import CliRunner

from deftrec_tui.app import create_app
from deftrec_tui.cli import app as cli
from deftrec_tui.widgets.analysis import AnalysisPanel, BarPlot
from engine.services.session import RunSession


@pytest.fixture(scope="module")
def session(tiny_run):
    return RunSession(tiny_run)


async def open_analysis(app, pilot) -> AnalysisPanel:
    """Wait for the start-up workers, press 5, then wait until every worker is done and the analysis shown."""
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.press("5")
    panel = app.screen.query_one(AnalysisPanel)
    for _ in range(50):  # every worker done (the user's too), and the analysis shown or its failure
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        shown = panel.report is not None or "failed" in _text(panel.query_one("#analysis-status").content)
        if shown and not any(worker.is_running for worker in app.workers):
            break
    return panel


def _text(renderable, width: int = 200) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


async def test_analysis_tab_shows_the_figures_of_eval_slices_json(session, tiny_run):
    result = CliRunner().invoke(cli, ["eval", str(tiny_run), "--slices", "--json"])
    assert result.exit_code == 0, result.output
    expected = json.loads(result.output)
    app = create_app(session)
    async with app.run_test(size=(160, 48)) as pilot:
        panel = await open_analysis(app, pilot)
        assert app.screen.query_one("#tabs", TabbedContent).active == "tab-analysis"
        assert json.loads(json.dumps(panel.report.to_dict())) == expected
        k = expected["k"]
        for plot_id, key in (("#plot-history", "history"), ("#plot-popularity", "popularity")):
            plot = panel.query_one(plot_id, BarPlot)
            assert plot.groups == [s["label"] for s in expected[key]]
            assert plot.series == {m: [s["metrics"][m][f"HR@{k}"] for s in expected[key]] for m in expected["models"]}
        tables = _text(panel.query_one("#analysis-slices").content)
        lines = tables.splitlines()
        for key in ("history", "category", "popularity"):
            for s in expected[key]:
                row = next(line for line in lines if line.startswith(s["label"] + " "))
                assert row.split()[1] == str(s["users"])
                for model in expected["models"]:
                    values = s["metrics"][model]
                    assert f"{values[f'HR@{k}']:.3f} {values[f'NDCG@{k}']:.3f}" in row
        lists = _text(panel.query_one("#analysis-lists").content)
        for model, stats in expected["lists"].items():
            row = next(line for line in lists.splitlines() if line.startswith(model + " "))
            assert row.split()[1:] == [f"{stats['coverage']:.1%}", f"{stats['mean_popularity']:.1f}",
                                       f"{stats['diversity']:.3f}"]
        overlap = _text(panel.query_one("#analysis-overlap").content)
        assert f"Jaccard@{k} {expected['overlap']['jaccard']:.3f}" in overlap
        assert f"deftrec only {expected['overlap']['hit_by_a_only']}," in overlap
        assert f"exact McNemar p {expected['overlap']['mcnemar_p']:.3g}" in overlap
        generated = panel.query_one("#plot-generated", BarPlot)
        rows = expected["generated"]["rows"][:len(generated.groups)]
        assert generated.series["history leading"] == [100 * r["history_leading"] for r in rows]


async def test_the_analysis_is_computed_once_when_the_tab_is_first_shown(session):
    app = create_app(session)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        await app.workers.wait_for_complete()
        panel = app.screen.query_one(AnalysisPanel)
        assert not panel.started and panel.report is None  # nothing computed while the tab is hidden
        panel = await open_analysis(app, pilot)
        report = panel.report
        assert report is not None and panel.query_one("#analysis-body").display
        await pilot.press("1")
        await pilot.press("5")
        await pilot.pause()
        await app.workers.wait_for_complete()
        assert panel.report is report
        assert "tiny (csv:" in _text(panel.query_one("#analysis-status").content)


async def test_narrow_terminals_stack_the_plots(session):
    for width, stacked in ((100, True), (160, False)):
        app = create_app(session)
        async with app.run_test(size=(width, 30)) as pilot:
            panel = await open_analysis(app, pilot)
            plots = panel.query_one("#analysis-plots")
            assert plots.has_class("stacked") is stacked
            history, popularity = panel.query(BarPlot)[:2]
            assert (history.region.y < popularity.region.y) is stacked


async def test_a_failed_analysis_shows_in_the_tab_and_the_app_keeps_running(tmp_path, tiny_run):
    run = tmp_path / "broken"
    shutil.copytree(tiny_run, run)
    session = RunSession(run)
    (run / "mf.safetensors").unlink()  # removed after the app opened the run
    app = create_app(session)
    async with app.run_test(size=(120, 36)) as pilot:
        panel = await open_analysis(app, pilot)
        status = _text(panel.query_one("#analysis-status").content)
        assert "the analysis failed" in status and "mf" in status
        assert panel.report is None and not panel.query_one("#analysis-body").display
        await pilot.press("1")
        assert app.screen.query_one("#tabs", TabbedContent).active == "tab-user"


async def show_analysis(pilot) -> None:
    await open_analysis(pilot.app, pilot)


# a fresh session each: the status line says "model: loaded" only when this app loaded the model
def test_analysis_tab_100x30(snap_compare, tiny_run):
    assert snap_compare(create_app(RunSession(tiny_run)), terminal_size=(100, 30), run_before=show_analysis)


def test_analysis_tab_160x48(snap_compare, tiny_run):
    assert snap_compare(create_app(RunSession(tiny_run)), terminal_size=(160, 48), run_before=show_analysis)
