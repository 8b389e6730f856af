"""`deftrec export`: top-K lists of every user to CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deftrec_tui.errors import cli_errors


@cli_errors
def export(
    run: Annotated[Path, typer.Argument(help="A run directory written by deftrec train.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV file to write (written atomically).")],
    model: Annotated[str | None, typer.Option(help="deftrec | lightgcn | mf | pop (default: deftrec when the run has it).")] = None,
    k: Annotated[int, typer.Option("--k", "-k", help="Length of each list.", min=1)] = 20,
) -> None:
    """Write every user's top-K (train and validation items masked); DeftRec rows add cosine and pi_bonus."""
    from data.errors import DeftrecError
    from engine.export import export_cf, export_deftrec_cached
    from engine.run import Run

    opened = Run.open(run)
    model = model or ("deftrec" if "deftrec" in opened.models else "lightgcn")
    if model not in opened.models:
        raise DeftrecError(f"the run has no model {model!r}", path=run,
                           hint=f"models in this run: {', '.join(opened.models)}")
    if not out.parent.exists():
        raise DeftrecError("output folder does not exist", path=out.parent)
    rows = export_deftrec_cached(opened, out, k=k) if model == "deftrec" else export_cf(opened, model, out, k=k)
    print(f"{rows} rows written to {out}")
