"""The user tab: history (newest first: test, validation, then train items), a bar chart of its categories, and the
preference text as the LLM writes it, with the extracted category highlighted."""

from __future__ import annotations

import re
import time
from collections import Counter

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Label, Static

from deftrec_tui.widgets.canvas import PALETTE

SPLIT_STYLE = {"valid": "bold yellow", "test": "bold magenta"}


def category_colors(categories: list[str]) -> dict[str, str]:
    """A stable colour per primary category (the first of 'A|B')."""
    primaries = sorted({(c or "").split("|")[0] for c in categories})
    return {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(primaries)}


def category_bars(categories: list[str], width: int = 24, top: int = 8) -> Text:
    """Horizontal bars of how often each category (multi-genre 'A|B' counts for each) appears."""
    counts = Counter(part for c in categories for part in (c or "unknown").split("|") if part)
    text = Text()
    if not counts:
        return Text("no history", style="dim")
    most = counts.most_common(top)
    peak = most[0][1]
    label_width = min(14, max(len(name) for name, _ in most))
    for i, (name, count) in enumerate(most):
        bar = "█" * max(1, round(width * count / peak))
        text.append(f"{name[:label_width]:<{label_width}} ", style="bold")
        text.append(bar, style=PALETTE[i % len(PALETTE)])
        text.append(f" {count}\n" if i < len(most) - 1 else f" {count}")
    return text


def highlight_category(text: str, category: str | None) -> Text:
    """The preference sentence with the category the retriever matched in bold reverse."""
    rich_text = Text(text)
    if category:
        for match in re.finditer(re.escape(category), text, flags=re.IGNORECASE):
            rich_text.stylize("bold reverse #e5c07b", match.start(), match.end())
    return rich_text


def format_time(timestamp: int | None) -> str:
    if timestamp is None:
        return ""
    try:
        return time.strftime("%Y-%m-%d", time.gmtime(int(timestamp)))
    except (OverflowError, ValueError, OSError):
        return str(timestamp)


class HistoryPanel(Horizontal):
    """The user's interactions and their category chart."""

    def compose(self) -> ComposeResult:
        table = DataTable(id="history-table", cursor_type="row", zebra_stripes=True)
        table.add_columns("#", "title", "category", "time", "split")
        yield table
        with Vertical(id="history-side"):
            yield Label("categories in the history", classes="section-title")
            yield Static("", id="category-bars")

    def show(self, rows: list) -> None:
        """The rows (oldest first, as the session gives them) listed newest first; # is the position in time."""
        table = self.query_one("#history-table", DataTable)
        table.clear()
        for i, row in reversed(list(enumerate(rows, start=1))):
            style = SPLIT_STYLE.get(row.split, "")
            table.add_row(str(i), Text(row.title, style=style), row.category, format_time(row.timestamp),
                          Text(row.split, style=style or "dim"))
        table.scroll_home(animate=False)
        train_categories = [r.category for r in rows if r.split == "train"]
        self.query_one("#category-bars", Static).update(category_bars(train_categories))


class PreferencePanel(VerticalScroll):
    """The prompt's history summary and the generated sentence (streamed live, or from the cache)."""

    def compose(self) -> ComposeResult:
        yield Label("preference text", classes="section-title")
        yield Static("", id="preference-text")
        yield Label("", id="preference-meta")

    def start(self, user_id: str) -> None:
        self.streamed = ""
        self.query_one("#preference-text", Static).update(Text("generating…", style="dim italic"))
        self.query_one("#preference-meta", Label).update(f"user {user_id} · live generation")

    def append(self, chunk: str) -> None:
        self.streamed = getattr(self, "streamed", "") + chunk
        self.query_one("#preference-text", Static).update(Text(self.streamed + "▌"))

    def show(self, text: str, category: str | None, source: str) -> None:
        self.query_one("#preference-text", Static).update(highlight_category(text, category))
        where = "cached at training" if source == "cache" else "generated now"
        found = f"category found: {category}" if category else "no category found: π = 0 for every item"
        self.query_one("#preference-meta", Label).update(f"{where} · {found}")

    def clear_text(self, message: str) -> None:
        self.query_one("#preference-text", Static).update(Text(message, style="dim"))
        self.query_one("#preference-meta", Label).update("")
