"""The main screen: the user picker on the left; the user, trajectory, top-K and run tabs on the right.
Every slow call (model load, generation, denoising, export) runs in a thread worker that posts messages."""

from __future__ import annotations

import random
import time
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Label, ProgressBar, TabbedContent, TabPane
from textual.worker import get_current_worker

from deftrec_tui.messages import (
    BaselineReady,
    ExplanationReady,
    ExportDone,
    ExportProgress,
    ModelLoaded,
    TextChunk,
    UserLoaded,
    WorkFailed,
)
from deftrec_tui.screens.dialogs import ErrorDialog, ExportDialog
from deftrec_tui.screens.help import HelpScreen
from deftrec_tui.widgets.analysis import AnalysisPanel
from deftrec_tui.widgets.summary import RunSummary
from deftrec_tui.widgets.topk import TopKPanel
from deftrec_tui.widgets.trajectory import TrajectoryPanel
from deftrec_tui.widgets.user_panel import HistoryPanel, PreferencePanel
from deftrec_tui.widgets.users import UserPicker
from engine.services.contract import TEXT, TRAJECTORY

TOP_K = 10  # the K of "test item in the top-K" and of the hit marks
LIST_K = 20  # the length of the lists shown and exported


class MainScreen(Screen):
    BINDINGS = [
        Binding("question_mark", "help", "help"),
        Binding("slash", "filter", "filter"),
        Binding("r", "random_user", "random"),
        Binding("s", "sort", "sort"),
        Binding("g", "generate", "generate"),
        Binding("space", "play", "play/pause"),
        Binding("comma", "step(-1)", "step −", show=False),
        Binding("full_stop", "step(1)", "step +", show=False),
        Binding("c", "compare", "LightGCN"),
        Binding("e", "export", "export"),
        Binding("1", "tab('tab-user')", "user", show=False),
        Binding("2", "tab('tab-trajectory')", "trajectory", show=False),
        Binding("3", "tab('tab-topk')", "top-K", show=False),
        Binding("4", "tab('tab-run')", "run", show=False),
        Binding("5", "tab('tab-analysis')", "analysis", show=False),
    ]
    KEY_HELP = [("↑/↓, mouse", "pick a user (the list on the left)"),
                ("/", "filter users by id, or by a title in their history"),
                ("r", "jump to a random user"), ("s", "sort by id / history length / hit-miss"),
                ("g", "generate this user's preference again, live, token by token"),
                ("1 2 3 4 5", "user / trajectory / top-K / run / analysis tab"),
                ("space", "play or pause the denoising trajectory"), (", and .", "one step back / forward"),
                ("←/→, Home/End", "move the trajectory slider when it has focus"),
                ("c", "show LightGCN's list beside DeftRec's"), ("e", "export this user or every user to CSV"),
                ("ctrl+p", "command palette"), ("?", "this help"), ("q, ctrl+q", "quit")]

    def __init__(self, session) -> None:
        super().__init__()
        self.session = session
        self.user_idx: int | None = None
        self.explanation = None
        self.history_rows: list = []
        self.compare = False
        self.model_state = "not loaded"

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="body"):
            yield UserPicker(self.session.user_rows, k=TOP_K, find_users=self.session.find_users, id="users")
            with TabbedContent(id="tabs", initial="tab-user"):
                with TabPane("user", id="tab-user"), Vertical():
                    yield HistoryPanel(id="history")
                    yield PreferencePanel(id="preference")
                with TabPane("trajectory", id="tab-trajectory"):
                    yield TrajectoryPanel(variant=self.variant, id="trajectory")
                with TabPane("top-K", id="tab-topk"):
                    yield TopKPanel(id="topk")
                with TabPane("run", id="tab-run"):
                    yield RunSummary(self.session, id="summary")
                with TabPane("analysis", id="tab-analysis"):
                    yield AnalysisPanel(self.session, id="analysis")
        with Horizontal(id="status-bar"):
            yield Label("", id="status")
            yield ProgressBar(id="export-bar", show_eta=False)
        yield Footer()

    @property
    def variant(self) -> str:
        """The run's model variant and sampler in one line ('' for a CF-only run)."""
        run = getattr(self.session, "run", None)
        config = run.deftrec_config if run is not None else None
        if config is None:
            return ""
        from engine.model.variants import variant_label
        return f"{variant_label(config)} · τ={config.diffusion.sampling_temperature:g}"

    def on_mount(self) -> None:
        self.title = f"deftrec · {self.session.path.name}"
        self.sub_title = self.variant
        self.query_one("#export-bar").display = False
        self.query_one("#user-table").focus()
        if not self.session.explains(TEXT):
            self.model_state = "none (a CF-only run: train with --stage all)"
        elif self.session.model_loaded:  # a session opened before (its model loaded by an earlier screen)
            self.model_state = "loaded"
        self.update_status()

    # ------------------------------------------------------------------ selection

    @on(UserPicker.Selected)
    def user_selected(self, event: UserPicker.Selected) -> None:
        self.select_user(event.user_idx)

    def select_user(self, user_idx: int, live: bool = False) -> None:
        self.user_idx = user_idx
        self.explanation, self.history_rows = None, []
        self.query_one(HistoryPanel).show([])
        self.query_one(TopKPanel).clear()
        self.query_one(PreferencePanel).clear_text("reading the catalog…")
        self.query_one(TrajectoryPanel).clear("reading the catalog…")
        self.compute(user_idx, live)
        if self.compare:
            self.load_baseline(user_idx)
        self.update_status()

    @on(UserLoaded)
    def user_loaded(self, event: UserLoaded) -> None:
        if event.user_idx != self.user_idx:
            return
        cached, preference = event.cached, self.query_one(PreferencePanel)
        self.history_rows, self.explanation = event.history, cached
        self.query_one(HistoryPanel).show(event.history)
        if cached is not None:
            preference.show(cached.text, cached.category, "cache")
            self.query_one(TopKPanel).show(cached.items, "cache")
        else:
            preference.clear_text("no cached result: generating…" if self.session.explains(TEXT)
                                  else "this run has no DeftRec model")
        if self.session.explains(TRAJECTORY):
            self.query_one(TrajectoryPanel).clear("computing the trajectory…" if self.session.model_loaded
                                                  else "loading the model (once per session)…")
            if event.live or cached is None:
                preference.start(self.session.user_rows[event.user_idx].user_id)
        else:
            self.query_one(TrajectoryPanel).clear("this run has no DeftRec model")
        self.update_status()

    @work(thread=True, exclusive=True, group="user")
    def compute(self, user_idx: int, live: bool) -> None:
        """Read the user's history and cached result, then load the model (once) and compute the live result or
        the cached result's trajectory; all off the UI thread."""
        worker = get_current_worker()
        try:
            history = self.session.history(user_idx)
            cached = None if live else self.session.cached(user_idx)
        except Exception as exc:  # noqa: BLE001
            self.post_message(WorkFailed("the catalog could not be read", _one_line(exc)))
            return
        if worker.is_cancelled:
            return
        self.post_message(UserLoaded(user_idx, history, cached, live))
        if not self.session.explains(TEXT):
            return
        live = live or cached is None
        try:
            if not self.session.model_loaded:
                started = time.perf_counter()
                model = self.session.model()
                self.post_message(ModelLoaded(time.perf_counter() - started, self.session.kernel_drift()))
            else:
                model = self.session.model()
            if worker.is_cancelled:
                return
            if live:
                streamer = self.session.make_streamer(
                    model, lambda text: self.post_message(TextChunk(user_idx, text)),
                    should_stop=lambda: worker.is_cancelled)
                explanation = self.session.explain(user_idx, k=LIST_K, streamer=streamer, top=TOP_K)
            else:
                explanation = self.session.trajectory_for_cached(cached, k=TOP_K)
            if not worker.is_cancelled:
                self.session.item_map()
                explanation.trajectory_2d = self.session.project(explanation.trajectory)
                self.post_message(ExplanationReady(user_idx, explanation))
        except Exception as exc:  # noqa: BLE001  any failure is shown in a dialog; the app keeps running
            if not worker.is_cancelled:  # a cancelled worker's GenerationCancelled is not a failure
                self.post_message(WorkFailed("the model could not answer", _one_line(exc)))

    @on(ModelLoaded)
    def model_loaded(self, event: ModelLoaded) -> None:
        self.model_state = "loaded"
        self.log(f"model loaded in {event.seconds:.1f} s")
        if event.kernel_drift is not None:  # live texts may then differ from the cached ones the analyst compares with
            self.notify(event.kernel_drift, title="kernels", severity="warning", timeout=15)
        self.update_status()

    @on(TextChunk)
    def text_chunk(self, event: TextChunk) -> None:
        if event.user_idx == self.user_idx:
            self.query_one(PreferencePanel).append(event.text)

    @on(ExplanationReady)
    def explanation_ready(self, event: ExplanationReady) -> None:
        if event.user_idx != self.user_idx:
            return
        explanation = event.explanation
        self.explanation = explanation
        self.query_one(PreferencePanel).show(explanation.text, explanation.category, explanation.source)
        self.query_one(TopKPanel).show(explanation.items, explanation.source)
        coords, _ = self.session.item_map()  # computed by the worker before it posted
        history = [h.item_idx for h in self.history_rows if h.split == "train"]
        self.query_one(TrajectoryPanel).show(explanation, coords, [i["category"] or "" for i in self.session.items],
                                             history, self.session.test_item(event.user_idx), self.session.items)
        self.update_status()

    @on(WorkFailed)
    def work_failed(self, event: WorkFailed) -> None:
        self.query_one(TrajectoryPanel).clear(f"failed: {event.error}")
        self.app.push_screen(ErrorDialog(event.title, event.error))

    @on(TopKPanel.RowChosen)
    def row_chosen(self, event: TopKPanel.RowChosen) -> None:
        ranks = self.explanation.item_ranks(event.item_idx) if self.explanation is not None else None
        self.query_one(TopKPanel).explain(event.item_idx, ranks)

    # ------------------------------------------------------------------ LightGCN comparison

    def load_baseline(self, user_idx: int) -> None:
        if self.session.reference is None:
            self.app.push_screen(ErrorDialog("no comparison", "this run has no LightGCN model"))
            return
        self.baseline_worker(user_idx)

    @work(thread=True, exclusive=True, group="baseline")
    def baseline_worker(self, user_idx: int) -> None:
        try:
            self.post_message(BaselineReady(user_idx, self.session.baseline(user_idx, k=LIST_K)))
        except Exception as exc:  # noqa: BLE001
            self.post_message(WorkFailed("LightGCN's list could not be computed", _one_line(exc)))

    @on(BaselineReady)
    def baseline_ready(self, event: BaselineReady) -> None:
        if event.user_idx == self.user_idx and self.compare:
            self.query_one(TopKPanel).show_baseline(event.items)

    # ------------------------------------------------------------------ export

    def action_export(self) -> None:
        if self.user_idx is None:
            return
        user_id = self.session.user_rows[self.user_idx].user_id
        default = Path.cwd() / f"{self.session.path.name}-top{LIST_K}.csv"

        def chosen(answer) -> None:
            if answer is not None:
                scope, path = answer
                self.export_worker(scope, path, self.user_idx)
        self.app.push_screen(ExportDialog(default, f"user {user_id}"), chosen)

    @work(thread=True, exclusive=True, group="export")
    def export_worker(self, scope: str, path: Path, user_idx: int) -> None:
        try:
            if scope == "user":
                explanation = self.explanation if self.explanation is not None else self.session.cached(user_idx)
                if explanation is None:
                    raise ValueError("no result for this user yet")
                rows = self.session.export_user(explanation, path)
            else:
                rows = self.session.export_all(path, k=LIST_K,
                                               on_progress=lambda done, total: self.post_message(
                                                   ExportProgress(done, total)))
            self.post_message(ExportDone(str(path), rows))
        except Exception as exc:  # noqa: BLE001
            self.post_message(WorkFailed("export failed", _one_line(exc)))

    @on(ExportProgress)
    def export_progress(self, event: ExportProgress) -> None:
        bar = self.query_one("#export-bar", ProgressBar)
        bar.display = True
        bar.update(total=event.total, progress=event.done)

    @on(ExportDone)
    def export_done(self, event: ExportDone) -> None:
        self.query_one("#export-bar").display = False
        self.notify(f"{event.rows} rows written to {event.path}", title="export")

    # ------------------------------------------------------------------ actions

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(self.KEY_HELP))

    def action_filter(self) -> None:
        self.query_one("#user-filter").focus()

    def action_random_user(self) -> None:
        picker = self.query_one(UserPicker)
        if picker.shown:
            picker.move_to(random.choice(picker.shown).user_idx)

    def action_sort(self) -> None:
        self.query_one(UserPicker).cycle_sort()

    def action_generate(self) -> None:
        if self.user_idx is not None and self.session.explains(TEXT):
            self.query_one("#tabs", TabbedContent).active = "tab-user"
            self.select_user(self.user_idx, live=True)

    def action_play(self) -> None:
        self.query_one(TrajectoryPanel).toggle()

    def action_step(self, delta: int) -> None:
        self.query_one(TrajectoryPanel).move(delta)

    def action_compare(self) -> None:
        self.compare = not self.compare
        self.query_one("#topk-compare").display = self.compare
        if self.compare and self.user_idx is not None:
            self.query_one("#tabs", TabbedContent).active = "tab-topk"
            self.load_baseline(self.user_idx)

    def action_tab(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab

    def update_status(self) -> None:
        parts = [f"model: {self.model_state}"]
        if self.user_idx is not None:
            row = self.session.user_rows[self.user_idx]
            parts.append(f"user {row.user_id}: {row.n_train} train items")
            if row.test_rank is not None:
                parts.append(f"test item at rank {row.test_rank}")
            if self.explanation is not None:
                parts.append(f"result: {'cached' if self.explanation.source == 'cache' else 'live'}")
        self.query_one("#status", Label).update(" · ".join(parts))


def _one_line(exc: BaseException) -> str:
    text = exc.one_line() if hasattr(exc, "one_line") else f"{type(exc).__name__}: {exc}"
    return " ".join(str(text).split())
