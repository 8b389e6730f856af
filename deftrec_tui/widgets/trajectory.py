"""The denoising trajectory: play, pause, step and a slider over the 100 steps; at each step the norm of x_t,
its cosine to the final y, the nearest item, the test item's rank; plots of these over the steps; and a 2-D PCA
map of the item vectors (coloured by category) with the path drawn on it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.events import Click
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Button, Label, Static

from deftrec_tui.widgets.canvas import BrailleCanvas, Scale, line_plot
from deftrec_tui.widgets.user_panel import category_colors


class Slider(Widget, can_focus=True):
    """A horizontal slider over 0..maximum; arrow keys, Home/End and mouse clicks move it."""

    BINDINGS = [Binding("left", "nudge(-1)", "back", show=False), Binding("right", "nudge(1)", "forward", show=False),
                Binding("home", "jump(0)", show=False), Binding("end", "jump(-1)", show=False)]
    value: reactive[int] = reactive(0)
    maximum: reactive[int] = reactive(100)

    @dataclass
    class Changed(Message):
        value: int

    def render(self) -> Text:
        width = max(3, self.size.width)
        filled = round((width - 1) * self.value / self.maximum) if self.maximum else 0
        text = Text("━" * filled, style="#61afef")
        text.append("●", style="bold #ffffff")
        text.append("─" * (width - filled - 1), style="#5c6370")
        return text

    def set(self, value: int) -> None:
        value = max(0, min(self.maximum, value))
        if value != self.value:
            self.value = value
            self.post_message(self.Changed(value))

    def action_nudge(self, delta: int) -> None:
        self.set(self.value + delta)

    def action_jump(self, where: int) -> None:
        self.set(self.maximum if where < 0 else where)

    def on_click(self, event: Click) -> None:
        width = max(2, self.size.width - 1)
        self.set(round(self.maximum * min(max(event.x, 0), width) / width))


def item_map(coords: np.ndarray, categories: list[str], path: np.ndarray | None, step: int,
             history: list[int], test_item: int | None, width: int, height: int) -> Text:
    """Items as coloured dots (primary category), the trajectory up to `step`, history (+) and test (★)."""
    canvas = BrailleCanvas(width, height)
    points = coords if path is None else np.concatenate([coords, path])
    scale = Scale(points[:, 0].tolist(), points[:, 1].tolist(), canvas)
    colors = category_colors(categories)
    for (x, y), category in zip(coords, categories):
        canvas.dot(*scale(x, y), colors[(category or "").split("|")[0]])
    for item in history:
        canvas.glyph(*scale(*coords[item]), "+", "bold #56b6c2")
    if path is not None:
        previous = None
        for x, y in path[: step + 1]:
            point = scale(x, y)
            if previous is not None:
                canvas.line(*previous, *point, "#ffffff")
            previous = point
        canvas.glyph(*scale(*path[0]), "○", "bold #abb2bf")
        canvas.glyph(*scale(*path[step]), "◆", "bold #ffffff")
    if test_item is not None:
        canvas.glyph(*scale(*coords[test_item]), "★", "bold #ff79c6")
    return canvas.render()


class TrajectoryPanel(Vertical):
    """Controls, per-step statistics, plots over the steps and the PCA map."""

    step: reactive[int] = reactive(0)

    def __init__(self, variant: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.variant = variant  # e.g. "contrec: σ-VAE tokenizer · dispersive x0-diffusion, CFG w=2 · τ=0"
        self.explanation = None
        self.context: dict = {}
        self.playing = False
        self.timer = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="trajectory-controls"):
            yield Button("|◀", id="traj-start", compact=True)
            yield Button("◀", id="traj-back", compact=True)
            yield Button("▶", id="traj-play", compact=True)
            yield Button("▶|", id="traj-forward", compact=True)
            yield Label("step –/–", id="traj-step")
            yield Slider(id="traj-slider")
        yield Label(Text(self.variant, style="dim"), id="traj-variant")
        yield Static(Text("select a user; the trajectory appears once the model is loaded", style="dim"),
                     id="traj-stats")
        with Horizontal(id="trajectory-body"):
            yield Static("", id="traj-plots")
            yield Static("", id="traj-map")

    def show(self, explanation, coords: np.ndarray, categories: list[str], history: list[int],
             test_item: int | None, items: list) -> None:
        self.explanation = explanation
        self.context = {"coords": coords, "categories": categories, "history": history, "test": test_item,
                        "items": items}
        slider = self.query_one(Slider)
        slider.maximum = max(0, len(explanation.steps) - 1)
        self.step = slider.maximum
        slider.value = self.step
        self.redraw()

    def clear(self, message: str) -> None:
        self.explanation = None
        self.pause()
        self.query_one("#traj-stats", Static).update(Text(message, style="dim"))
        self.query_one("#traj-plots", Static).update("")
        self.query_one("#traj-map", Static).update("")
        self.query_one("#traj-step", Label).update("step –/–")

    def watch_step(self, step: int) -> None:
        if self.explanation is not None:
            self.query_one(Slider).value = step
            self.redraw()

    def on_slider_changed(self, event: Slider.Changed) -> None:
        self.step = event.value

    def on_resize(self) -> None:
        self.call_after_refresh(self.redraw)

    def on_show(self) -> None:
        self.call_after_refresh(self.redraw)

    def redraw(self) -> None:
        if self.explanation is None or not self.explanation.steps:
            return
        steps = self.explanation.steps
        step = min(self.step, len(steps) - 1)
        stats = steps[step]
        items = self.context["items"]
        last = len(steps) - 1
        self.query_one("#traj-step", Label).update(f"step {step}/{last}")
        nearest = items[stats.nearest_item]
        text = Text()
        text.append(f"‖x_t‖ {stats.norm:7.3f}   cos(x_t, y) {stats.cos_to_final:+.3f}   ", style="bold")
        text.append("test item rank ")
        text.append(f"{stats.test_rank}", style="bold green" if stats.test_in_top_k else "bold red")
        text.append(" (in top-K)" if stats.test_in_top_k else " (outside top-K)")
        text.append(f"\nnearest item: {nearest['title']} [{nearest['category']}]  cos {stats.nearest_cosine:+.3f}")
        self.query_one("#traj-stats", Static).update(text)
        plots = self.query_one("#traj-plots", Static)
        width = max(10, (plots.size.width or 32) - 2)
        height = max(1, (plots.size.height or 12) // 3 - 1)
        body = Text()
        for name, values, style in (
                ("‖x_t‖", [s.norm for s in steps], "#61afef"),
                ("cos(x_t, y)", [s.cos_to_final for s in steps], "#98c379"),
                ("test rank (log, up = better)", [-np.log10(s.test_rank) for s in steps], "#ff79c6")):
            body.append(f"{name}\n", style=f"bold {style}")
            body.append_text(line_plot(values, width, height, marker=step, style=style))
            body.append("\n")
        plots.update(body)
        board = self.query_one("#traj-map", Static)
        path = self.explanation.trajectory_2d
        board.update(item_map(self.context["coords"], self.context["categories"], path, step,
                              self.context["history"], self.context["test"],
                              max(10, board.size.width or 40), max(4, board.size.height or 12)))

    # ------------------------------------------------------------------ playback

    def play(self) -> None:
        if self.explanation is None:
            return
        if self.step >= len(self.explanation.steps) - 1:
            self.step = 0
        self.playing = True
        self.query_one("#traj-play", Button).label = "⏸"
        if self.timer is None:
            self.timer = self.set_interval(0.06, self._tick)
        else:
            self.timer.resume()

    def pause(self) -> None:
        self.playing = False
        if self.timer is not None:
            self.timer.pause()
        if self.is_mounted:
            self.query_one("#traj-play", Button).label = "▶"

    def toggle(self) -> None:
        self.pause() if self.playing else self.play()

    def _tick(self) -> None:
        if self.explanation is None or self.step >= len(self.explanation.steps) - 1:
            self.pause()
            return
        self.step += 1

    def move(self, delta: int) -> None:
        if self.explanation is not None:
            self.pause()
            self.step = max(0, min(len(self.explanation.steps) - 1, self.step + delta))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if self.explanation is None:
            return
        actions = {"traj-start": lambda: self.move(-10**6), "traj-back": lambda: self.move(-1),
                   "traj-play": self.toggle, "traj-forward": lambda: self.move(1)}
        actions[event.button.id]()
