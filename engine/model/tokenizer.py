"""Continuous tokenizers: collaborative embedding -> K tokens. DeftRec's masked K-way encoder (§2.3, Eq. 2) and
ContRec's σ-VAE, the same encoder with a fixed-distribution σ (LatentLM, Sun et al. 2024) and a decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.model.config import TokenizerConfig


def bernoulli_mask(q: torch.Tensor, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mask(q, ϱ) of Eq. 2: each entry is zeroed with probability `ratio` (no rescaling)."""
    device = generator.device if generator is not None else q.device
    masked = torch.rand(q.shape, generator=generator, device=device).to(q.device) < ratio  # [N, in_dim]
    return q.masked_fill(masked, 0.0)  # [N, in_dim]


class ResidualBlock(nn.Module):
    """h + Linear(Dropout(ReLU(h))), the block of §2.3."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.linear = nn.Linear(dim, dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """One residual update of h [N, D] -> [N, D]."""
        return h + self.linear(self.drop(torch.relu(h)))  # [N, D]


class SubEncoder(nn.Module):
    """One of the K ways: input projection then residual blocks (kind="kway") or the projection only ("linear")."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.proj = nn.Linear(config.in_dim, config.out_dim)
        n_blocks = 0 if config.kind == "linear" else config.n_blocks
        self.blocks = nn.Sequential(*[ResidualBlock(config.out_dim, config.dropout) for _ in range(n_blocks)])

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """One token per row: q [N, in_dim] -> [N, D]."""
        return self.blocks(self.proj(q))  # [N, D]


class KWayEncoder(nn.Module):
    """Enc^K of Eq. 2: the training-only Bernoulli mask, then K sub-encoders, each token RMS-normalized to out_scale."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.config = config
        self.ways = nn.ModuleList([SubEncoder(config) for _ in range(config.k)])

    def forward(self, q: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """K continuous tokens per embedding: q [N, in_dim] -> [N, K, D]."""
        if self.training and self.config.mask_ratio > 0:
            q = bernoulli_mask(q, self.config.mask_ratio, generator)  # [N, in_dim]
        tokens = torch.stack([way(q) for way in self.ways], dim=1)  # [N, K, D]
        if self.config.out_norm:
            # RMS-normalize each token, then scale it to the RMS of the LLM's word embeddings.
            rms = tokens.pow(2).mean(dim=-1, keepdim=True).add(1e-8).sqrt()  # [N, K, 1]
            tokens = tokens / rms * self.config.out_scale  # [N, K, D]
        return tokens  # [N, K, D]


def draw_sigma(n: int, scale: float, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """σ ~ |N(0, scale²)| per example [N]: drawn from a fixed distribution, never learned, so it cannot collapse."""
    gen_device = generator.device if generator is not None else device
    return (torch.randn(n, generator=generator, device=gen_device) * scale).abs().to(device)  # [N]


class SigmaVAE(nn.Module):
    """σ-VAE tokenizer of one side: the (masked, K-way) encoder gives μ [N, K, D]; in training the tokens are
    z = μ + σ·out_scale·ε with σ drawn per example; the decoder reconstructs the collaborative embedding from z."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = KWayEncoder(config)
        hidden = max(config.in_dim * 4, 64)
        self.decoder = nn.Sequential(nn.Linear(config.k * config.out_dim, hidden), nn.SiLU(),
                                     nn.Linear(hidden, config.in_dim))

    def encode(self, q: torch.Tensor, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z, μ, σ) for q [N, in_dim]: tokens [N, K, D], their means [N, K, D] and the drawn σ [N] (0 in eval)."""
        mu = self.encoder(q, generator)  # [N, K, D]
        if not self.training or self.config.sigma_scale == 0:
            return mu, mu, mu.new_zeros(mu.shape[0])
        sigma = draw_sigma(mu.shape[0], self.config.sigma_scale, generator, mu.device)  # [N]
        gen_device = generator.device if generator is not None else mu.device
        eps = torch.randn(mu.shape, generator=generator, device=gen_device).to(mu.device, mu.dtype)  # [N, K, D]
        # LatentLM's σ-VAE: z = μ + σ ⊙ ε with σ from a fixed distribution; scaled to the tokens' RMS
        return mu + sigma[:, None, None] * self.config.out_scale * eps, mu, sigma  # [N, K, D]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstructed embedding from tokens: z [N, K, D] -> [N, in_dim]."""
        return self.decoder(z.flatten(1))  # [N, in_dim]

    def forward(self, q: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The tokens the LLM reads: q [N, in_dim] -> z [N, K, D] (μ at inference)."""
        return self.encode(q, generator)[0]  # [N, K, D]

    def reconstruction_loss(self, q: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """MSE between q [N, in_dim] and the decoding of its (noisy, masked) tokens."""
        return F.mse_loss(self.decode(self.encode(q, generator)[0]), q)  # []


class ContinuousTokenizer(nn.Module):
    """Separate encoders Enc_u (`.user`) and Enc_v (`.item`) with one shared configuration."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.config = config
        side = SigmaVAE if config.kind == "sigma-vae" else KWayEncoder
        self.user = side(config)
        self.item = side(config)

    @property
    def has_decoder(self) -> bool:
        return self.config.kind == "sigma-vae"

    def reconstruction_loss(self, user_q: torch.Tensor, item_q: torch.Tensor,
                            generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean of the two sides' reconstruction MSEs (σ-VAE only) for user_q [B, d] and item_q [N, d]."""
        losses = [side.reconstruction_loss(q, generator) for side, q in ((self.user, user_q), (self.item, item_q))
                  if len(q)]
        return torch.stack(losses).mean()  # []

    def encode_users(self, q: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """User tokens: q [N, in_dim] -> [N, K, D]."""
        return self.user(q, generator)  # [N, K, D]

    def encode_items(self, q: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Item tokens: q [N, in_dim] -> [N, K, D]."""
        return self.item(q, generator)  # [N, K, D]
