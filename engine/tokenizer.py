"""The masked additive K-way continuous tokenizer of DeftRec §2.3 (Eq. 2): collaborative embedding -> K tokens."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

KINDS = ("kway", "linear")


@dataclass(frozen=True)
class TokenizerConfig:
    """Settings of one encoder (in_dim = d, out_dim = the LLM hidden size D); kind="linear" is "w/o Encoder"."""

    out_dim: int
    in_dim: int = 64
    k: int = 2
    n_blocks: int = 2
    dropout: float = 0.1
    mask_ratio: float = 0.2
    kind: str = "kway"
    out_scale: float = 1.0
    out_norm: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must lie in [0, 1), got {self.mask_ratio}")
        if self.k < 1 or self.n_blocks < 0:
            raise ValueError("need k >= 1 and n_blocks >= 0")


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
        n_blocks = config.n_blocks if config.kind == "kway" else 0
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


class ContinuousTokenizer(nn.Module):
    """Separate encoders Enc_u (`.user`) and Enc_v (`.item`) with one shared configuration."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.config = config
        self.user = KWayEncoder(config)
        self.item = KWayEncoder(config)

    def encode_users(self, q: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """User tokens: q [N, in_dim] -> [N, K, D]."""
        return self.user(q, generator)  # [N, K, D]

    def encode_items(self, q: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Item tokens: q [N, in_dim] -> [N, K, D]."""
        return self.item(q, generator)  # [N, K, D]
