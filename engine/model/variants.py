"""The two versions of the model one code base trains: DeftRec (this paper) and ContRec (the authors' later
version, arXiv 2504.12007 v3–v5), as the settings that tell them apart; torch-free, so the explorer can name a
run's variant without loading the model."""

from __future__ import annotations

from engine.model.config import DeftRecConfig

# the settings that tell the variants apart, by dotted path; DeftRec is engine.model.config's defaults
VARIANT_SETTINGS = ("tokenizer.kind", "diffusion.aux_loss", "diffusion.prediction", "diffusion.cond_dropout",
                    "tokenizer.pretrain_epochs")

VARIANTS = {
    # DeftRec as this paper describes it: the config's defaults
    "deftrec": {path: DeftRecConfig().get(path) for path in VARIANT_SETTINGS},
    # ContRec (v3–v5): σ-VAE tokenizer (pre-trained on reconstruction), dispersive loss, x0 + CFG
    "contrec": {"tokenizer.kind": "sigma-vae", "diffusion.aux_loss": "dispersive", "diffusion.prediction": "x0",
                "diffusion.cond_dropout": 0.1, "tokenizer.pretrain_epochs": 50},
}


def variant_config(name: str) -> DeftRecConfig:
    """The config of a variant: the defaults with its settings."""
    return DeftRecConfig().updated(VARIANTS[name])


def _compared(path: str, value):
    # w/o BPR (aux_loss 'none') is an ablation of DeftRec's L_Neg, named as DeftRec, as --no-diffusion is
    return "bpr" if path == "diffusion.aux_loss" and value == "none" else value


def variant_of(config: DeftRecConfig) -> str:
    """'deftrec' or 'contrec' when the model settings are exactly that variant's, else 'custom'."""
    for name, settings in VARIANTS.items():
        if all(_compared(path, config.get(path)) == value for path, value in settings.items()):
            return name
    return "custom"


def variant_label(config: DeftRecConfig) -> str:
    """One line naming the variant and its two modules, e.g. 'contrec: σ-VAE tokenizer · dispersive x0 diffusion'."""
    kind = config.tokenizer.kind
    tokenizer = {"kway": "K-way tokenizer", "linear": "linear tokenizer", "sigma-vae": "σ-VAE tokenizer"}.get(kind, kind)
    diffusion = config.diffusion
    if not diffusion.enabled:
        head = "regression head (no diffusion)"
    else:
        loss = {"dispersive": "dispersive", "bpr": "BPR", "none": "plain"}[diffusion.aux_loss]
        head = f"{loss} {diffusion.prediction}-diffusion"
        if diffusion.cond_dropout > 0:
            head += f", CFG w={diffusion.guidance:g}"
    return f"{variant_of(config)}: {tokenizer} · {head}"
