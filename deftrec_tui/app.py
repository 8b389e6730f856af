"""The explorer app. `create_app` takes the session (a RunSession, or a fake in tests), and a second one to
compare with, so nothing here opens files or loads models by itself."""

from __future__ import annotations

from functools import partial

from textual.app import App
from textual.binding import Binding
from textual.command import Hit, Hits, Provider

from deftrec_tui.screens.compare import CompareScreen
from deftrec_tui.screens.main import MainScreen

COMMANDS = [
    ("Random user", "jump to a random user", "random_user"),
    ("Generate live", "generate the current user's preference again, token by token", "generate"),
    ("Toggle LightGCN comparison", "show LightGCN's list beside DeftRec's", "compare"),
    ("Export to CSV", "the current user's list or every user's", "export"),
    ("Sort users", "by id, history length or hit/miss", "sort"),
    ("Play / pause trajectory", "animate the denoising steps", "play"),
    ("Show run summary", "metrics and config", "tab('tab-run')"),
    ("Help", "areas and key bindings", "help"),
]


class ExplorerCommands(Provider):
    """The explorer's actions in the command palette (ctrl+p)."""

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        screen = self.app.screen
        if not isinstance(screen, MainScreen):
            return
        for name, help_text, action in COMMANDS:
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), partial(screen.run_action, action), help=help_text)


class ExplorerApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "deftrec"  # not a recommender: the program's name
    COMMANDS = App.COMMANDS | {ExplorerCommands}
    BINDINGS = [Binding("q", "quit", "quit"), Binding("ctrl+q", "quit", "quit", show=False)]

    def __init__(self, session, compare=None) -> None:
        super().__init__()
        self.session = session
        self.pair = None
        if compare is not None:
            from engine.services.compare import RunPair
            self.pair = RunPair(session, compare)  # refuses two runs of different datasets

    def on_mount(self) -> None:
        self.push_screen(MainScreen(self.session) if self.pair is None else CompareScreen(self.pair))


def create_app(session, compare=None) -> ExplorerApp:
    """The explorer on an opened run (engine.services.session.RunSession or anything with its interface), or the
    user-by-user comparison of it with `compare`, a second run of the same dataset."""
    return ExplorerApp(session, compare)
