"""Continuous tokens spliced into the LLM's input embeddings at the placeholders (§2.4.1)."""

from __future__ import annotations

import torch
from torch import nn


def splice_continuous_tokens(inputs_embeds: torch.Tensor, input_ids: torch.Tensor, ct_id: int,
                             tokens: torch.Tensor) -> torch.Tensor:
    """Replace, row-major, each position where input_ids == ct_id by the next row of tokens (out of place)."""
    mask = input_ids == ct_id  # [B,L]
    n = int(mask.sum())
    if tokens.dim() != 2 or tokens.shape[0] != n or tokens.shape[1] != inputs_embeds.shape[-1]:
        raise ValueError(f"the batch has {n} placeholders of width {inputs_embeds.shape[-1]}, "
                         f"but tokens has shape {tuple(tokens.shape)}")
    where = mask.nonzero(as_tuple=True)  # row-major (sample, position) pairs
    return inputs_embeds.index_put(where, tokens.to(inputs_embeds.dtype))  # [B,L,D]


def embed_with_continuous_tokens(model: nn.Module, input_ids: torch.Tensor, ct_id: int,
                                 tokens: torch.Tensor) -> torch.Tensor:
    """The model's input embeddings of input_ids [B,L] with the placeholders replaced by tokens [N_ct,D]."""
    embeds = model.get_input_embeddings()(input_ids)  # [B,L,D]
    return splice_continuous_tokens(embeds, input_ids, ct_id, tokens)  # [B,L,D]
