"""`deftrec data info`: the paper's Table-1 statistics before and after k-core."""

from __future__ import annotations

from typing import Annotated

import typer

from deftrec_tui.errors import cli_errors

DATASET_HELP = "ml-100k (embedded default) | amazon:DIR | lastfm:DIR | csv:DIR | paper:DIR"


@cli_errors
def data_info(
    dataset: Annotated[str, typer.Argument(help=DATASET_HELP)] = "ml-100k",
    min_count: Annotated[int, typer.Option(help="k of the iterative k-core filter.")] = 5,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Users, items, interactions and density before and after k-core filtering."""
    import json
    from dataclasses import asdict

    from rich.console import Console
    from rich.table import Table

    from data.protocol import prepare
    from data.registry import load_dataset

    split = prepare(load_dataset(dataset), min_count=min_count)
    rows = [("raw", split.before), (f"{min_count}-core" if split.protocol.startswith("implicit") else "split",
                                    split.after)]
    if json_out:
        print(json.dumps({"dataset": split.name, "protocol": split.protocol, "notes": split.notes,
                          **{label: {**asdict(s), "density_percent": s.density_percent} for label, s in rows}},
                         indent=2))
        return
    table = Table(title=f"{split.name}")
    for column in ("", "users", "items", "interactions", "density %"):
        table.add_column(column, justify="right")
    for label, stats in rows:
        table.add_row(label, f"{stats.users:,}", f"{stats.items:,}", f"{stats.interactions:,}",
                      f"{stats.density_percent:.4f}")
    console = Console()
    console.print(table)
    console.print(f"protocol: {split.protocol}", highlight=False)
    for note in split.notes:
        console.print(f"note: {note}", highlight=False)
