"""Braille-dot drawing into rich Text: a 2-D scatter/map and small line plots, without a plotting library."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

# dot bit of (x % 2, y % 4) inside one braille cell (U+2800 block)
_BITS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))

PALETTE = ["#e06c75", "#98c379", "#e5c07b", "#61afef", "#c678dd", "#56b6c2", "#d19a66", "#be5046",
           "#7f848e", "#abb2bf", "#ff79c6", "#8be9fd", "#50fa7b", "#ffb86c", "#bd93f9", "#f1fa8c"]


class BrailleCanvas:
    """width×height character cells, each 2×4 dots; a cell keeps the style of its last dot; glyphs overlay dots."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = max(1, width), max(1, height)
        self.bits = [[0] * self.width for _ in range(self.height)]
        self.styles: list[list[str | None]] = [[None] * self.width for _ in range(self.height)]
        self.glyphs: dict[tuple[int, int], tuple[str, str]] = {}

    @property
    def dot_width(self) -> int:
        return self.width * 2

    @property
    def dot_height(self) -> int:
        return self.height * 4

    def dot(self, x: int, y: int, style: str | None = None) -> None:
        """Set dot (x, y); y = 0 is the top row."""
        if 0 <= x < self.dot_width and 0 <= y < self.dot_height:
            cx, cy = x // 2, y // 4
            self.bits[cy][cx] |= _BITS[x % 2][y % 4]
            if style:
                self.styles[cy][cx] = style

    def line(self, x0: int, y0: int, x1: int, y1: int, style: str | None = None) -> None:
        steps = max(abs(x1 - x0), abs(y1 - y0), 1)
        for i in range(steps + 1):
            self.dot(round(x0 + (x1 - x0) * i / steps), round(y0 + (y1 - y0) * i / steps), style)

    def glyph(self, x: int, y: int, char: str, style: str) -> None:
        """A character at the cell holding dot (x, y), drawn over the dots."""
        cx, cy = x // 2, y // 4
        if 0 <= cx < self.width and 0 <= cy < self.height:
            self.glyphs[(cx, cy)] = (char, style)

    def render(self) -> Text:
        text = Text()
        for cy in range(self.height):
            for cx in range(self.width):
                if (cx, cy) in self.glyphs:
                    char, style = self.glyphs[(cx, cy)]
                    text.append(char, style=style)
                elif self.bits[cy][cx]:
                    text.append(chr(0x2800 + self.bits[cy][cx]), style=self.styles[cy][cx] or "")
                else:
                    text.append(" ")
            if cy < self.height - 1:
                text.append("\n")
        return text


class Scale:
    """Maps data coordinates to dot coordinates of a canvas."""

    def __init__(self, xs: Sequence[float], ys: Sequence[float], canvas: BrailleCanvas) -> None:
        self.x0, self.x1 = (min(xs), max(xs)) if len(xs) else (0.0, 1.0)
        self.y0, self.y1 = (min(ys), max(ys)) if len(ys) else (0.0, 1.0)
        self.canvas = canvas

    def __call__(self, x: float, y: float) -> tuple[int, int]:
        w, h = self.canvas.dot_width - 1, self.canvas.dot_height - 1
        fx = (x - self.x0) / (self.x1 - self.x0) if self.x1 > self.x0 else 0.5
        fy = (y - self.y0) / (self.y1 - self.y0) if self.y1 > self.y0 else 0.5
        return round(min(max(fx, 0.0), 1.0) * w), round((1.0 - min(max(fy, 0.0), 1.0)) * h)


def line_plot(values: Sequence[float], width: int, height: int, marker: int | None = None,
              style: str = "#61afef", lower: float | None = None, upper: float | None = None) -> Text:
    """A braille line of `values` over the canvas width, with a vertical marker at index `marker`."""
    canvas = BrailleCanvas(width, height)
    if values:
        lo = min(values) if lower is None else lower
        hi = max(values) if upper is None else upper
        n = len(values)
        scale = Scale([0, max(n - 1, 1)], [lo, hi], canvas)
        previous = None
        for i, v in enumerate(values):
            point = scale(i, v)
            if previous is not None:
                canvas.line(*previous, *point, style)
            else:
                canvas.dot(*point, style)
            previous = point
        if marker is not None and 0 <= marker < n:
            mx, _ = scale(marker, lo)
            for y in range(canvas.dot_height):
                canvas.dot(mx, y, "bold #ffffff")
    return canvas.render()
