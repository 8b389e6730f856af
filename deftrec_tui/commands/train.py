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
    stage: Annotated[str, typer.Option(help="'all' = CF stage then DeftRec; 'cf' = LightGCN, MF-BPR, popularity only.")] = "all",
    profile: Annotated[str, typer.Option(help="quick (2-core CPU, ~20 min on ML-100K) | paper (GPU) | tiny (tests).")] = "quick",
    llm: Annotated[str, typer.Option(help="'smollm2' (packaged SmolLM2-135M-Instruct), 'tiny', or a local HF model dir.")] = "smollm2",
    k: Annotated[int, typer.Option("--k", help="Continuous tokens per user/item (paper: 2).", min=1, max=8)] = 2,
    condition: Annotated[str, typer.Option(help="Condition source: hidden (paper) | embedding (authors' code).")] = "hidden",
    no_diffusion: Annotated[bool, typer.Option("--no-diffusion", help="Ablation: regression head instead of diffusion.")] = False,
    no_bpr: Annotated[bool, typer.Option("--no-bpr", help="Ablation: drop the negative loss L_neg.")] = False,
    no_encoder: Annotated[bool, typer.Option("--no-encoder", help="Ablation: one linear projection as tokenizer.")] = False,
    no_mask: Annotated[bool, typer.Option("--no-mask", help="Ablation: no Bernoulli mask in the tokenizer.")] = False,
    no_cf: Annotated[bool, typer.Option("--no-cf", help="Ablation: random user/item embeddings instead of LightGCN.")] = False,
    temperature: Annotated[str, typer.Option(help="Sampling temperature τ of the reverse diffusion: 'auto' picks 1 (paper) or 0 (deterministic) on validation, or a number in [0, 1].")] = "auto",
    standardize_condition: Annotated[bool, typer.Option(help="Standardize c per dimension inside the denoiser (--no-standardize-condition: the paper's sigmoid c as is).")] = True,
    qlora: Annotated[bool, typer.Option("--qlora", help="Load the LLM in 4-bit nf4 (needs CUDA + bitsandbytes).")] = False,
    name: Annotated[str | None, typer.Option(help="Run directory name (default: dataset and time).")] = None,
    out: Annotated[Path, typer.Option(help="Folder that holds the runs.")] = Path("runs"),
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
    min_count: Annotated[int, typer.Option(help="k of the iterative k-core filter.")] = 5,
    cf_epochs: Annotated[int, typer.Option(help="Most epochs of LightGCN / MF (early stopping on validation).")] = 300,
    cf_lr: Annotated[float, typer.Option(help="Adam learning rate of LightGCN / MF.")] = 1e-2,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch (default: all cores).")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing run of the same name.")] = False,
    max_memory: Annotated[float | None, typer.Option(help="Cap this process's memory at this many GB (CPU runs): batches shrink instead of the machine running out.", min=1.0)] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted training of --name from its last checkpoint.")] = False,
) -> None:
    """Train on a dataset and write runs/NAME (config.json, catalog.sqlite, weights)."""
    from data.errors import DeftrecError
    from train.cf import CFTrainConfig
    from train.pipeline import TrainRequest, train_run

    if stage not in ("cf", "all"):
        raise DeftrecError(f"unknown stage {stage!r}", hint="use --stage all or --stage cf")
    PROFILES = ("quick", "paper", "tiny")  # train.deftrec.PROFILES, named here so --help stays torch-free
    if profile not in PROFILES:
        raise DeftrecError(f"unknown profile {profile!r}", hint=f"use one of: {', '.join(PROFILES)}")
    if condition not in ("hidden", "embedding"):
        raise DeftrecError(f"unknown condition {condition!r}", hint="use hidden or embedding")
    if temperature == "auto":
        temperatures = [1.0, 0.0]
    else:
        try:
            temperatures = [float(temperature)]
        except ValueError:
            temperatures = [-1.0]
        if not 0.0 <= temperatures[0] <= 1.0:
            raise DeftrecError(f"bad --temperature {temperature!r}", hint="use auto or a number in [0, 1]")
    if qlora:
        import torch
        if not torch.cuda.is_available():
            raise DeftrecError("--qlora needs a CUDA GPU and bitsandbytes; this machine has no CUDA device",
                               hint="drop --qlora to train LoRA on the full-precision model")
    if stage == "all" and llm not in ("smollm2", "tiny"):
        from engine.llm import resolve_model_dir
        resolve_model_dir(llm)  # a bad --llm fails now, before any training
    overrides = {"llm": llm, "k": k, "condition_source": condition, "diffusion": not no_diffusion,
                 "negative_loss": not no_bpr, "encoder": "linear" if no_encoder else "kway",
                 "mask_ratio": 0.0 if no_mask else 0.2, "cf": "random" if no_cf else "lightgcn",
                 "condition_standardize": standardize_condition, "sampling_temperature": temperatures[0],
                 "temperatures": temperatures}
    request = TrainRequest(dataset=dataset, out_root=out, name=name, stage=stage, min_count=min_count, seed=seed,
                           force=force, threads=threads, cf=CFTrainConfig(max_epochs=cf_epochs, lr=cf_lr),
                           profile=profile, deftrec=overrides, qlora=qlora, resume=resume)
    if max_memory:
        from engine.memory import limit_memory
        limit_memory(max_memory)
    import signal
    import sys
    # SIGTERM (a scheduler's kill) unwinds like Ctrl-C: the partial run is removed, finished phases stay for --resume
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    path = train_run(request)
    if path is not None:  # None: a helper process of `accelerate launch`, which writes nothing
        print(path)
