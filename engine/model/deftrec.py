"""DeftRec's trainable parts besides the LLM: the continuous tokenizer, the condition head (§2.4.2) and the denoiser
(or the regression head of the 'w/o Diffusion' ablation), built from the run's config (engine/model/config.py)."""

from __future__ import annotations

import torch
from torch import nn

from engine.model.config import ConditionConfig, DeftRecConfig
from engine.model.diffusion import (
    DDPMSchedule,
    Denoiser,
    DenoisingObjective,
    DiffusionConfig,
    RegressionHead,
    guided,
)
from engine.model.prompts import INPUT_TEMPLATES
from engine.model.tokenizer import ContinuousTokenizer


def denoising_objective(config: DeftRecConfig) -> DenoisingObjective:
    """The auxiliary diffusion loss a config asks for ('none' under the w/o BPR ablation)."""
    d = config.diffusion
    return DenoisingObjective(loss=d.aux_loss, dispersive_tau=d.dispersive_tau, neg_norm=d.neg_norm)


def user_slot_first(template_id: int) -> bool:
    """Whether the template names the user before the items (placeholders are spliced in prompt order)."""
    template = INPUT_TEMPLATES[template_id]
    return template.index("{user}") < template.index("{items}")


def user_token_mask(input_ids: torch.Tensor, ct_id: int, k: int, template_ids: list[int]) -> torch.Tensor:
    """[B,L] bool: the prompt positions of each row's K user continuous tokens (its first or last K placeholders)."""
    ct = input_ids == ct_id  # [B,L]
    first = torch.tensor([user_slot_first(t) for t in template_ids], device=input_ids.device).unsqueeze(1)  # [B,1]
    from_start = ct.long().cumsum(1)  # [B,L] placeholders up to here
    from_end = ct.long().flip(1).cumsum(1).flip(1)  # [B,L] placeholders from here to the end
    return ct & torch.where(first, from_start <= k, from_end <= k)  # [B,L]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x [B,L,D] over the positions of mask [B,L] in float32 [B,D]; an empty mask gives 0."""
    m = mask.to(torch.float32).unsqueeze(-1)  # [B,L,1]
    return (x.float() * m).sum(1) / m.sum(1).clamp(min=1.0)  # [B,D]


class ConditionHead(nn.Module):
    """c = norm(mean of the response positions) (§2.4.2), or with pool 'response+user' norm of the mean of that and
    of the prompt's user continuous-token positions (the user's own tokens, which the response states keep little
    of); float32 output [B,D]."""

    def __init__(self, hidden_size: int, config: ConditionConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ConditionConfig()
        self.norm = nn.LayerNorm(hidden_size) if config.norm == "layernorm" else None

    def forward(self, last_hidden: torch.Tensor, response_mask: torch.Tensor,
                input_embeds: torch.Tensor | None = None, user_state: torch.Tensor | None = None) -> torch.Tensor:
        """c [B,D] from last_hidden [B,L,D] (or input_embeds [B,L,D] for source='embedding') and mask [B,L];
        pool 'response+user' also needs user_state [B,D], the same source's mean over the user's tokens."""
        if self.config.source == "embedding":
            if input_embeds is None:
                raise ValueError("the 'embedding' condition source needs input_embeds")
            x = input_embeds  # [B,L,D]
        else:
            x = last_hidden  # [B,L,D]
        mean = masked_mean(x, response_mask)  # [B,D]; an empty response gives 0
        if self.config.pool == "response+user":
            if user_state is None:
                raise ValueError("the 'response+user' condition pool needs user_state")
            mean = (mean + user_state.float()) / 2  # [B,D]
        if self.config.norm == "sigmoid":
            return torch.sigmoid(mean)  # [B,D]
        if self.config.norm == "layernorm":
            return self.norm(mean)  # [B,D]
        return mean  # [B,D]


class DeftRecHeads(nn.Module):
    """Tokenizer + condition head + denoiser (or regression head)."""

    def __init__(self, config: DeftRecConfig) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = ContinuousTokenizer(config.tokenizer)
        self.condition = ConditionHead(config.llm.hidden, config.condition)
        diffusion_config = self.diffusion_config()
        self.denoiser = Denoiser(diffusion_config) if diffusion_config.enabled else None
        self.regressor = None if diffusion_config.enabled else RegressionHead(diffusion_config)

    def diffusion_config(self) -> DiffusionConfig:
        return self.config.diffusion

    def user_state(self, last_hidden: torch.Tensor | None, input_embeds: torch.Tensor, input_ids: torch.Tensor,
                   ct_id: int, template_ids: list[int]) -> torch.Tensor | None:
        """The condition's user part [B,D] under pool 'response+user' (the condition source's mean over each row's
        user tokens, from the [B,L,D] states of prompts input_ids [B,L]), else None."""
        condition = self.config.condition
        if condition.pool != "response+user":
            return None
        x = input_embeds if condition.source == "embedding" else last_hidden  # [B,L,D]
        return masked_mean(x, user_token_mask(input_ids, ct_id, self.config.tokenizer.k, template_ids))  # [B,D]

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
            items = (item_tokens[start:start + size].reshape(-1, self.config.llm.hidden)
                     if size else user_tokens.new_zeros(0, self.config.llm.hidden))  # [n*K,D]
            start += size
            user = user_tokens[row]  # [K,D]
            pieces += [user, items] if user_slot_first(template_id) else [items, user]
        return torch.cat(pieces)  # [N_ct,D]

    def reconstruction_loss(self, user_q: torch.Tensor, item_q: torch.Tensor,
                            generator: torch.Generator | None = None) -> torch.Tensor:
        """σ-VAE reconstruction MSE of a batch's users [B,d] and items [N,d], in units of the targets' RMS."""
        return self.tokenizer.reconstruction_loss(user_q, item_q, generator) / self.config.diffusion.target_scale ** 2  # []

    def sample(self, cond: torch.Tensor, generator: torch.Generator | list[torch.Generator],
               temperature: float | None = None, guidance: float | None = None) -> torch.Tensor:
        """Trajectory [steps+1, B, d] from noise to the preference vector (one state for the regression head);
        temperature / guidance None use the run's sampling_temperature / guidance."""
        if self.regressor is not None:
            return self.regressor(cond.float()).unsqueeze(0)  # [1,B,d]
        tau = self.config.diffusion.sampling_temperature if temperature is None else temperature
        weight = self.config.diffusion.guidance if guidance is None else guidance
        return self.schedule().sample(guided(self.denoiser, weight), cond.float(), generator,
                                      temperature=tau)  # [S+1,B,d]
