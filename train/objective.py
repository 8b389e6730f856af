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
    (σ-VAE reconstruction), and with align_weight > 0 (not the paper) + w·L_align, the error of a ridge probe of c
    predicting the user's LightGCN vector; forward returns the total and its parts (l_neg, l_disp, l_rec, l_align only when used)."""

    def __init__(self, llm: nn.Module, heads: DeftRecHeads, config: DeftRecConfig, ct_id: int) -> None:
        super().__init__()
        self.llm = llm
        self.heads = heads
        self.config = config
        self.ct_id = ct_id
        # a training device only, dropped after joint training (diagnose fits its own probe on held-out users)
        self.probe = RidgeProbe(config.llm.hidden, config.diffusion.item_dim) if config.training.align_weight > 0 else None

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
            predicted = self.probe(cond, batch.user_q)  # [B,d], None until the probe has enough pairs to fit
            parts["l_align"] = (alignment_loss(predicted, batch.user_q) if predicted is not None
                                else torch.zeros((), device=cond.device))
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


class RidgeProbe(nn.Module):
    """A linear probe of c refitted in closed form at every step: ridge regression, with c standardized per dimension,
    from the last `size` (c, user vector) pairs seen (c detached) to their user vectors. Nothing to learn, so its
    gradient into c means something from the first fit; a learned probe barely moves in 60 steps of 8 users (held-out
    R² −0.15 on a run's cached conditions, against 0.23 for the diagnostic's ridge; this one, 256 pairs, λ 1000: 0.15)."""

    def __init__(self, cond_dim: int, user_dim: int, size: int = 256, lam: float = 1000.0, min_pairs: int = 32) -> None:
        super().__init__()
        self.lam, self.min_pairs = lam, min_pairs
        # buffers named running_*: saved with the trainable state for --resume, like normalization statistics
        self.register_buffer("running_conditions", torch.zeros(size, cond_dim))  # [M,D]
        self.register_buffer("running_users", torch.zeros(size, user_dim))  # [M,d]
        self.register_buffer("running_count", torch.zeros((), dtype=torch.long))  # pairs seen

    def forward(self, cond: torch.Tensor, user_q: torch.Tensor) -> torch.Tensor | None:
        """The probe's prediction [B,d] of user_q from cond [B,D] (differentiable in cond), fitted on the pairs before
        this batch, or None while fewer than min_pairs were seen; the batch's pairs then join the bank."""
        size = self.running_conditions.shape[0]
        n = min(int(self.running_count), size)
        predicted = None
        if n >= self.min_pairs:
            x, y = self.running_conditions[:n], self.running_users[:n]  # [n,D], [n,d]
            mean, std = x.mean(0), x.std(0).clamp(min=1e-6)  # [D]
            z = (x - mean) / std  # [n,D]
            y_mean = y.mean(0)  # [d]
            eye = torch.eye(n, device=z.device, dtype=z.dtype)
            weights = z.T @ torch.linalg.solve(z @ z.T + self.lam * eye, y - y_mean)  # [D,d], dual form: an n×n system
            predicted = ((cond.float() - mean) / std) @ weights + y_mean  # [B,d]
        with torch.no_grad():
            rows = (torch.arange(cond.shape[0], device=cond.device) + int(self.running_count)) % size  # [B]
            self.running_conditions[rows] = cond.detach().float()
            self.running_users[rows] = user_q.float()
            self.running_count += cond.shape[0]
        return predicted
