"""Greedy generation of the preference sentence from spliced input embeddings, with the response's last hidden
states captured during decoding."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationConfig

from engine.model.llm.forward import ResponseHidden, response_hidden
from engine.model.prompts import CT


@dataclass
class Generation:
    """Greedy ids per row (eos dropped) and, when asked, the response's last hidden states from the same pass."""

    ids: list
    hidden: ResponseHidden | None = None


class _LimitedStreamer:
    """Passes the prompt and the first `limit` new tokens to a streamer, and nothing after."""

    def __init__(self, streamer, limit: int) -> None:
        self.streamer, self.limit, self.calls = streamer, limit, 0

    def put(self, value) -> None:
        self.calls += 1
        if self.calls <= self.limit + 1:  # the first call carries the prompt
            self.streamer.put(value)

    def end(self) -> None:
        self.streamer.end()


def placeholder_id(tokenizer) -> int | None:
    """The placeholder token's id, None where the tokenizer has none (a lookup: get_vocab builds the whole vocabulary,
    26 ms per call for SmolLM2's)."""
    token = tokenizer.convert_tokens_to_ids(CT)
    return None if token is None or token == tokenizer.unk_token_id else int(token)


def _final_norm(model: nn.Module) -> nn.Module | None:
    """The module whose output is the model's last hidden state (the decoder's final norm), when it has one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, "model", None)
    norm = getattr(decoder, "norm", None)
    return norm if isinstance(norm, nn.Module) else None


def generate(model: nn.Module, tokenizer, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
             max_new_tokens: int = 24, streamer=None, eos_token_id: int | list[int] | None = None,
             with_hidden: bool = False) -> Generation:
    """Greedy new tokens from left-padded inputs_embeds [B,L,D]; with_hidden also returns the last hidden states
    over the generated tokens, captured during decoding (each token's state when it is fed back), which equals a
    second teacher-forced pass over prompt + response at the cost of one extra decoding step."""
    eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    eos_set = set(eos) if isinstance(eos, (list, tuple)) else {eos}
    ct = placeholder_id(tokenizer)
    suppress = [ct] if ct is not None else None  # never generate the placeholder itself
    norm = _final_norm(model) if with_hidden else None
    if with_hidden and norm is None:  # no hook point: fall back to the teacher-forced second pass
        ids = generate(model, tokenizer, inputs_embeds, attention_mask, max_new_tokens, streamer, eos_token_id).ids
        return Generation(ids, response_hidden(model, inputs_embeds, attention_mask, ids, tokenizer.pad_token_id))
    steps = max_new_tokens + (1 if norm is not None else 0)  # one more step feeds the last kept token
    config = GenerationConfig(max_new_tokens=steps, do_sample=False, num_beams=1,
                              pad_token_id=tokenizer.pad_token_id, eos_token_id=eos,
                              suppress_tokens=suppress)
    captured: list[torch.Tensor] = []
    handle = norm.register_forward_hook(lambda _m, _i, out: captured.append(out[:, -1])) if norm else None
    if streamer is not None and norm is not None:
        streamer = _LimitedStreamer(streamer, max_new_tokens)  # the extra step's token is not part of the text
    was_training = model.training
    if was_training:  # switching to eval mode walks every module: 8 ms a call for SmolLM2; a loaded run is in it already
        model.eval()
    try:
        with torch.no_grad():
            out = model.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                 generation_config=config, streamer=streamer)  # [B,new] (new tokens only)
    finally:
        if was_training:
            model.train()
        if handle is not None:
            handle.remove()
    ids = []
    for row in out.tolist():
        kept = []
        for t in row[:max_new_tokens]:
            if t in eos_set:
                break
            kept.append(t)
        ids.append(kept)
    if norm is None:
        return Generation(ids)
    # captured[0] is the prefill's last position; captured[j + 1] is the state of generated token j  [B,D] each
    b, width = inputs_embeds.shape[0], max((len(r) for r in ids), default=0)
    states = torch.stack(captured[1:1 + width], dim=1) if width else inputs_embeds.new_zeros(b, 0, inputs_embeds.shape[-1])
    response_mask = torch.zeros(b, width, dtype=torch.bool, device=states.device)  # [B,R]
    resp = torch.full((b, width), tokenizer.pad_token_id, dtype=torch.long, device=states.device)  # [B,R]
    for i, row in enumerate(ids):
        response_mask[i, :len(row)] = True
        resp[i, :len(row)] = torch.tensor(row, dtype=torch.long)
    resp_embeds = model.get_input_embeddings()(resp).to(inputs_embeds.dtype)  # [B,R,D]
    hidden = ResponseHidden(last_hidden=states, response_mask=response_mask, input_embeds=resp_embeds,
                            attention_mask=response_mask.long())
    return Generation(ids, hidden)
