"""Turn user-facing errors into one stderr line and exit code 2."""

from __future__ import annotations

import functools
import sys

import typer


def cli_errors(func):
    """Decorator for command bodies: DeftrecError → 'error: …' on one line, exit 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from data.errors import DeftrecError
        try:
            return func(*args, **kwargs)
        except DeftrecError as exc:
            print(f"error: {exc.one_line()}", file=sys.stderr)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper
