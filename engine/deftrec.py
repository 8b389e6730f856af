"""DeftRec's trainable parts besides the LLM: the continuous tokenizer, the condition head and the denoiser
(or the regression head of the 'w/o Diffusion' ablation), with the frozen config a run stores."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from engine.diffusion import DDPMSchedule, DenoisingObjective, Denoiser, DiffusionConfig, RegressionHead, guided
from engine.llm import ConditionConfig, ConditionHead
from engine.prompts import INPUT_TEMPLATES
from engine.tokenizer import ContinuousTokenizer, TokenizerConfig


@dataclass(frozen=True)
class DeftRecConfig:
    """Every setting that shapes the model; stored in config.json and used to rebuild it when a run loads."""

    llm: str = "smollm2"  # 'smollm2' (the packaged GGUF) or a local HF directory
    llm_fingerprint: str = ""  # engine.llm.llm_fingerprint of the LLM it was trained on; checked at load
    llm_hidden: int = 576
    item_dim: int = 64
    k: int = 2  # continuous tokens per user/item
    mask_ratio: float = 0.2
    encoder: str = "kway"  # tokenizer: 'kway' | 'linear' (w/o Encoder) | 'sigma-vae' (ContRec)
    sigma_scale: float = 0.5  # σ-VAE: σ ~ |N(0, C_σ²)| per example, in units of the token RMS (0: plain AE)
    gamma3: float = 0.5  # σ-VAE: weight of the reconstruction loss in the joint objective
    tokenizer_pretrain_epochs: int = 0  # σ-VAE: epochs of reconstruction-only training before the joint stage
    token_scale: float = 1.0  # RMS of the LLM's word embeddings; continuous tokens are scaled to it
    condition_norm: str = "sigmoid"
    condition_source: str = "hidden"  # 'hidden' (paper) | 'embedding' (authors' code, ablation)
    diffusion: bool = True  # False: regression head (w/o Diffusion)
    negative_loss: bool = True  # False: w/o BPR
    diffusion_loss: str = "bpr"  # auxiliary loss of the denoiser: 'bpr' (L_Neg, Eq. 13) | 'dispersive' (ContRec)
    dispersive_weight: float = 0.5  # λ of L_disp (Wang & He 2025's default)
    dispersive_tau: float = 0.5  # τ of L_disp
    prediction: str = "eps"  # denoiser parameterization: 'eps' (paper) | 'x0'
    cond_dropout: float = 0.0  # probability of training with the null condition (classifier-free guidance)
    guidance: float = 1.0  # CFG weight w at sampling (1: the conditional model alone)
    cf: str = "lightgcn"  # 'lightgcn' | 'random' (w/o CF)
    gamma1: float = 0.5
    gamma2: float = 0.1
    n_negatives: int = 10
    neg_norm: str = "sum"  # ‖·‖² in L_Neg: 'sum' over d (Eq. 13 as written) | 'mean' (deftrec ≤ 0.1's reading)
    response: str = "history"  # training response names: 'history' (the prompt history's leading categories) |
    #                            'target' (the held-out target item's category: leaks it into c in training)
    history: str = "random"  # prompt history: 'random' (the paper: shuffled sample) | 'recent' (latest, time order);
    #                          `deftrec train` defaults to 'recent', this default is what runs made before it had
    distinct_positives: bool = True  # each noise draw of a joint step gets its own positive (and negatives)
    max_title_chars: int = 60  # titles in prompts are cut to this many characters (`deftrec train`: 40)
    max_history: int = 20
    max_length: int = 320
    max_new_tokens: int = 24
    inference_precision: str = "float32"  # the LLM at inference: 'float32' | 'bfloat16' (autocast over fp32 weights;
    #                                       on a CPU only where it has native bf16, else float32)
    decoding: str = "full"  # 'full' greedy | 'template' (fixed words in one pass; equal where greedy follows the
    #                         template) | 'constrained' (template, the slot limited to category names); train: template
    target_scale: float = 1.0  # item embeddings are divided by it so diffusion targets have unit RMS
    num_train_timesteps: int = 1000
    num_inference_steps: int = 100
    denoiser_hidden: int = 512
    denoiser_layers: int = 3
    dropout: float = 0.1
    condition_standardize: bool = False  # standardize c per dimension inside the denoiser (train sets True)
    sampling_temperature: float = 1.0  # τ of the reverse sampler: 1 = paper (x_T ~ N(0, I)), 0 = deterministic
    pi: float = 0.1
    pi_match: str = "exact"  # 'exact' | 'overlap' (the '|'-separated parts intersect) | 'all' (named ⊆ item's)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05

    @classmethod
    def from_dict(cls, values: dict) -> DeftRecConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)

    def denoising_objective(self) -> DenoisingObjective:
        """The auxiliary diffusion loss these settings ask for ('none' under the w/o BPR ablation)."""
        loss = self.diffusion_loss if (self.diffusion_loss != "bpr" or self.negative_loss) else "none"
        return DenoisingObjective(loss=loss, dispersive_tau=self.dispersive_tau, neg_norm=self.neg_norm)

    def aux_weight(self) -> float:
        """Weight of the auxiliary diffusion loss: γ2 for L_Neg, λ for L_disp."""
        return self.dispersive_weight if self.diffusion_loss == "dispersive" else self.gamma2


def user_slot_first(template_id: int) -> bool:
    """Whether the template names the user before the items (placeholders are spliced in prompt order)."""
    template = INPUT_TEMPLATES[template_id]
    return template.index("{user}") < template.index("{items}")


class DeftRecHeads(nn.Module):
    """Tokenizer + condition head + denoiser (or regression head)."""

    def __init__(self, config: DeftRecConfig) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = ContinuousTokenizer(TokenizerConfig(
            out_dim=config.llm_hidden, in_dim=config.item_dim, k=config.k, dropout=config.dropout,
            mask_ratio=config.mask_ratio, kind=config.encoder, out_scale=config.token_scale,
            sigma_scale=config.sigma_scale))
        self.condition = ConditionHead(config.llm_hidden, ConditionConfig(norm=config.condition_norm,
                                                                          source=config.condition_source))
        diffusion_config = self.diffusion_config()
        self.denoiser = Denoiser(diffusion_config) if config.diffusion else None
        self.regressor = None if config.diffusion else RegressionHead(diffusion_config)

    def diffusion_config(self) -> DiffusionConfig:
        c = self.config
        return DiffusionConfig(cond_dim=c.llm_hidden, item_dim=c.item_dim, hidden_dim=c.denoiser_hidden,
                               n_layers=c.denoiser_layers, dropout=c.dropout, cond_standardize=c.condition_standardize,
                               num_train_timesteps=c.num_train_timesteps, num_inference_steps=c.num_inference_steps,
                               prediction=c.prediction, cond_dropout=c.cond_dropout)

    def schedule(self) -> DDPMSchedule:
        return DDPMSchedule.from_config(self.diffusion_config())

    def prompt_tokens(self, user_q: torch.Tensor, history_q: list[torch.Tensor],
                      template_ids: list[int]) -> torch.Tensor:
        """Continuous tokens of a batch in prompt order: [N_ct, D] for user_q [B,d] and histories [n_i,d]."""
        user_tokens = self.tokenizer.encode_users(user_q)  # [B,K,D]
        sizes = [len(h) for h in history_q]
        item_tokens = self.tokenizer.encode_items(torch.cat(history_q)) if sum(sizes) else None  # [ΣN,K,D]
        pieces, start = [], 0
        for row, (size, template_id) in enumerate(zip(sizes, template_ids)):
            items = (item_tokens[start:start + size].reshape(-1, self.config.llm_hidden)
                     if size else user_tokens.new_zeros(0, self.config.llm_hidden))  # [n*K,D]
            start += size
            user = user_tokens[row]  # [K,D]
            pieces += [user, items] if user_slot_first(template_id) else [items, user]
        return torch.cat(pieces)  # [N_ct,D]

    def reconstruction_loss(self, user_q: torch.Tensor, item_q: torch.Tensor,
                            generator: torch.Generator | None = None) -> torch.Tensor:
        """σ-VAE reconstruction MSE of a batch's users [B,d] and items [N,d], in units of the targets' RMS."""
        return self.tokenizer.reconstruction_loss(user_q, item_q, generator) / self.config.target_scale ** 2  # []

    def sample(self, cond: torch.Tensor, generator: torch.Generator | list[torch.Generator],
               temperature: float | None = None, guidance: float | None = None) -> torch.Tensor:
        """Trajectory [steps+1, B, d] from noise to the preference vector (one state for the regression head);
        temperature / guidance None use the run's sampling_temperature / guidance."""
        if self.regressor is not None:
            return self.regressor(cond.float()).unsqueeze(0)  # [1,B,d]
        tau = self.config.sampling_temperature if temperature is None else temperature
        weight = self.config.guidance if guidance is None else guidance
        return self.schedule().sample(guided(self.denoiser, weight), cond.float(), generator,
                                      temperature=tau)  # [S+1,B,d]
