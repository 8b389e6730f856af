"""Forward passes of the LLM: the LM loss over the response with the last hidden states, and a teacher-forced
pass over prompt + response."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from engine.model.llm.batches import IGNORE_INDEX, position_ids_from_mask


@dataclass
class LMOutput:
    """The LM loss over labelled positions (None without labels) and the last hidden states [B,L,D]."""

    loss: torch.Tensor | None
    last_hidden: torch.Tensor


def _accepts_logits_to_keep(model: nn.Module) -> bool:
    """Whether the underlying causal-LM forward takes logits_to_keep."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def lm_forward(model: nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
               labels: torch.Tensor | None = None) -> LMOutput:
    """One forward pass; loss = mean token cross-entropy over labels != -100, logits computed only where needed."""
    length = inputs_embeds.shape[1]
    keep = 1
    if labels is not None:
        labelled = (labels != IGNORE_INDEX).any(0).nonzero()
        if len(labelled):
            keep = length - int(labelled[0]) + 1  # from the position that predicts the first label to the end
    use_keep = _accepts_logits_to_keep(model)
    kwargs = {"logits_to_keep": keep} if use_keep else {}
    out = model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask), output_hidden_states=True, use_cache=False,
                **kwargs)
    last_hidden = out.hidden_states[-1]  # [B,L,D], after the final norm
    loss = None
    if labels is not None and not (labels != IGNORE_INDEX).any():
        loss = last_hidden.sum() * 0.0  # nothing to predict: a zero that keeps the graph
    elif labels is not None:
        logits = out.logits[:, -keep:] if not use_keep else out.logits  # [B,keep,V]
        target = labels[:, length - keep + 1:]  # [B,keep-1]
        loss = nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                           target.reshape(-1), ignore_index=IGNORE_INDEX)
    return LMOutput(loss=loss, last_hidden=last_hidden)


@dataclass
class ResponseHidden:
    """Teacher-forced pass over prompt + response: last_hidden and input_embeds [B,L,D], response_mask [B,L]."""

    last_hidden: torch.Tensor
    response_mask: torch.Tensor
    input_embeds: torch.Tensor
    attention_mask: torch.Tensor


def response_hidden(model: nn.Module, prompt_embeds: torch.Tensor, prompt_mask: torch.Tensor,
                    response_ids: list[list[int]], pad_token_id: int) -> ResponseHidden:
    """Run prompt_embeds [B,Lp,D] (left padded, mask [B,Lp]) + each row's generated ids (no eos), right padded."""
    b = prompt_embeds.shape[0]
    r = max((len(ids) for ids in response_ids), default=0)
    resp = torch.full((b, r), pad_token_id, dtype=torch.long, device=prompt_embeds.device)  # [B,R]
    resp_mask = torch.zeros(b, r, dtype=torch.long, device=prompt_embeds.device)  # [B,R]
    for i, ids in enumerate(response_ids):
        if ids:
            resp[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            resp_mask[i, :len(ids)] = 1
    resp_embeds = model.get_input_embeddings()(resp).to(prompt_embeds.dtype)  # [B,R,D]
    embeds = torch.cat([prompt_embeds, resp_embeds], dim=1)  # [B,Lp+R,D]
    mask = torch.cat([prompt_mask.long(), resp_mask], dim=1)  # [B,Lp+R]
    response_mask = torch.cat([torch.zeros_like(prompt_mask, dtype=torch.bool), resp_mask.bool()], dim=1)  # [B,Lp+R]
    out = lm_forward(model, embeds, mask)
    return ResponseHidden(last_hidden=out.last_hidden, response_mask=response_mask, input_embeds=embeds,
                          attention_mask=mask)


@contextmanager
def first_pass_autocast(decoder: nn.Module, device_type: str, enabled: bool = True) -> Iterator[None]:
    """bf16 autocast for the decoder's next forward only (a generation's prompt pass); every later pass in float32.

    The prompt pass is most of a batched generation's work; the response's passes stay in float32, so feeding a
    template's fixed words in one pass gives what feeding them one at a time does, as in float32 (docs/inference.md)."""
    state: dict = {"ctx": None, "done": not enabled}

    def before(_module, _args) -> None:
        if not state["done"]:
            state["ctx"] = torch.autocast(device_type, dtype=torch.bfloat16)
            state["ctx"].__enter__()

    def after(_module, _args, _out) -> None:
        if state["ctx"] is not None:
            state["ctx"].__exit__(None, None, None)
            state["ctx"], state["done"] = None, True

    handles = [decoder.register_forward_pre_hook(before), decoder.register_forward_hook(after)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        if state["ctx"] is not None:  # the pass raised: leave no autocast behind
            state["ctx"].__exit__(None, None, None)
