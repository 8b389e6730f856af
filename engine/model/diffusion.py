"""Contrastive denoising diffusion of DeftRec §2.4.2: the DDPM schedule and respaced sampler, the denoiser,
the "w/o Diffusion" regression head and the losses of Eq. 10 and Eq. 13; and ContRec's options beside them:
x0-prediction, classifier-free guidance and the dispersive loss of Wang & He 2025 ("Diffuse and Disperse")."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.model.config import PREDICTIONS, DiffusionConfig

EpsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


Generators = "torch.Generator | list[torch.Generator]"


def _draw_normal(shape: tuple[int, ...], generator: Generators, like: torch.Tensor) -> torch.Tensor:
    """N(0, I) drawn on the generator's device, then moved to `like`'s device (same numbers on CPU and GPU).

    A list of generators draws row i from generator i, so a row's numbers do not depend on the rest of the batch.
    """
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for {shape[0]} rows")
        rows = [torch.randn((1, *shape[1:]), generator=g, device=g.device, dtype=torch.float32) for g in generator]
        z = torch.cat(rows) if rows else torch.empty(shape, dtype=torch.float32)
    else:
        z = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
    return z.to(device=like.device, dtype=like.dtype)


class DDPMSchedule:
    """Linear-β DDPM schedule with a respaced ancestral sampler (a plain tensor object, like diffusers' DDPMScheduler).

    Timesteps are 0-based: index t in [0, T) is the paper's step t+1, so ᾱ[t] = Π_{τ<=t} (1 − β_τ).
    """

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 num_inference_steps: int = 100, item_dim: int = 64, prediction: str = "eps") -> None:
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        self.prediction = prediction  # what the model output handed to `step` is: ε̂ or x̂_0
        self.num_train_timesteps = num_train_timesteps
        self.num_inference_steps = num_inference_steps
        self.item_dim = item_dim
        betas64 = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)  # [T]
        self._alphas_cumprod64 = torch.cumprod(1.0 - betas64, dim=0)  # [T]
        self.betas = betas64.float()  # [T]
        self.alphas = (1.0 - betas64).float()  # [T]
        self.alphas_cumprod = self._alphas_cumprod64.float()  # [T]

    @classmethod
    def from_config(cls, config: DiffusionConfig) -> DDPMSchedule:
        """The schedule a DiffusionConfig describes."""
        return cls(config.num_train_timesteps, config.beta_start, config.beta_end,
                   config.num_inference_steps, config.item_dim, config.prediction)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """q(x_t | x_0) sample for each row: x0 [B, ...], noise like x0, t int64 [B] (0-based)."""
        abar = self.alphas_cumprod.to(x0.device)[t].to(x0.dtype)  # [B]
        abar = abar.view(-1, *([1] * (x0.dim() - 1)))  # [B, 1, ...]
        # Paper Eq. 8 (the closed form of Eq. 7): q_t = sqrt(ᾱ_t)·q + sqrt(1 − ᾱ_t)·ε.
        return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise  # [B, ...]

    def timesteps(self, num_inference_steps: int | None = None) -> list[int]:
        """The evenly strided respaced subsequence s_{n-1} > … > s_0 = 0, e.g. [990, 980, …, 0] for 100 of 1000."""
        n = self.num_inference_steps if num_inference_steps is None else num_inference_steps
        if not 1 <= n <= self.num_train_timesteps:
            raise ValueError(f"num_inference_steps must lie in [1, {self.num_train_timesteps}], got {n}")
        stride = self.num_train_timesteps // n
        return [i * stride for i in reversed(range(n))]

    def _abar(self, t: int) -> float:
        """ᾱ at 0-based index t in float64, with ᾱ_{-1} := 1 (the clean data)."""
        return 1.0 if t < 0 else float(self._alphas_cumprod64[t])

    def respaced_betas(self, num_inference_steps: int | None = None) -> torch.Tensor:
        """β'_i = 1 − ᾱ_{s_i}/ᾱ_{s_{i−1}} of the respaced chain in ascending order i = 0…n−1 (float64)."""
        s = list(reversed(self.timesteps(num_inference_steps)))
        # Nichol & Dhariwal 2021 §4: the respaced chain keeps ᾱ'_i = ᾱ_{s_i}; ᾱ_{s_{-1}} := 1.
        return torch.tensor([1.0 - self._abar(s[i]) / self._abar(s[i - 1] if i else -1) for i in range(len(s))],
                            dtype=torch.float64)  # [n]

    def step(self, model_output: torch.Tensor, t: int, t_prev: int, x_t: torch.Tensor,
             generator: Generators, temperature: float = 1.0) -> torch.Tensor:
        """One ancestral step x_t -> x_{t_prev} of the respaced chain; t_prev = −1 returns x̂_0 with no noise.
        `model_output` is ε̂ or x̂_0 (the schedule's `prediction`); `temperature` scales the added noise
        (1: the paper's sampler; 0: the deterministic posterior-mean path)."""
        t, t_prev = int(t), int(t_prev)
        if not -1 <= t_prev < t < self.num_train_timesteps:
            raise ValueError(f"need -1 <= t_prev < t < T, got t={t}, t_prev={t_prev}")
        abar_t, abar_prev = self._abar(t), self._abar(t_prev)
        beta = 1.0 - abar_t / abar_prev  # β' of the respaced chain (Nichol & Dhariwal 2021 §4)
        if self.prediction == "x0":
            x0_pred = model_output  # [B, d] the denoiser's own x̂_0 (ContRec's x0-parameterization)
        else:
            # Invert paper Eq. 8 (Ho et al. 2020 Eq. 15): x̂_0 = (x_t − sqrt(1 − ᾱ_t)·ε̂) / sqrt(ᾱ_t).
            x0_pred = (x_t - math.sqrt(1.0 - abar_t) * model_output) / math.sqrt(abar_t)  # [B, d]
        if t_prev < 0:
            return x0_pred  # [B, d]
        # Posterior q(x_{t_prev} | x_t, x̂_0) of the Gaussian forward process (paper Eq. 7; Ho et al. Eq. 6–7);
        # its mean equals Ho et al. Eq. 11, μ = (x_t − β'/sqrt(1 − ᾱ_t)·ε̂)/sqrt(1 − β'), with β' for β.
        coef_x0 = math.sqrt(abar_prev) * beta / (1.0 - abar_t)
        coef_xt = math.sqrt(1.0 - beta) * (1.0 - abar_prev) / (1.0 - abar_t)
        mean = coef_x0 * x0_pred + coef_xt * x_t  # [B, d]
        var = (1.0 - abar_prev) / (1.0 - abar_t) * beta  # β̃' (the posterior variance, "fixed small")
        if temperature == 0.0:
            return mean  # [B, d]
        noise = _draw_normal(tuple(x_t.shape), generator, x_t)  # [B, d]
        # Reduced-temperature ancestral sampling (Kingma & Dhariwal 2018 §5): the noise is scaled by τ.
        return mean + temperature * math.sqrt(var) * noise  # [B, d]

    @torch.no_grad()
    def sample(self, eps_fn: EpsFn, cond: torch.Tensor, generator: Generators,
               num_inference_steps: int | None = None, temperature: float = 1.0) -> torch.Tensor:
        """Reverse trajectory [steps+1, B, d] from x_T ~ N(0, τ²I) down to y, every x_t kept (float32, cond's
        device); `generator` is one generator or one per row; τ = 1 is the paper's sampler, τ = 0 deterministic."""
        if not 0.0 <= temperature <= 1.0:
            raise ValueError(f"temperature must lie in [0, 1], got {temperature}")
        steps = self.timesteps(num_inference_steps)
        batch = cond.shape[0]
        if temperature == 0.0:
            x = torch.zeros(batch, self.item_dim, device=cond.device)  # [B, d] the mean of x_T
        else:
            x = temperature * _draw_normal((batch, self.item_dim), generator,
                                           torch.empty(0, device=cond.device))  # [B, d]
        trajectory = [x]
        for i, t in enumerate(steps):
            t_prev = steps[i + 1] if i + 1 < len(steps) else -1
            t_vec = torch.full((batch,), t, dtype=torch.long, device=cond.device)  # [B]
            model_output = eps_fn(x, t_vec, cond).to(x.dtype)  # [B, d] ε̂ or x̂_0
            x = self.step(model_output, t, t_prev, x, generator, temperature)  # [B, d]
            trajectory.append(x)
        return torch.stack(trajectory)  # [steps+1, B, d]


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (Vaswani et al. / Ho et al.): t [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)  # [dim/2]
    args = t.float()[:, None] * freqs[None, :]  # [B, dim/2]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # [B, dim]


def condition_standardizer(config: DiffusionConfig) -> nn.Module:
    """Per-dimension standardization of c (BatchNorm without affine), or identity; a sigmoid-squashed c varies
    little in most dimensions, which the denoiser's first layer otherwise has to undo."""
    return ConditionStandardizer(config.cond_dim) if config.cond_standardize else nn.Identity()


class ConditionStandardizer(nn.BatchNorm1d):
    """BatchNorm1d without affine that falls back to its running statistics for a training batch of one."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim, affine=False)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        if self.training and cond.shape[0] < 2:
            return F.batch_norm(cond, self.running_mean, self.running_var, training=False, eps=self.eps)  # [1, D]
        return super().forward(cond)  # [B, D]


class Denoiser(nn.Module):
    """ε_θ(x_t, t, c) (or x0_θ): a small MLP over [x_t, t-embedding, projected condition]; with cond_dropout > 0
    a learned null condition stands in for dropped rows (classifier-free guidance, Ho & Salimans 2022)."""

    def __init__(self, config: DiffusionConfig) -> None:
        super().__init__()
        self.config = config
        te = config.time_embed_dim
        self.time_mlp = nn.Sequential(nn.Linear(te, te), nn.SiLU(), nn.Linear(te, te))
        self.cond_norm = condition_standardizer(config)
        self.cond_proj = nn.Linear(config.cond_dim, config.hidden_dim)
        self.null_cond = nn.Parameter(torch.zeros(config.hidden_dim)) if config.cond_dropout > 0 else None
        layers: list[nn.Module] = []
        width = config.item_dim + te + config.hidden_dim
        for _ in range(config.n_layers):
            layers += [nn.Linear(width, config.hidden_dim), nn.SiLU(), nn.Dropout(config.dropout)]
            width = config.hidden_dim
        layers.append(nn.Linear(width, config.item_dim))
        self.net = nn.Sequential(*layers)
        # the dispersive loss reads the output of the middle hidden block (Linear, SiLU, Dropout per block)
        self.hidden_index = 3 * ((config.n_layers + 1) // 2) - 1

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                uncond: torch.Tensor | None = None, return_hidden: bool = False):
        """Prediction for x_t [B, d] at 0-based steps t [B] under condition cond [B, D] -> [B, d]; rows where the
        bool mask `uncond` [B] is set use the null condition; return_hidden adds the middle block's output [B, H]."""
        temb = self.time_mlp(timestep_embedding(t, self.config.time_embed_dim).to(x_t.dtype))  # [B, te]
        c = self.cond_proj(self.cond_norm(cond.to(x_t.dtype)))  # [B, hidden]
        if uncond is not None:
            if self.null_cond is None:
                raise ValueError("this denoiser was built without a null condition (cond_dropout = 0)")
            c = torch.where(uncond[:, None], self.null_cond.to(c.dtype).expand_as(c), c)  # [B, hidden]
        h = torch.cat([x_t, temb, c], dim=-1)  # [B, d + te + hidden]
        hidden = None
        for index, layer in enumerate(self.net):
            h = layer(h)
            if index == self.hidden_index:
                hidden = h  # [B, hidden]
        return (h, hidden) if return_hidden else h  # [B, d]


def guided(denoiser: Denoiser, guidance: float) -> EpsFn:
    """The model function of classifier-free guidance: ŷ = ŷ(∅) + w·(ŷ(c) − ŷ(∅)) (Ho & Salimans 2022 Eq. 6,
    written with w = 1 + their w), so w = 1 is the plain conditional model; both halves in one batched pass."""
    if guidance == 1.0:
        return lambda x, t, c: denoiser(x, t, c)
    if denoiser.null_cond is None:
        raise ValueError("guidance != 1 needs a denoiser trained with condition dropout")

    def model_fn(x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        uncond = torch.cat([torch.zeros(batch, dtype=torch.bool, device=x.device),
                            torch.ones(batch, dtype=torch.bool, device=x.device)])  # [2B]
        both = denoiser(torch.cat([x, x]), torch.cat([t, t]), torch.cat([c, c]), uncond)  # [2B, d]
        conditional, unconditional = both[:batch], both[batch:]  # [B, d], [B, d]
        return unconditional + guidance * (conditional - unconditional)  # [B, d]
    return model_fn


class RegressionHead(nn.Module):
    """The "w/o Diffusion" ablation: y = MLP(c), trained by regression onto q⁺."""

    def __init__(self, config: DiffusionConfig) -> None:
        super().__init__()
        self.config = config
        self.cond_norm = condition_standardizer(config)
        self.net = nn.Sequential(nn.Linear(config.cond_dim, config.hidden_dim), nn.SiLU(),
                                 nn.Dropout(config.dropout), nn.Linear(config.hidden_dim, config.item_dim))

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        """Preference vector for cond [B, D] -> [B, d]."""
        return self.net(self.cond_norm(cond))  # [B, d]


def diffusion_loss(eps_pred: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """L_Diff of Eq. 10: mean squared error between predicted and true noise, over dims and batch."""
    return F.mse_loss(eps_pred, eps)  # []


NEG_NORMS = ("sum", "mean")


def negative_loss(eps_pred_pos: torch.Tensor, eps_pred_neg: torch.Tensor, eps: torch.Tensor,
                  target_neg: torch.Tensor | None = None, reduction: str = "mean", norm: str = "sum") -> torch.Tensor:
    """L_Neg of Eq. 13 per sample, −log σ(−‖ε̂⁺−ε‖² + ‖ε̂⁻−ε‖²), averaged over the batch ('none' keeps [B]);
    target_neg (default ε) is the negative branch's target when it differs (x0-prediction: q⁻).

    ‖·‖² is the squared norm, a sum over the d dims as Eq. 13 writes it; norm='mean' divides the logit by d
    (deftrec's earlier reading, under which the term sits near ln 2 and barely moves).
    """
    if norm not in NEG_NORMS:
        raise ValueError(f"norm must be one of {NEG_NORMS}, got {norm!r}")
    reduce = (lambda x: x.sum(dim=-1)) if norm == "sum" else (lambda x: x.mean(dim=-1))
    err_pos = reduce((eps_pred_pos - eps).pow(2))  # [B]
    err_neg = reduce((eps_pred_neg - (eps if target_neg is None else target_neg)).pow(2))  # [B]
    per_sample = F.softplus(err_pos - err_neg)  # [B]; softplus(z) = −log σ(−z)
    if reduction == "none":
        return per_sample  # [B]
    if reduction == "mean":
        return per_sample.mean()  # []
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def contrastive_diffusion_losses(denoiser: nn.Module, schedule: DDPMSchedule, x0_pos: torch.Tensor,
                                 x0_neg_mean: torch.Tensor, cond: torch.Tensor,
                                 generator: torch.Generator, neg_norm: str = "sum") -> tuple[torch.Tensor, torch.Tensor]:
    """(L_Diff, L_Neg) for one batch: t ~ U[0, T) and ε ~ N(0, I) shared by each positive and its averaged negative."""
    batch = x0_pos.shape[0]
    t = torch.randint(0, schedule.num_train_timesteps, (batch,), generator=generator,
                      device=generator.device).to(x0_pos.device)  # [B]
    eps = _draw_normal(tuple(x0_pos.shape), generator, x0_pos)  # [B, d]
    q_pos = schedule.add_noise(x0_pos, eps, t)  # [B, d]
    q_neg = schedule.add_noise(x0_neg_mean, eps, t)  # [B, d]
    # One denoiser pass over both branches: [q⁺_t; q⁻_t] with the same t and c.
    eps_pred = denoiser(torch.cat([q_pos, q_neg]), torch.cat([t, t]), torch.cat([cond, cond]))  # [2B, d]
    eps_pos, eps_neg = eps_pred[:batch], eps_pred[batch:]  # [B, d], [B, d]
    return diffusion_loss(eps_pos, eps), negative_loss(eps_pos, eps_neg, eps, norm=neg_norm)


def dispersive_loss(hidden: torch.Tensor, tau: float = 0.5) -> torch.Tensor:
    """L_disp = log mean_{i,j} exp(−‖h_i − h_j‖² / τ) over a batch of representations hidden [B, H] (Wang & He 2025,
    the InfoNCE variant without positives); ‖·‖² is the mean over the H dims, as in their released code, so τ
    does not depend on the width. i = j is included, so a batch of one gives log 1 = 0 and no gradient."""
    flat = hidden.reshape(hidden.shape[0], -1).float()  # [B, H]
    # ‖h_i‖² + ‖h_j‖² − 2 h_i·h_j: O(B² + B·H) memory, not the [B, B, H] of pairwise differences (2 GB in float32
    # for a refinement batch of 1024 × 512, before its gradient); no sqrt (torch.cdist's is infinite at 0)
    sq_norm = flat.pow(2).sum(dim=1)  # [B]
    sq_dist = (sq_norm[:, None] + sq_norm[None, :] - 2.0 * flat @ flat.T).clamp_min(0.0) / flat.shape[1]  # [B, B]
    diagonal = torch.eye(len(flat), dtype=torch.bool, device=flat.device)  # [B, B]
    sq_dist = torch.where(diagonal, torch.zeros_like(sq_dist), sq_dist)  # exactly 0 at i = j, with no gradient
    return torch.logsumexp(-sq_dist.flatten() / tau, dim=0) - math.log(sq_dist.numel())  # []


@dataclass(frozen=True)
class DenoisingObjective:
    """Which auxiliary loss goes beside L_Diff and how the condition is dropped: the choices a run records."""

    loss: str = "bpr"  # 'bpr' (DeftRec's L_Neg, Eq. 13) | 'dispersive' (ContRec) | 'none'
    dispersive_tau: float = 0.5
    neg_norm: str = "sum"  # ‖·‖² of L_Neg: 'sum' over d (Eq. 13) | 'mean' over d

    def __post_init__(self) -> None:
        if self.loss not in DIFFUSION_LOSSES:
            raise ValueError(f"loss must be one of {DIFFUSION_LOSSES}, got {self.loss!r}")


DIFFUSION_LOSSES = ("bpr", "dispersive", "none")


def denoising_losses(denoiser: Denoiser, schedule: DDPMSchedule, x0_pos: torch.Tensor, x0_neg_mean: torch.Tensor,
                     cond: torch.Tensor, generator: torch.Generator,
                     objective: DenoisingObjective = DenoisingObjective()) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_Diff, auxiliary loss) of one batch for either parameterization and auxiliary loss.

    In the paper's setting (ε-prediction, L_Neg, no condition dropout) this draws and computes exactly what
    `contrastive_diffusion_losses` does (tests/test_contrec.py checks the two agree bit for bit).
    With x0-prediction L_Diff is ‖x̂_0 − q⁺‖² and L_Neg compares x0-errors: −log σ(−‖x̂_0⁺−q⁺‖² + ‖x̂_0⁻−q⁻‖²).
    """
    config = denoiser.config
    batch = x0_pos.shape[0]
    t = torch.randint(0, schedule.num_train_timesteps, (batch,), generator=generator,
                      device=generator.device).to(x0_pos.device)  # [B]
    eps = _draw_normal(tuple(x0_pos.shape), generator, x0_pos)  # [B, d]
    uncond = None
    if config.cond_dropout > 0:
        uncond = (torch.rand(batch, generator=generator, device=generator.device)
                  < config.cond_dropout).to(x0_pos.device)  # [B]
    q_pos = schedule.add_noise(x0_pos, eps, t)  # [B, d]
    target_pos = eps if config.prediction == "eps" else x0_pos  # [B, d]
    if objective.loss == "bpr":
        q_neg = schedule.add_noise(x0_neg_mean, eps, t)  # [B, d]
        both_uncond = None if uncond is None else torch.cat([uncond, uncond])  # [2B]
        pred = denoiser(torch.cat([q_pos, q_neg]), torch.cat([t, t]), torch.cat([cond, cond]), both_uncond)  # [2B, d]
        pred_pos, pred_neg = pred[:batch], pred[batch:]  # [B, d], [B, d]
        target_neg = eps if config.prediction == "eps" else x0_neg_mean  # [B, d]
        return diffusion_loss(pred_pos, target_pos), negative_loss(pred_pos, pred_neg, target_pos, target_neg,
                                                                   norm=objective.neg_norm)
    pred_pos, hidden = denoiser(q_pos, t, cond, uncond, return_hidden=True)  # [B, d], [B, H]
    aux = dispersive_loss(hidden, objective.dispersive_tau) if objective.loss == "dispersive" else pred_pos.new_zeros(())
    return diffusion_loss(pred_pos, target_pos), aux
