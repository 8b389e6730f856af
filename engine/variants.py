"""The two versions of the model one code base trains: DeftRec (this paper) and ContRec (the authors' later
version, arXiv 2504.12007 v3–v5), as the settings that tell them apart; torch-free, so the explorer can name a
run's variant without loading the model."""

from __future__ import annotations

# engine.deftrec.DeftRecConfig's defaults of the settings below (a run from before a setting existed had these)
MODEL_DEFAULTS = {"encoder": "kway", "diffusion_loss": "bpr", "prediction": "eps", "cond_dropout": 0.0,
                  "tokenizer_pretrain_epochs": 0, "diffusion": True, "negative_loss": True, "guidance": 1.0}

VARIANTS = {
    # DeftRec as this paper describes it
    "deftrec": {"encoder": "kway", "diffusion_loss": "bpr", "prediction": "eps", "cond_dropout": 0.0,
                "tokenizer_pretrain_epochs": 0},
    # ContRec (v3–v5): σ-VAE tokenizer (pre-trained on reconstruction), dispersive loss, x0 + CFG
    "contrec": {"encoder": "sigma-vae", "diffusion_loss": "dispersive", "prediction": "x0", "cond_dropout": 0.1,
                "tokenizer_pretrain_epochs": 50},
}


def variant_of(config: dict) -> str:
    """'deftrec' or 'contrec' when the model settings are exactly that variant's, else 'custom'."""
    values = {**MODEL_DEFAULTS, **config}
    for name, settings in VARIANTS.items():
        if all(values[k] == v for k, v in settings.items()):
            return name
    return "custom"


def variant_label(config: dict) -> str:
    """One line naming the variant and its two modules, e.g. 'contrec: σ-VAE tokenizer · dispersive x0 diffusion'."""
    values = {**MODEL_DEFAULTS, **config}
    tokenizer = {"kway": "K-way tokenizer", "linear": "linear tokenizer", "sigma-vae": "σ-VAE tokenizer"}.get(
        values["encoder"], values["encoder"])
    if not values["diffusion"]:
        head = "regression head (no diffusion)"
    else:
        loss = "dispersive" if values["diffusion_loss"] == "dispersive" else ("BPR" if values["negative_loss"] else "plain")
        head = f"{loss} {values['prediction']}-diffusion"
        if values["cond_dropout"] > 0:
            head += f", CFG w={values['guidance']:g}"
    return f"{variant_of(values)}: {tokenizer} · {head}"
