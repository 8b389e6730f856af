"""Modal dialogs: an error message, and the export form with its progress bar."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, ProgressBar, RadioButton, RadioSet


class ErrorDialog(ModalScreen[None]):
    """One error, one line of explanation; Enter or Escape closes it and the app keeps running."""

    BINDINGS = [Binding("escape,enter", "dismiss", "close")]

    def __init__(self, title: str, message: str) -> None:
        super().__init__()
        self.title_text, self.message = title, message

    def compose(self) -> ComposeResult:
        with Vertical(id="error-dialog", classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Label(self.message, id="error-message")
            yield Button("OK", variant="error", id="error-ok")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss()


class ExportDialog(ModalScreen[tuple[str, Path] | None]):
    """Choose what to export and where; returns (scope, path) with scope 'user' or 'all'."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, default_path: Path, user_label: str) -> None:
        super().__init__()
        self.default_path, self.user_label = default_path, user_label

    def compose(self) -> ComposeResult:
        with Vertical(id="export-dialog", classes="dialog"):
            yield Label("export to CSV", classes="dialog-title")
            with RadioSet(id="export-scope"):
                yield RadioButton(f"this user's list ({self.user_label})", value=True, id="scope-user")
                yield RadioButton("every user's list", id="scope-all")
            yield Input(str(self.default_path), id="export-path")
            with Horizontal(classes="dialog-buttons"):
                yield Button("export", variant="primary", id="export-go")
                yield Button("cancel", id="export-cancel")

    def on_mount(self) -> None:
        self.query_one("#export-path", Input).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "export-go":
            self.submit()
        else:
            self.dismiss(None)

    def on_input_submitted(self) -> None:
        self.submit()

    def submit(self) -> None:
        scope = "all" if self.query_one("#scope-all", RadioButton).value else "user"
        self.dismiss((scope, Path(self.query_one("#export-path", Input).value).expanduser()))

    def action_cancel(self) -> None:
        self.dismiss(None)


class ExportProgressBar(Vertical):
    """Shown in the status line while an export worker runs."""

    def compose(self) -> ComposeResult:
        yield Label("exporting…", id="export-label")
        yield ProgressBar(id="export-bar", show_eta=True)
