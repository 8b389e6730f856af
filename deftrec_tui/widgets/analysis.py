"""The analysis tab: where the run's models win and lose (engine.services.slices, the figures of `deftrec eval --slices`).
Bars for HR@10 by history length and by test-item popularity and for the generated categories (textual-plotext),
tables for the rest. Computed once, in a thread worker, the first time the tab is shown."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Label, Static
from textual_plotext import PlotextPlot

from deftrec_tui import slice_tables as st
from deftrec_tui.messages import AnalysisFailed, AnalysisReady

STACK_BELOW = 100  # narrower than this, the two slice plots go one under the other
GENERATED_BARS = 8  # category parts in the generated-vs-history plot (the table has them all)


def _rgb(color: str) -> tuple[int, int, int]:
    """'#rrggbb' -> (r, g, b), the colour form plotext takes."""
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def shorten(label: str, width: int) -> str:
    """The label cut to `width` cells with an ellipsis."""
    return label if len(label) <= width else label[:max(width - 1, 1)] + "…"


class BarPlot(PlotextPlot):
    """Grouped bars (one series per model or source) over labelled groups, with a title, axes and ticks."""

    def __init__(self, title: str, xlabel: str, ylabel: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.plot_title, self.xlabel, self.ylabel = title, xlabel, ylabel
        self.groups: list[str] = []
        self.series: dict[str, list[float]] = {}

    def show_bars(self, groups: list[str], series: dict[str, list[float]], colors: dict[str, str]) -> None:
        """Draw `series` ({name: a value per group}) as bars side by side in each group."""
        self.groups, self.series = list(groups), {name: list(values) for name, values in series.items()}
        plt = self.plt
        plt.clear_figure()
        plt.title(self.plot_title)
        plt.xlabel(self.xlabel)
        plt.ylabel(self.ylabel)
        if groups and series:
            plt.multiple_bar(self.groups, list(self.series.values()),
                             color=[_rgb(colors[name]) for name in self.series])
        self.refresh()

    def render(self):
        """The plot at the widget's size, each group's tick label cut to the group's width."""
        if self.groups:
            room = max(3, (self.size.width - 10) // len(self.groups) - 1)
            self.plt.xticks(list(range(1, len(self.groups) + 1)), [shorten(g, room) for g in self.groups])
        return super().render()


class AnalysisPanel(VerticalScroll):
    """Slices, list statistics, overlap and generated categories of the run, beside LightGCN, MF and popularity."""

    def __init__(self, session, **kwargs) -> None:
        super().__init__(**kwargs)
        self.session = session
        self.report = None
        self.started = False

    def compose(self) -> ComposeResult:
        yield Static("computing the analysis…", id="analysis-status")
        with Vertical(id="analysis-body"):
            yield Static(id="analysis-legend")
            with Horizontal(id="analysis-plots"):
                yield BarPlot("HR@10 by history length", "train items of the user", "HR@10", id="plot-history")
                yield BarPlot("HR@10 by test-item popularity", "train interactions of the test item", "HR@10",
                              id="plot-popularity")
            yield Label("HR@10 NDCG@10 by slice", classes="section-title")
            yield Static(id="analysis-slices")
            yield Label("each model's top-10", classes="section-title")
            yield Static(id="analysis-lists")
            yield Static(id="analysis-overlap")
            with Vertical(id="analysis-generated"):
                yield Label("generated categories against the histories'", classes="section-title")
                yield Static(id="generated-legend")
                yield BarPlot("generated category vs the history's leading parts", "category part",
                              "% of users", id="plot-generated")
                yield Static(id="generated-table")

    def on_mount(self) -> None:
        self.query_one("#analysis-body").display = False

    def on_show(self) -> None:
        if not self.started:
            self.started = True
            self.compute()

    def on_resize(self) -> None:
        self.query_one("#analysis-plots").set_class(self.size.width < STACK_BELOW, "stacked")

    @work(thread=True, exclusive=True, group="analysis")
    def compute(self) -> None:
        """engine.services.slices.slice_report of the session's run, posted back as a message."""
        try:
            from engine.services.slices import slice_report
            self.post_message(AnalysisReady(slice_report(self.session.run)))
        except Exception as exc:  # noqa: BLE001  shown in the tab; the app keeps running
            text = exc.one_line() if hasattr(exc, "one_line") else f"{type(exc).__name__}: {exc}"
            self.post_message(AnalysisFailed(" ".join(str(text).split())))

    @on(AnalysisFailed)
    def failed(self, event: AnalysisFailed) -> None:
        event.stop()
        self.query_one("#analysis-status", Static).update(f"the analysis failed: {event.error}")

    @on(AnalysisReady)
    def ready(self, event: AnalysisReady) -> None:
        event.stop()
        self.show_report(event.report)

    def show_report(self, report) -> None:
        """Fill every plot and table from a SliceReport."""
        self.report = report
        k = report.k
        status = Text(st.header_line(report))
        for note in report.notes:
            status.append(f"\n{note}", style="yellow")
        self.query_one("#analysis-status", Static).update(status)
        colors = {m: st.model_color(m) for m in report.models}
        self.query_one("#analysis-legend", Static).update(st.legend(report.models, list(colors.values())))
        for plot_id, slices in (("#plot-history", report.history), ("#plot-popularity", report.popularity)):
            self.query_one(plot_id, BarPlot).show_bars(
                [s.label for s in slices], {m: [s.metrics[m][f"HR@{k}"] for s in slices] for m in report.models},
                colors)
        self.query_one("#analysis-slices", Static).update(Group(
            st.slice_table(report, st.history_rows(report), "train items", "by history length (train items)"), "",
            st.slice_table(report, report.category, "category", st.category_title(report)), "",
            st.slice_table(report, report.popularity, "popularity",
                           "by the test item's popularity (its train interactions)")))
        self.query_one("#analysis-lists", Static).update(Group(st.lists_table(report),
                                                                Text(st.LISTS_NOTE, style="dim")))
        overlap = self.query_one("#analysis-overlap", Static)
        overlap.update(st.overlap_line(report) if report.overlap else "")
        overlap.display = bool(report.overlap)
        generated = self.query_one("#analysis-generated")
        generated.display = bool(report.generated)
        if report.generated:
            rows = report.generated["rows"][:GENERATED_BARS]
            generator = self.session.explainer.name  # the model whose generated categories these are
            names = {"generated": st.model_color(generator), "history leading": st.HISTORY_COLOR}
            self.query_one("#generated-legend", Static).update(st.legend(list(names), list(names.values())))
            self.query_one("#plot-generated", BarPlot).show_bars([r["category"] for r in rows],
                           {"generated": [100 * r["generated"] for r in rows],
                            "history leading": [100 * r["history_leading"] for r in rows]}, names)
            self.query_one("#generated-table", Static).update(Group(
                st.generated_table(report), Text(st.generated_line(report), style="dim")))
        self.query_one("#analysis-body").display = True
