"""A DeftRec run's settings as one nested, frozen config (docs/architecture.md §3): every argument the model's parts
are built with, the training objective and profile, and the variant; written whole into config.json and read back
strictly, with the run format's version and the migration of runs written before it existed.

Torch-free, so `deftrec --help` and the explorer can read a run's settings without loading the model. The
sections are the objects the model's parts take (engine/model/tokenizer.py takes `TokenizerConfig`,
engine/model/diffusion.py `DiffusionConfig`, engine/model/deftrec.py's condition head `ConditionConfig`), so each
setting has one name from the command line to the file. Defaults are defined here once: they are what `deftrec
train` uses; `engine/model/variants.py` names the settings that make ContRec, and the command line's options default
to these values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from data.errors import DeftrecError, RunError

FORMAT_VERSION = 10  # config.json's `format_version`; formats 1 (flat `format: 1`), 2 (no prompt.title_year), 3 (no
#                      training.refine_targets), 4 (no prompt.item_text), 5 (no condition.pool), 6 (no
#                      retrieval.item_norm), 7 (no training.refine_init), 8 (no training.align_weight) and 9 (no
#                      profile.refine_seconds) migrate on load
TOKENIZER_KINDS = ("kway", "linear", "sigma-vae")
REFINE_INITS = ("joint", "fresh")
PREDICTIONS = ("eps", "x0")
AUX_LOSSES = ("none", "bpr", "dispersive")
DECODINGS = ("template", "draft", "full", "constrained")
PRECISIONS = ("auto", "float32", "bfloat16", "mixed")  # the LLM at inference (LLMConfig.inference_precision)
TITLE_YEARS = ("keep", "drop")
ITEM_TEXTS = ("title", "title-category")
CONDITION_POOLS = ("response", "response+user")
ITEM_NORM_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)  # the α `deftrec train --item-norm auto` chooses among on validation


@dataclass(frozen=True)
class LLMConfig:
    """The language model, its LoRA adapter and how it writes the preference text at inference."""

    name: str = "smollm2"  # 'smollm2' (the packaged GGUF), 'tiny' (tests) or a local HF directory
    fingerprint: str = ""  # llm_fingerprint (engine/model/llm/loading.py) of the run's LLM; checked at load
    hidden: int = 576  # D, its hidden size (set from the loaded LLM at training)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    max_new_tokens: int = 24
    decoding: str = "draft"  # 'full' greedy | 'template' (fixed words in one pass; equal where greedy follows the
    #                             template) | 'draft' (template, with a guessed response checked in the prompt's pass;
    #                             same result) | 'constrained' (template, the slot limited to category names)
    inference_precision: str = "auto"  # 'auto' (mixed where bf16 pays on the training's CPU, else float32; a
    #                                    trained run records which) | 'float32' | 'bfloat16' (autocast over fp32
    #                                    weights; on a CPU only where it has native bf16, else float32) | 'mixed' (the
    #                                    prompt's pass in bf16, the response's passes in float32)

    def __post_init__(self) -> None:
        if self.decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {DECODINGS}, got {self.decoding!r}")
        if self.inference_precision not in PRECISIONS:
            raise ValueError(f"inference_precision must be one of {PRECISIONS}, got {self.inference_precision!r}")


@dataclass(frozen=True)
class PromptConfig:
    """What the prompt holds and what the training response names."""

    history: str = "recent"  # 'recent' (the latest train items, time order) | 'random' (the paper: shuffled sample)
    max_history: int = 20  # items in a prompt (set from the profile at training)
    max_length: int = 320  # tokens of a prompt (set from the profile at training)
    max_title_chars: int = 40  # titles in prompts are cut to this many characters
    title_year: str = "drop"  # 'drop' a trailing '(1995)' (6 SmolLM2 tokens; chosen on validation) | 'keep' it
    item_text: str = "title-category"  # a history item's words: 'title-category' ('Heat (Action|Crime|Thriller)';
    #                                    chosen on validation, the text then names the history) | 'title' (the paper)
    response: str = "history"  # training response names: 'history' (the prompt history's leading categories) |
    #                            'target' (the held-out target item's category: leaks it into c in training)

    def __post_init__(self) -> None:
        for name, value, allowed in (("history", self.history, ("recent", "random")),
                                     ("response", self.response, ("history", "target")),
                                     ("title_year", self.title_year, TITLE_YEARS),
                                     ("item_text", self.item_text, ITEM_TEXTS)):
            if value not in allowed:
                raise ValueError(f"prompt.{name} must be one of {', '.join(allowed)}, got {value!r}")


@dataclass(frozen=True)
class TokenizerConfig:
    """Settings of one encoder (in_dim = d, out_dim = the LLM hidden size D); kind="linear" is "w/o Encoder"."""

    out_dim: int = 576  # D: equals llm.hidden
    in_dim: int = 64  # d: equals diffusion.item_dim
    k: int = 2  # continuous tokens per user/item
    n_blocks: int = 2  # residual blocks of each sub-encoder
    dropout: float = 0.1
    mask_ratio: float = 0.2  # ϱ of the Bernoulli mask (Eq. 2); 0: w/o mask
    kind: str = "kway"  # 'kway' (§2.3) | 'linear' (w/o Encoder) | 'sigma-vae' (ContRec)
    out_scale: float = 1.0  # RMS of the LLM's word embeddings; tokens are scaled to it (set at training)
    out_norm: bool = True  # RMS-normalize each token before scaling it to out_scale
    sigma_scale: float = 0.5  # C_σ of the σ-VAE: σ ~ |N(0, C_σ²)| per example, in units of out_scale (0: no noise)
    pretrain_epochs: int = 0  # σ-VAE: epochs of reconstruction-only training before the joint stage

    def __post_init__(self) -> None:
        if self.sigma_scale < 0:
            raise ValueError(f"sigma_scale must be >= 0, got {self.sigma_scale}")
        if self.kind not in TOKENIZER_KINDS:
            raise ValueError(f"kind must be one of {TOKENIZER_KINDS}, got {self.kind!r}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must lie in [0, 1), got {self.mask_ratio}")
        if self.k < 1 or self.n_blocks < 0:
            raise ValueError("need k >= 1 and n_blocks >= 0")


@dataclass(frozen=True)
class ConditionConfig:
    """How c is made: norm in sigmoid|layernorm|none, source in hidden (last hidden states)|embedding (inputs), pool
    over the response (§2.4.2) or the mean of that and the prompt's user continuous tokens (response+user)."""

    norm: str = "sigmoid"
    source: str = "hidden"  # 'hidden' (paper) | 'embedding' (authors' code, ablation)
    pool: str = "response"  # 'response' (paper) | 'response+user' (also the K user-token positions of the prompt)

    def __post_init__(self) -> None:
        if self.norm not in ("sigmoid", "layernorm", "none"):
            raise DeftrecError(f"unknown condition norm {self.norm!r}", hint="use sigmoid, layernorm or none")
        if self.source not in ("hidden", "embedding"):
            raise DeftrecError(f"unknown condition source {self.source!r}", hint="use hidden or embedding")
        if self.pool not in CONDITION_POOLS:
            raise DeftrecError(f"unknown condition pool {self.pool!r}", hint=f"use one of: {', '.join(CONDITION_POOLS)}")


@dataclass(frozen=True)
class DiffusionConfig:
    """The schedule, the denoiser (d = item_dim, D = cond_dim), its auxiliary loss and the sampler: every argument
    of DDPMSchedule and Denoiser."""

    cond_dim: int = 576  # D: equals llm.hidden
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4  # linear β schedule from beta_start to beta_end
    beta_end: float = 0.02
    num_inference_steps: int = 100  # respaced reverse steps
    item_dim: int = 64  # d: equals tokenizer.in_dim
    hidden_dim: int = 512
    time_embed_dim: int = 64
    dropout: float = 0.1
    n_layers: int = 3
    cond_standardize: bool = True  # batch-standardize c inside the denoiser (running statistics at inference)
    prediction: str = "eps"  # what the denoiser predicts: 'eps' (the paper's ε_θ) | 'x0' (the clean vector)
    cond_dropout: float = 0.0  # training probability of replacing c by a learned null condition (for CFG)
    enabled: bool = True  # False: the regression head of the 'w/o Diffusion' ablation instead of the denoiser
    target_scale: float = 1.0  # item embeddings are divided by it so diffusion targets have unit RMS (set at training)
    aux_loss: str = "bpr"  # auxiliary loss: 'bpr' (L_Neg, Eq. 13) | 'dispersive' (ContRec) | 'none' (w/o BPR)
    neg_norm: str = "sum"  # ‖·‖² in L_Neg: 'sum' over d (Eq. 13 as written) | 'mean'
    dispersive_tau: float = 0.5  # τ of L_disp
    sampling_temperature: float = 1.0  # τ of the reverse sampler: 1 = paper (x_T ~ N(0, I)), 0 = deterministic
    guidance: float = 1.0  # CFG weight w at sampling (1: the conditional model alone)

    def __post_init__(self) -> None:
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise ValueError(f"cond_dropout must lie in [0, 1), got {self.cond_dropout}")
        if not 1 <= self.num_inference_steps <= self.num_train_timesteps:
            raise ValueError("num_inference_steps must lie in [1, num_train_timesteps]")
        if not 0.0 < self.beta_start <= self.beta_end < 1.0:
            raise ValueError("need 0 < beta_start <= beta_end < 1")
        if self.n_layers < 1 or self.time_embed_dim % 2:
            raise ValueError("need n_layers >= 1 and an even time_embed_dim")
        if self.aux_loss not in AUX_LOSSES:
            raise ValueError(f"aux_loss must be one of {AUX_LOSSES}, got {self.aux_loss!r}")


@dataclass(frozen=True)
class RetrievalConfig:
    """The hybrid score s = cos·(1 + π) of Eq. 14 (s = cos·‖q_j‖^α·(1 + π) with the item_norm option α > 0)."""

    pi: float = 0.1
    pi_match: str = "exact"  # 'exact' | 'overlap' (the '|'-separated parts intersect) | 'all' (named ⊆ item's)
    item_norm: float = 0.0  # α: 0 is Eq. 14 (the paper); > 0 weighs each item by its CF vector's norm to the α

    def __post_init__(self) -> None:
        if not (self.item_norm >= 0 and self.item_norm < float("inf")):
            raise ValueError(f"item_norm must be a finite number >= 0, got {self.item_norm!r}")


@dataclass(frozen=True)
class TrainingConfig:
    """The joint objective (Eq. 15) and what it trains on."""

    cf: str = "lightgcn"  # the user/item vectors q: 'lightgcn' | 'random' (w/o CF)
    gamma1: float = 0.5  # weight of L_LLM
    gamma2: float = 0.1  # weight of L_Neg (aux_loss 'bpr')
    gamma3: float = 0.5  # σ-VAE: weight of the reconstruction loss
    dispersive_weight: float = 0.5  # λ of L_disp (aux_loss 'dispersive'; Wang & He 2025's default)
    n_negatives: int = 10
    distinct_positives: bool = True  # each noise draw of a joint step gets its own positive (and negatives)
    refine_targets: int = 3  # history 'recent': the refinement targets each user's this many latest train items (3:
    #                          chosen on validation over two seeds, docs/quality.md §4; 5 before config format 4)
    refine_init: str = "joint"  # the refinement starts from the jointly trained denoiser ('joint') or from a freshly
    #                             initialized one ('fresh'); 'joint' before config format 8
    align_weight: float = 1.0  # weight of L_align: a ridge probe of c, refitted each joint step on the latest pairs,
    #                            predicts the user's LightGCN vector (not the paper: 0 is Eq. 15, and 0 before format 9).
    #                            1: c carries R² 0.63 / 0.58 of the user vector (0.23 / 0.21 without), validation level
    #                            by the paired test in two seeds of ML-100K (docs/quality.md §4)

    def __post_init__(self) -> None:
        if self.align_weight < 0:
            raise ValueError(f"align_weight must be >= 0, got {self.align_weight}")
        if self.refine_targets < 1:
            raise ValueError(f"refine_targets must be >= 1, got {self.refine_targets}")
        if self.refine_init not in REFINE_INITS:
            raise ValueError(f"refine_init must be one of {', '.join(REFINE_INITS)}, got {self.refine_init!r}")


@dataclass(frozen=True)
class Profile:
    """How long and how wide the joint training runs."""

    name: str
    steps: int  # optimizer steps
    batch_size: int  # users per micro-batch
    grad_accum: int  # micro-batches per optimizer step
    lr: float
    weight_decay: float
    max_history: int
    max_length: int
    refine_epochs: int
    diffusion_repeats: int  # noise draws per LLM condition in a joint step (cheap extra diffusion signal)
    describe_batch: int
    checkpoint_every: int  # optimizer steps between resume checkpoints
    val_every: int  # optimizer steps between validation HR@10 checks (0: only the final model)
    val_users: int  # users in the validation subset checked during joint training
    val_patience: int  # checks without improvement before stopping early
    refine_patience: int = 4  # refinement checks (every 3 epochs) without improvement before stopping
    cpu_bf16: bool = False  # bf16 autocast for joint training on CPUs with native bf16 (GPUs always use it)
    refine_seconds: float = 0.0  # the refinement stops at its first check past this many seconds (0: no bound)


PROFILES = {
    # refinement: up to 90 epochs with patience 4 (30 until 2026-12-05; a small catalog's epoch is few steps:
    # Software's 6,620 train pairs make 7, and its checks still rose at epoch 30; docs/reproduction.md)
    # and at most 6 minutes of it, so that a seed whose validation keeps rising cannot take `scripts/main.sh` past 20
    # minutes (ML-100K's seed 0 at L_align weight 3 refined for 843 s; the default's seed 0 stops in 144-192 s)
    "quick": Profile("quick", steps=60, batch_size=8, grad_accum=1, lr=1e-3, weight_decay=1e-5, max_history=8,
                     max_length=160, refine_epochs=90, diffusion_repeats=8, describe_batch=48,
                     checkpoint_every=20, val_every=0, val_users=0, val_patience=0, cpu_bf16=True,
                     refine_seconds=360.0),
    # ≤ 60 min for the whole ML-100K run on the 2-core CPU: 6.7× the quick profile's joint steps (3,200 samples,
    # each user about 3.4 times), the same prompts, a longer refinement run to its end with the best check kept (its
    # checks rise slowly and swing: patience 4 stopped at epoch 18 of a refit whose best was 42, docs/quality.md §4)
    "cpu": Profile("cpu", steps=400, batch_size=8, grad_accum=1, lr=1e-3, weight_decay=1e-5, max_history=8,
                   max_length=160, refine_epochs=60, diffusion_repeats=8, describe_batch=48,
                   checkpoint_every=40, val_every=0, val_users=0, val_patience=0, refine_patience=0, cpu_bf16=True),
    "paper": Profile("paper", steps=20_000, batch_size=12, grad_accum=1, lr=1e-3, weight_decay=1e-5,
                     max_history=20, max_length=1024, refine_epochs=200, diffusion_repeats=4, describe_batch=64,
                     checkpoint_every=500, val_every=1000, val_users=1024, val_patience=5),
    "tiny": Profile("tiny", steps=2, batch_size=4, grad_accum=1, lr=1e-3, weight_decay=1e-5, max_history=5,
                    max_length=128, refine_epochs=2, diffusion_repeats=2, describe_batch=16,
                    checkpoint_every=1, val_every=0, val_users=0, val_patience=0),
}


@dataclass(frozen=True)
class DeftRecConfig:
    """Every setting of a DeftRec run; stored whole in config.json and the only source a run is rebuilt from."""

    variant: str = "deftrec"  # engine.model.variants.variant_of of the settings below, recorded at training
    llm: LLMConfig = field(default_factory=LLMConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    condition: ConditionConfig = field(default_factory=ConditionConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    profile: Profile = field(default_factory=lambda: PROFILES["quick"])

    def __post_init__(self) -> None:
        if not self.llm.hidden == self.tokenizer.out_dim == self.diffusion.cond_dim:
            raise ValueError(f"llm.hidden ({self.llm.hidden}), tokenizer.out_dim ({self.tokenizer.out_dim}) and "
                             f"diffusion.cond_dim ({self.diffusion.cond_dim}) must be equal")
        if self.tokenizer.in_dim != self.diffusion.item_dim:
            raise ValueError(f"tokenizer.in_dim ({self.tokenizer.in_dim}) and diffusion.item_dim "
                             f"({self.diffusion.item_dim}) must be equal")

    def aux_weight(self) -> float:
        """Weight of the auxiliary diffusion loss: γ2 for L_Neg, λ for L_disp."""
        return self.training.dispersive_weight if self.diffusion.aux_loss == "dispersive" else self.training.gamma2

    def with_llm_hidden(self, hidden: int) -> DeftRecConfig:
        """The config for an LLM of hidden size D (every section that holds D)."""
        return self.updated({"llm.hidden": hidden, "tokenizer.out_dim": hidden, "diffusion.cond_dim": hidden})

    def updated(self, changes: dict[str, Any]) -> DeftRecConfig:
        """A copy with settings replaced by dotted path, e.g. {"diffusion.aux_loss": "none", "training.cf": "random"}."""
        sections: dict[str, dict[str, Any]] = {}
        top: dict[str, Any] = {}
        for path, value in changes.items():
            section, _, name = path.partition(".")
            if section not in {f.name for f in fields(self)}:
                raise KeyError(f"no setting {path!r}")
            if name:
                if name not in {f.name for f in fields(getattr(self, section))}:
                    raise KeyError(f"no setting {path!r}")
                sections.setdefault(section, {})[name] = value
            else:
                top[section] = value
        for section, values in sections.items():
            top[section] = replace(top.get(section, getattr(self, section)), **values)
        return replace(self, **top)

    def get(self, path: str) -> Any:
        """The setting at a dotted path, e.g. "tokenizer.kind"."""
        value: Any = self
        for part in path.split("."):
            value = getattr(value, part)
        return value

    def to_dict(self) -> dict:
        """Every setting, nested as in config.json."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict, *, path: str | Path | None = None, where: str = "") -> DeftRecConfig:
        """The config of a stored dict; an unknown or missing key, or a value the config refuses, is a one-line
        RunError naming the file (`path`) and the key (prefixed by `where`, e.g. 'deftrec.config')."""
        return _strict(cls, values, path, where)


def _strict(kind: type, values: Any, path: str | Path | None, where: str):
    """A dataclass of `kind` from a dict with exactly its fields (nested dataclasses recursively)."""
    if not isinstance(values, dict):
        raise RunError(f"setting {where or 'config'!r} is not an object", path=path)
    names = {f.name: f for f in fields(kind)}
    prefix = f"{where}." if where else ""
    for key in values:
        if key not in names:
            raise RunError(f"unknown setting '{prefix}{key}' (format {FORMAT_VERSION})", path=path,
                           hint="a run written by a newer deftrec, or an edited config.json")
    kwargs = {}
    for name, f in names.items():
        if name not in values:
            raise RunError(f"missing setting '{prefix}{name}' (format {FORMAT_VERSION})", path=path,
                           hint="an edited or truncated config.json")
        kind_of = _dataclass_type(f)
        kwargs[name] = _strict(kind_of, values[name], path, prefix + name) if kind_of else values[name]
    try:
        return kind(**kwargs)
    except (ValueError, TypeError, DeftrecError) as exc:
        problem = exc.problem if isinstance(exc, DeftrecError) else str(exc)
        raise RunError(f"bad setting in '{where or 'config'}': {problem}", path=path) from None


def _dataclass_type(f: dataclasses.Field) -> type | None:
    """The section class of a field that holds one (annotations are strings under `from __future__`)."""
    return SECTIONS.get(f.type if isinstance(f.type, str) else getattr(f.type, "__name__", ""))


SECTIONS = {c.__name__: c for c in (LLMConfig, PromptConfig, TokenizerConfig, ConditionConfig, DiffusionConfig,
                                    RetrievalConfig, TrainingConfig, Profile)}


# ---------------------------------------------------------------------------------------------------------------
# Format 1 → 2. Format 1 stored a flat DeftRecConfig (engine/model/deftrec.py until format 2) under config["deftrec"],
# beside the variant, the profile and the training's records, and left some model arguments to the code's
# defaults. These are those values as the format-1 code had them (unchanged from the first commit to the last
# format-1 run): they are frozen here, whatever the defaults above become.

V1_FLAT_DEFAULTS: dict[str, Any] = {
    "llm": "smollm2", "llm_fingerprint": "", "llm_hidden": 576, "item_dim": 64, "k": 2, "mask_ratio": 0.2,
    "encoder": "kway", "sigma_scale": 0.5, "gamma3": 0.5, "tokenizer_pretrain_epochs": 0, "token_scale": 1.0,
    "condition_norm": "sigmoid", "condition_source": "hidden", "diffusion": True, "negative_loss": True,
    "diffusion_loss": "bpr", "dispersive_weight": 0.5, "dispersive_tau": 0.5, "prediction": "eps",
    "cond_dropout": 0.0, "guidance": 1.0, "cf": "lightgcn", "gamma1": 0.5, "gamma2": 0.1, "n_negatives": 10,
    "neg_norm": "sum", "response": "history", "history": "random", "distinct_positives": True,
    "max_title_chars": 60, "max_history": 20, "max_length": 320, "max_new_tokens": 24,
    "inference_precision": "float32", "decoding": "full", "target_scale": 1.0, "num_train_timesteps": 1000,
    "num_inference_steps": 100, "denoiser_hidden": 512, "denoiser_layers": 3, "dropout": 0.1,
    "condition_standardize": False, "sampling_temperature": 1.0, "pi": 0.1, "pi_match": "exact", "lora_r": 16,
    "lora_alpha": 32, "lora_dropout": 0.05,
}
# model arguments format 1 never stored (TokenizerConfig's and DiffusionConfig's defaults of the format-1 code)
V1_IMPLICIT = {"n_blocks": 2, "out_norm": True, "beta_start": 1e-4, "beta_end": 0.02, "time_embed_dim": 64}
V1_PROFILE_DEFAULTS = {"refine_patience": 4, "cpu_bf16": False, "refine_seconds": 0.0}  # Profile fields added later
# a format-1 run without a profile trained with the quick profile of its time (engine/services/diagnostics.py assumed so)
V1_QUICK_PROFILE = {"name": "quick", "steps": 60, "batch_size": 8, "grad_accum": 1, "lr": 1e-3, "weight_decay": 1e-5,
                    "max_history": 8, "max_length": 160, "refine_epochs": 30, "diffusion_repeats": 8,
                    "describe_batch": 48, "checkpoint_every": 20, "val_every": 0, "val_users": 0, "val_patience": 0}
# what format 1 kept under config["deftrec"] beside the settings: the training's records
RECORD_KEYS = ("tokenizer", "refine_epoch", "refine", "selection", "seconds", "loss_log", "diagnostics", "kernels")


def config_from_v1(flat: dict, profile: dict | None = None, variant: str | None = None, *,
                   path: str | Path | None = None) -> DeftRecConfig:
    """The format-2 config of a format-1 flat settings dict (missing keys: the format-1 defaults)."""
    unknown = sorted(set(flat) - set(V1_FLAT_DEFAULTS))
    if unknown:
        raise RunError(f"unknown setting 'deftrec.{unknown[0]}' (format 1)", path=path,
                       hint="a run written by another deftrec, or an edited config.json")
    v = {**V1_FLAT_DEFAULTS, **flat}
    hidden = v["llm_hidden"]
    aux_loss = v["diffusion_loss"] if (v["diffusion_loss"] != "bpr" or v["negative_loss"]) else "none"
    nested = {
        "variant": "deftrec",
        "llm": {"name": v["llm"], "fingerprint": v["llm_fingerprint"], "hidden": hidden, "lora_r": v["lora_r"],
                "lora_alpha": v["lora_alpha"], "lora_dropout": v["lora_dropout"], "max_new_tokens": v["max_new_tokens"],
                "decoding": v["decoding"], "inference_precision": v["inference_precision"]},
        "prompt": {"history": v["history"], "max_history": v["max_history"], "max_length": v["max_length"],
                   "max_title_chars": v["max_title_chars"], "title_year": "keep", "item_text": "title",
                   "response": v["response"]},
        "tokenizer": {"out_dim": hidden, "in_dim": v["item_dim"], "k": v["k"], "n_blocks": V1_IMPLICIT["n_blocks"],
                      "dropout": v["dropout"], "mask_ratio": v["mask_ratio"], "kind": v["encoder"],
                      "out_scale": v["token_scale"], "out_norm": V1_IMPLICIT["out_norm"],
                      "sigma_scale": v["sigma_scale"], "pretrain_epochs": v["tokenizer_pretrain_epochs"]},
        "condition": {"norm": v["condition_norm"], "source": v["condition_source"], "pool": "response"},
        "diffusion": {"cond_dim": hidden, "num_train_timesteps": v["num_train_timesteps"],
                      "beta_start": V1_IMPLICIT["beta_start"], "beta_end": V1_IMPLICIT["beta_end"],
                      "num_inference_steps": v["num_inference_steps"], "item_dim": v["item_dim"],
                      "hidden_dim": v["denoiser_hidden"], "time_embed_dim": V1_IMPLICIT["time_embed_dim"],
                      "dropout": v["dropout"], "n_layers": v["denoiser_layers"],
                      "cond_standardize": v["condition_standardize"], "prediction": v["prediction"],
                      "cond_dropout": v["cond_dropout"], "enabled": v["diffusion"], "target_scale": v["target_scale"],
                      "aux_loss": aux_loss, "neg_norm": v["neg_norm"], "dispersive_tau": v["dispersive_tau"],
                      "sampling_temperature": v["sampling_temperature"], "guidance": v["guidance"]},
        "retrieval": {"pi": v["pi"], "pi_match": v["pi_match"], "item_norm": 0.0},
        "training": {"cf": v["cf"], "gamma1": v["gamma1"], "gamma2": v["gamma2"], "gamma3": v["gamma3"],
                     "dispersive_weight": v["dispersive_weight"], "n_negatives": v["n_negatives"],
                     "distinct_positives": v["distinct_positives"], "refine_targets": 5, "refine_init": "joint",
                     "align_weight": 0.0},
        "profile": {**V1_PROFILE_DEFAULTS, **(V1_QUICK_PROFILE if profile is None else profile)},
    }
    config = DeftRecConfig.from_dict(nested, path=path, where="deftrec")
    if variant is None:
        from engine.model.variants import variant_of
        variant = variant_of(config)
    return replace(config, variant=variant)


def migrate(run_config: dict, *, path: str | Path | None = None) -> dict:
    """A run's config.json of any known format as format FORMAT_VERSION, in memory (the file is not rewritten)."""
    if run_config.get("format_version") in (2, 3, 4, 5, 6, 7, 8, 9):
        return _from_format2(run_config)
    if "format_version" in run_config or run_config.get("format") != 1:
        return run_config
    out = {"format_version": FORMAT_VERSION, **{k: v for k, v in run_config.items() if k != "format"}}
    old = run_config.get("deftrec")
    if old:
        settings = {k: v for k, v in old.items() if k not in (*RECORD_KEYS, "variant", "profile")}
        config = config_from_v1(settings, old.get("profile"), old.get("variant"), path=path)
        out["deftrec"] = {"config": config.to_dict(), **{k: old[k] for k in RECORD_KEYS if k in old}}
    return out


def _from_format2(run_config: dict) -> dict:
    """Formats 2-9 → 10: prompt.title_year (format 3) did not exist, titles were shown whole ('keep');
    training.refine_targets (format 4) did not exist, the refinement targeted the 5 latest train items;
    prompt.item_text (format 5) did not exist, items were shown by their titles alone; condition.pool (format 6)
    did not exist, c was pooled over the response alone; retrieval.item_norm (format 7) did not exist, items were
    ranked by Eq. 14's cosine (α = 0); training.refine_init (format 8) did not exist, the refinement started from
    the jointly trained denoiser ('joint'); training.align_weight (format 9) did not exist, Eq. 15 had no L_align (0);
    profile.refine_seconds (format 10) did not exist, the refinement had no time bound (0)."""
    out = {**run_config, "format_version": FORMAT_VERSION}
    old = run_config.get("deftrec")
    settings = old.get("config") if isinstance(old, dict) else None
    if isinstance(settings, dict):
        settings = {**settings}
        for section, key, value in (("prompt", "title_year", "keep"), ("training", "refine_targets", 5),
                                    ("prompt", "item_text", "title"), ("condition", "pool", "response"),
                                    ("retrieval", "item_norm", 0.0), ("training", "refine_init", "joint"),
                                    ("training", "align_weight", 0.0), ("profile", "refine_seconds", 0.0)):
            if isinstance(settings.get(section), dict):
                settings[section] = {**settings[section]}
                settings[section].setdefault(key, value)
        out["deftrec"] = {**old, "config": settings}
    return out
