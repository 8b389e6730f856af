"""`deftrec tui`: the explorer on a run (the latest under runs/ by default)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deftrec_tui.errors import cli_errors


@cli_errors
def tui(
    run: Annotated[Path | None, typer.Argument(help="A run directory (default: the latest complete run under runs/).")] = None,
    runs: Annotated[Path, typer.Option(help="Folder searched for the latest run when RUN is omitted.")] = Path("runs"),
    compare: Annotated[Path | None, typer.Option(
        help="A second run of the same dataset: compare the two user by user (both texts, both lists, who hits "
             "alone).")] = None,
) -> None:
    """Explore a run user by user (text, trajectory, top-K with cosine and π-bonus), or two runs side by side."""
    from data.errors import RunError
    from engine.services.run import latest_run
    from engine.services.session import RunSession

    if run is None:
        run = latest_run(runs)
        if run is None:
            raise RunError(f"no run under {runs}/ yet",
                           hint="make one with: deftrec train   (or bash scripts/main.sh)")
    from deftrec_tui.app import create_app
    if compare is None:
        create_app(RunSession(run)).run()
    else:
        from engine.services.compare import open_pair
        create_app(*open_pair(run, compare)).run()
