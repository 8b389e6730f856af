"""`deftrec train`: write a self-contained run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deftrec_tui.commands.data_info import DATASET_HELP
from deftrec_tui.errors import cli_errors


@cli_errors
def train(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help=DATASET_HELP)] = "ml-100k",
    stage: Annotated[str, typer.Option(help="What to train: 'cf' = LightGCN, MF-BPR and popularity.")] = "cf",
    name: Annotated[str | None, typer.Option(help="Run directory name (default: dataset and time).")] = None,
    out: Annotated[Path, typer.Option(help="Folder that holds the runs.")] = Path("runs"),
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
    min_count: Annotated[int, typer.Option(help="k of the iterative k-core filter.")] = 5,
    cf_epochs: Annotated[int, typer.Option(help="Most epochs of LightGCN / MF (early stopping on validation).")] = 300,
    cf_lr: Annotated[float, typer.Option(help="Adam learning rate of LightGCN / MF.")] = 1e-2,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch (default: all cores).")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing run of the same name.")] = False,
) -> None:
    """Train on a dataset and write runs/NAME (config.json, catalog.sqlite, weights)."""
    from data.errors import DeftrecError
    from train.cf import CFTrainConfig
    from train.pipeline import TrainRequest, train_run

    if stage not in ("cf",):
        raise DeftrecError(f"unknown stage {stage!r}", hint="use --stage cf")
    request = TrainRequest(dataset=dataset, out_root=out, name=name, stage=stage, min_count=min_count, seed=seed,
                           force=force, threads=threads, cf=CFTrainConfig(max_epochs=cf_epochs, lr=cf_lr))
    path = train_run(request)
    print(path)
