"""Eq. 15 as one nn.Module, so Accelerate (and DDP under `accelerate launch`) wraps a single forward call that
touches every trainable part: the tokenizer, the LoRA adapters, the condition head and the denoiser."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.deftrec import DeftRecConfig, DeftRecHeads
from engine.diffusion import contrastive_diffusion_losses, diffusion_loss
from engine.llm import embed_with_continuous_tokens, lm_forward


@dataclass
class JointBatch:
    """One training batch, already tokenized: the prompt+response ids and the CF vectors it needs."""

    input_ids: torch.Tensor  # [B,L]
    attention_mask: torch.Tensor  # [B,L]
    labels: torch.Tensor  # [B,L], -100 outside the response
    response_mask: torch.Tensor  # [B,L]
    user_q: torch.Tensor  # [B,d]
    history_q: list  # B tensors [n_i,d], the history items in prompt order
    template_ids: list
    x_pos: torch.Tensor  # [B,d], target item / target_scale
    x_neg: torch.Tensor  # [B,d], mean of the negatives / target_scale


class JointObjective(nn.Module):
    """L = L_diff + γ1·L_LLM + γ2·L_neg (Eq. 15); forward returns the total and its parts."""

    def __init__(self, llm: nn.Module, heads: DeftRecHeads, config: DeftRecConfig, ct_id: int,
                 diffusion_repeats: int = 1) -> None:
        super().__init__()
        self.llm = llm
        self.heads = heads
        self.config = config
        self.ct_id = ct_id
        self.diffusion_repeats = diffusion_repeats

    def forward(self, batch: JointBatch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        config = self.config
        tokens = self.heads.prompt_tokens(batch.user_q, batch.history_q, batch.template_ids)  # [N_ct,D]
        embeds = embed_with_continuous_tokens(self.llm, batch.input_ids, self.ct_id, tokens)  # [B,L,D]
        out = lm_forward(self.llm, embeds, batch.attention_mask, batch.labels)
        cond = self.heads.condition(out.last_hidden, batch.response_mask, embeds)  # [B,D]
        if self.heads.denoiser is not None:
            r = self.diffusion_repeats  # several (t, ε) draws per condition: cheap extra diffusion signal
            l_diff, l_neg = contrastive_diffusion_losses(
                self.heads.denoiser, self.heads.schedule(), batch.x_pos.repeat(r, 1), batch.x_neg.repeat(r, 1),
                cond.repeat(r, 1), generator)
        else:
            l_diff = diffusion_loss(self.heads.regressor(cond), batch.x_pos)  # w/o Diffusion: regress q⁺
            l_neg = torch.zeros((), device=cond.device)
        loss = l_diff + config.gamma1 * out.loss + (config.gamma2 * l_neg if config.negative_loss else 0.0)
        return {"loss": loss, "l_diff": l_diff, "l_llm": out.loss, "l_neg": l_neg}
