"""Eq. 15 as one nn.Module, so Accelerate (and DDP under `accelerate launch`) wraps a single forward call that
touches every trainable part: the tokenizer, the LoRA adapters, the condition head and the denoiser."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.model.deftrec import DeftRecConfig, DeftRecHeads, denoising_objective
from engine.model.diffusion import denoising_losses, diffusion_loss
from engine.model.llm.continuous import embed_with_continuous_tokens
from engine.model.llm.forward import lm_forward


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
    x_pos: torch.Tensor  # [R*B,d], R positives per user (row j*B + b: user b) / target_scale
    x_neg: torch.Tensor  # [R*B,d], mean of each positive's negatives / target_scale


class JointObjective(nn.Module):
    """L = L_diff + γ1·L_LLM + γ2·L_neg (Eq. 15), or with ContRec's options λ·L_disp for γ2·L_neg and + γ3·L_rec
    (σ-VAE reconstruction), and with align_weight > 0 (not the paper) + w·L_align, a linear probe of c fitted to the
    user's LightGCN vector; forward returns the total and its parts (l_neg, l_disp, l_rec, l_align only when used)."""

    def __init__(self, llm: nn.Module, heads: DeftRecHeads, config: DeftRecConfig, ct_id: int) -> None:
        super().__init__()
        self.llm = llm
        self.heads = heads
        self.config = config
        self.ct_id = ct_id
        # a training device only: the probe is dropped after joint training, and diagnose fits its own ridge probe
        self.probe = nn.Linear(config.llm.hidden, config.diffusion.item_dim) if config.training.align_weight > 0 else None

    def forward(self, batch: JointBatch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        config = self.config
        tokens = self.heads.prompt_tokens(batch.user_q, batch.history_q, batch.template_ids)  # [N_ct,D]
        embeds = embed_with_continuous_tokens(self.llm, batch.input_ids, self.ct_id, tokens)  # [B,L,D]
        out = lm_forward(self.llm, embeds, batch.attention_mask, batch.labels)
        user = self.heads.user_state(out.last_hidden, embeds, batch.input_ids, self.ct_id, batch.template_ids)  # [B,D]
        cond = self.heads.condition(out.last_hidden, batch.response_mask, embeds, user)  # [B,D]
        parts: dict[str, torch.Tensor] = {"l_llm": out.loss}
        if self.heads.denoiser is not None:
            r = batch.x_pos.shape[0] // cond.shape[0]  # positives (and (t, ε) draws) per condition: cheap signal
            objective = denoising_objective(config)
            l_diff, l_aux = denoising_losses(
                self.heads.denoiser, self.heads.schedule(), batch.x_pos, batch.x_neg,
                cond.repeat(r, 1), generator, objective)  # cond [R*B,D], repeat-major like x_pos
            if objective.loss == "dispersive":
                parts["l_disp"] = l_aux
            else:
                parts["l_neg"] = l_aux if objective.loss == "bpr" else torch.zeros((), device=cond.device)
        else:
            r = batch.x_pos.shape[0] // cond.shape[0]
            l_diff = diffusion_loss(self.heads.regressor(cond).repeat(r, 1), batch.x_pos)  # w/o Diffusion: regress q⁺
            parts["l_neg"] = torch.zeros((), device=cond.device)
        loss = l_diff + config.training.gamma1 * out.loss
        if config.diffusion.aux_loss != "none":  # γ2·L_neg or λ·L_disp
            loss = loss + config.aux_weight() * (parts["l_disp"] if "l_disp" in parts else parts["l_neg"])
        if self.probe is not None:
            parts["l_align"] = alignment_loss(self.probe(cond), batch.user_q)
            loss = loss + config.training.align_weight * parts["l_align"]
        if self.heads.tokenizer.has_decoder:
            history = torch.cat(batch.history_q) if batch.history_q else batch.user_q.new_zeros(0, batch.user_q.shape[1])
            parts["l_rec"] = self.heads.reconstruction_loss(batch.user_q, history)
            loss = loss + config.training.gamma3 * parts["l_rec"]
        return {"loss": loss, "l_diff": l_diff, **parts}


def alignment_loss(predicted: torch.Tensor, user_q: torch.Tensor) -> torch.Tensor:
    """Squared error of the probe's prediction [B,d] of the user vectors [B,d], in units of their mean square (1 for
    predicting zero), so the weight means the same whatever the CF vectors' scale."""
    target = user_q.float()  # [B,d]
    return (predicted - target).pow(2).mean() / target.pow(2).mean().detach().clamp(min=1e-12)  # []
