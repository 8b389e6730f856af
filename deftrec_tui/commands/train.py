"""`deftrec train`: write a self-contained run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deftrec_tui.commands.data_info import DATASET_HELP
from deftrec_tui.errors import cli_errors
from engine.model.config import (  # torch-free, so --help stays light
    CONDITION_POOLS,
    DECODINGS,
    ITEM_NORM_GRID,
    ITEM_TEXTS,
    PRECISIONS,
    PROFILES,
    REFINE_INITS,
    TITLE_YEARS,
    DeftRecConfig,
)

D = DeftRecConfig()  # the options' defaults are the config's; None: the variant's
ITEM_NORM_DEFAULT = "auto"  # chosen over two seeds of ML-100K and LastFM (docs/reproduction.md); 0 is the paper


@cli_errors
def train(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help=DATASET_HELP)] = "ml-100k",
    stage: Annotated[str, typer.Option(help="'all' = CF stage then DeftRec; 'cf' = LightGCN, MF-BPR, popularity only.")] = "all",
    profile: Annotated[str, typer.Option(help="quick (2-core CPU, ≤ 20 min on ML-100K) | cpu (2-core CPU, ≤ 60 min) | paper (GPU) | tiny (tests).")] = D.profile.name,
    llm: Annotated[str, typer.Option(help="'smollm2' (packaged SmolLM2-135M-Instruct), 'tiny', or a local HF model dir.")] = D.llm.name,
    k: Annotated[int, typer.Option("--k", help="Continuous tokens per user/item (paper: 2).", min=1, max=8)] = D.tokenizer.k,
    condition: Annotated[str, typer.Option(help="Condition source: hidden (paper) | embedding (authors' code).")] = D.condition.source,
    condition_pool: Annotated[str, typer.Option(help="Where c is pooled: response (the response's positions, the paper's §2.4.2) | response+user (the mean of that and the prompt's user continuous tokens, which the response states keep little of; one more prompt pass per described batch).")] = D.condition.pool,
    no_diffusion: Annotated[bool, typer.Option("--no-diffusion", help="Ablation: regression head instead of diffusion.")] = False,
    no_mask: Annotated[bool, typer.Option("--no-mask", help="Ablation: no Bernoulli mask in the tokenizer.")] = False,
    no_cf: Annotated[bool, typer.Option("--no-cf", help="Ablation: random user/item embeddings instead of LightGCN.")] = False,
    temperature: Annotated[str, typer.Option(help="Sampling temperature τ of the reverse diffusion: 'auto' picks 1 (paper) or 0 (deterministic) on validation, or a number in [0, 1].")] = "auto",
    standardize_condition: Annotated[bool, typer.Option(help="Standardize c per dimension inside the denoiser (--no-standardize-condition: the paper's sigmoid c as is).")] = D.diffusion.cond_standardize,
    variant: Annotated[str, typer.Option(help="deftrec (this paper: K-way tokenizer, BPR ε-diffusion) | contrec (its later version: σ-VAE tokenizer, dispersive x0-diffusion with CFG); the options below override single choices.")] = D.variant,
    tokenizer: Annotated[str | None, typer.Option(help="kway | linear (ablation w/o Encoder: one linear projection) | sigma-vae (default: the variant's).")] = None,
    aux_loss: Annotated[str | None, typer.Option(help="Auxiliary denoiser loss: bpr (L_neg, Eq. 13) | dispersive (Wang & He 2025) | none (ablation w/o BPR) (default: the variant's).")] = None,
    prediction: Annotated[str | None, typer.Option(help="Denoiser target: eps | x0 (default: the variant's).")] = None,
    guidance: Annotated[str, typer.Option(help="Classifier-free guidance weight w: 'auto' picks 1 or 2 on validation when the condition is dropped in training, else a number >= 0 (1 = no guidance).")] = "auto",
    cond_dropout: Annotated[float | None, typer.Option(help="Training probability of the null condition, for guidance (default: the variant's: 0 or 0.1).", min=0.0, max=0.9)] = None,
    sigma: Annotated[float, typer.Option(help="σ-VAE: C_σ of σ ~ |N(0, C_σ²)| in units of the token RMS (0: a plain autoencoder).", min=0.0)] = D.tokenizer.sigma_scale,
    tokenizer_pretrain: Annotated[int | None, typer.Option(help="σ-VAE: epochs of reconstruction pre-training before the joint stage (default: the variant's: 50).", min=0)] = None,
    dispersive_weight: Annotated[float, typer.Option(help="λ of the dispersive loss.", min=0.0)] = D.training.dispersive_weight,
    dispersive_tau: Annotated[float, typer.Option(help="τ of the dispersive loss, against the mean squared distance per dimension.", min=1e-6)] = D.diffusion.dispersive_tau,
    response: Annotated[str, typer.Option(help="What the training response names: history (the leading categories of the prompt's history, as the LLM can read them) | target (the held-out target's category, the paper's Table 6 reading; it leaks the target into c in training).")] = D.prompt.response,
    history: Annotated[str, typer.Option(help="Prompt history: recent (the latest train items in time order; joint training predicts the items after a cut point; chosen on validation) | random (the paper: a shuffled sample of the train items).")] = D.prompt.history,
    max_history: Annotated[int | None, typer.Option(help="History items a prompt shows, the latest (history recent) or a sample (random); default the profile's (8 in quick and cpu, 20 in paper).", min=1)] = None,
    refine_patience: Annotated[int | None, typer.Option(help="Refinement checks (every 3 epochs) without a better validation HR@10 before it stops; 0: run every epoch and keep the best check; default the profile's (4 in quick, 0 in cpu).", min=0)] = None,
    refine_epochs: Annotated[int | None, typer.Option(help="The refinement's most epochs (each a pass over its pairs, in batches of 1,024; a check every 3 epochs); default the profile's (90 in quick, with early stop; 60 in cpu).", min=0)] = None,
    refine_seconds: Annotated[float | None, typer.Option(help="The refinement stops at its first check past this many seconds (the best check is kept); 0: no bound; default the profile's (360 in quick, so a seed whose validation keeps rising keeps the quick run within 20 minutes; none in cpu and paper).", min=0.0)] = None,
    refine_targets: Annotated[int, typer.Option(help="History recent: the refinement (phase 3) targets each user's this many latest train items.", min=1)] = D.training.refine_targets,
    refine_init: Annotated[str, typer.Option(help="Where the refinement (phase 3) starts: joint (the denoiser as joint training left it, trained on teacher-forced conditions) | fresh (a newly initialized denoiser, trained on the generated texts' conditions alone; the joint one stays a candidate as the epoch-0 check).")] = D.training.refine_init,
    align_weight: Annotated[float, typer.Option(help="Weight of L_align (not the paper): the error of a ridge probe of the condition c (refitted every joint step on the latest 256 users seen) predicting the user's LightGCN vector, so c carries the user the prompt's user tokens show (1, the default: R² of c to the user vector 0.63 / 0.58 against 0.23 / 0.21 in two ML-100K seeds, validation level by the paired test); 0: Eq. 15 as written, the paper.", min=0.0)] = D.training.align_weight,
    title_year: Annotated[str, typer.Option(help="Item titles in prompts: drop (without a trailing '(1995)': MovieLens' year is six of SmolLM2's tokens, over a third of a prompt; level on validation and a quarter faster to train, chosen) | keep (as the dataset has them).")] = D.prompt.title_year,
    item_text: Annotated[str, typer.Option(help="A history item's words in prompts: title-category (the title followed by its category, 'Heat (Action|Crime|Thriller)', so the LLM can read the categories a history response names; chosen on validation, and the text then differs from user to user) | title (the paper).")] = D.prompt.item_text,
    neg_norm: Annotated[str, typer.Option(help="‖·‖² in L_neg (Eq. 13): sum over the d dims (as written) | mean (the logit d times smaller).")] = D.diffusion.neg_norm,
    distinct_positives: Annotated[bool, typer.Option(help="Each noise draw of a joint step gets its own train item as positive (--no-distinct-positives: one positive repeated).")] = D.training.distinct_positives,
    pi_match: Annotated[str, typer.Option(help="When π applies: exact (the whole category string, chosen on validation) | overlap (the named category and the item's share a '|'-separated part, e.g. a genre) | all (every named part is one of the item's).")] = D.retrieval.pi_match,
    item_norm: Annotated[str, typer.Option(help="Item weight in retrieval, s = cos·‖q_j‖^α·(1 + π): auto (α among 0, 0.25, 0.5, 0.75, 1 with the best validation HR@10, chosen after the refinement; it chose α > 0 in two seeds of ML-100K and LastFM) | 0 (Eq. 14's cosine, the paper) | a number α >= 0 (α = 1: the dot product's item norm, which in LightGCN grows with popularity).")] = ITEM_NORM_DEFAULT,
    decoding: Annotated[str, typer.Option(help="How the LLM writes the preference text: template (greedy, the templates' fixed words fed in one pass; equal to full greedy decoding wherever it follows a template) | draft (template, with a guessed response checked in the prompt's own pass and kept up to its first wrong token: the same text, fewer passes) | full (greedy, token by token) | constrained (template, with the category slot limited to the dataset's category names).")] = D.llm.decoding,
    inference_precision: Annotated[str, typer.Option(help="The LLM when it writes preference texts: auto (mixed on a CPU where bf16 autocast measures faster than fp32, else float32; the run records which) | mixed (the prompt's pass under bf16 autocast, the response's passes in float32, so the fast decodings still equal full decoding) | float32 | bfloat16 (autocast over the fp32 weights throughout, on GPUs and on CPUs with native bf16; elsewhere float32).")] = D.llm.inference_precision,
    qlora: Annotated[bool, typer.Option("--qlora", help="Load the LLM in 4-bit nf4 (needs CUDA + bitsandbytes).")] = False,
    name: Annotated[str | None, typer.Option(help="Run directory name (default: dataset and time).")] = None,
    out: Annotated[Path, typer.Option(help="Folder that holds the runs.")] = Path("runs"),
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
    min_count: Annotated[int, typer.Option(help="k of the iterative k-core filter.")] = 5,
    cf_epochs: Annotated[int, typer.Option(help="Most epochs of LightGCN / MF (early stopping on validation).")] = 300,
    cf_lr: Annotated[float, typer.Option(help="Adam learning rate of LightGCN / MF.")] = 1e-2,
    cf_batch_size: Annotated[int, typer.Option(help="BPR pairs per step of LightGCN / MF; LightGCN propagates over the whole graph every step, so larger batches make its epochs cheaper on large datasets.", min=1)] = 4096,
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
    if profile not in PROFILES:
        raise DeftrecError(f"unknown profile {profile!r}", hint=f"use one of: {', '.join(PROFILES)}")
    if condition not in ("hidden", "embedding"):
        raise DeftrecError(f"unknown condition {condition!r}", hint="use hidden or embedding")
    for flag, value, allowed in (("--response", response, ("history", "target")), ("--history", history, ("random", "recent")),
                                 ("--title-year", title_year, TITLE_YEARS), ("--item-text", item_text, ITEM_TEXTS),
                                 ("--condition-pool", condition_pool, CONDITION_POOLS), ("--refine-init", refine_init, REFINE_INITS),
                                 ("--neg-norm", neg_norm, ("sum", "mean")), ("--pi-match", pi_match, ("exact", "overlap", "all")),
                                 ("--decoding", decoding, DECODINGS),
                                 ("--inference-precision", inference_precision, PRECISIONS)):
        if value not in allowed:
            raise DeftrecError(f"unknown {flag} {value!r}", hint=f"use one of: {', '.join(allowed)}")
    if temperature == "auto":
        temperatures = [1.0, 0.0]
    else:
        try:
            temperatures = [float(temperature)]
        except ValueError:
            temperatures = [-1.0]
        if not 0.0 <= temperatures[0] <= 1.0:
            raise DeftrecError(f"bad --temperature {temperature!r}", hint="use auto or a number in [0, 1]")
    item_norms = item_norm_choices(item_norm)
    from engine.model.variants import VARIANTS, variant_config  # torch-free, so --help stays light
    if variant not in VARIANTS:
        raise DeftrecError(f"unknown variant {variant!r}", hint=f"use one of: {', '.join(VARIANTS)}")
    base = variant_config(variant)
    tokenizer = tokenizer or base.tokenizer.kind
    aux_loss = aux_loss or base.diffusion.aux_loss
    prediction = prediction or base.diffusion.prediction
    for flag, value, allowed in (("--tokenizer", tokenizer, ("kway", "linear", "sigma-vae")),
                                 ("--aux-loss", aux_loss, ("none", "bpr", "dispersive")),
                                 ("--prediction", prediction, ("eps", "x0"))):
        if value not in allowed:
            raise DeftrecError(f"unknown {flag} {value!r}", hint=f"use one of: {', '.join(allowed)}")
    cond_dropout = base.diffusion.cond_dropout if cond_dropout is None else cond_dropout
    if guidance == "auto":
        guidances = [1.0, 2.0] if cond_dropout > 0 else [1.0]
    else:
        try:
            guidances = [float(guidance)]
        except ValueError:
            guidances = [-1.0]
        if guidances[0] < 0:
            raise DeftrecError(f"bad --guidance {guidance!r}", hint="use auto or a number >= 0")
        if guidances[0] != 1.0 and cond_dropout == 0:
            raise DeftrecError("--guidance needs a denoiser trained with condition dropout",
                               hint="add --cond-dropout 0.1 (or --variant contrec)")
    if qlora:
        import torch
        if not torch.cuda.is_available():
            raise DeftrecError("--qlora needs a CUDA GPU and bitsandbytes; this machine has no CUDA device",
                               hint="drop --qlora to train LoRA on the full-precision model")
    if stage == "all" and llm not in ("smollm2", "tiny"):
        from engine.model.llm.loading import resolve_model_dir
        resolve_model_dir(llm)  # a bad --llm fails now, before any training
    pretrain = base.tokenizer.pretrain_epochs if tokenizer_pretrain is None else tokenizer_pretrain
    config = base.updated({
        "llm.name": llm, "llm.decoding": decoding, "llm.inference_precision": inference_precision,
        "prompt.history": history, "prompt.response": response, "prompt.title_year": title_year,
        "prompt.item_text": item_text,
        "tokenizer.k": k, "tokenizer.kind": tokenizer, "tokenizer.mask_ratio": 0.0 if no_mask else base.tokenizer.mask_ratio,
        "tokenizer.sigma_scale": sigma, "tokenizer.pretrain_epochs": pretrain if tokenizer == "sigma-vae" else 0,
        "condition.source": condition, "condition.pool": condition_pool,
        "diffusion.enabled": not no_diffusion, "diffusion.cond_standardize": standardize_condition,
        "diffusion.prediction": prediction, "diffusion.cond_dropout": cond_dropout, "diffusion.aux_loss": aux_loss,
        "diffusion.neg_norm": neg_norm, "diffusion.dispersive_tau": dispersive_tau,
        "diffusion.sampling_temperature": temperatures[0], "diffusion.guidance": guidances[0],
        "retrieval.pi_match": pi_match, "retrieval.item_norm": item_norms[0] if len(item_norms) == 1 else 0.0,
        "training.cf": "random" if no_cf else base.training.cf, "training.dispersive_weight": dispersive_weight,
        "training.distinct_positives": distinct_positives, "training.refine_targets": refine_targets,
        "training.refine_init": refine_init, "training.align_weight": align_weight})
    request = TrainRequest(dataset=dataset, out_root=out, name=name, stage=stage, min_count=min_count, seed=seed,
                           force=force, threads=threads, cf=CFTrainConfig(max_epochs=cf_epochs, lr=cf_lr, batch_size=cf_batch_size),
                           profile=profile, max_history=max_history, refine_patience=refine_patience,
                           refine_epochs=refine_epochs, refine_seconds=refine_seconds, deftrec=config, temperatures=tuple(temperatures),
                           guidances=tuple(guidances), qlora=qlora, resume=resume,
                           item_norms=item_norms if len(item_norms) > 1 else ())
    if max_memory:
        from engine.services.memory import limit_memory
        limit_memory(max_memory)
    import signal
    import sys
    # SIGTERM (a scheduler's kill) unwinds like Ctrl-C: the partial run is removed, finished phases stay for --resume
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    path = train_run(request)
    if path is not None:  # None: a helper process of `accelerate launch`, which writes nothing
        print(path)



def item_norm_choices(value: str) -> tuple[float, ...]:
    """--item-norm as the α to choose among on validation: 'auto' the grid, a number itself; bad values fail."""
    from data.errors import DeftrecError
    if value == "auto":
        return ITEM_NORM_GRID
    try:
        alpha = float(value)
    except ValueError:
        alpha = float("nan")
    if not (0.0 <= alpha < float("inf")):
        raise DeftrecError(f"bad --item-norm {value!r}", hint="use auto or a number >= 0 (0: Eq. 14, the paper)")
    return (alpha,)
