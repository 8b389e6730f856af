"""Prompts and responses as left-padded token batches (labels on the response only), the prompt fitted to a
maximum length by dropping the oldest history, and positions that ignore the padding."""

from __future__ import annotations

import torch

from data.errors import DeftrecError
from engine.model.prompts import MAX_TITLE_CHARS, build_prompt

IGNORE_INDEX = -100


def _prompt_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of a prompt, with the tokenizer's own special tokens (e.g. a BOS) added."""
    return tokenizer(prompt, add_special_tokens=True)["input_ids"]


def _response_ids(tokenizer, response: str) -> list[int]:
    """Token ids of a response as it continues '### Response:' (with its leading space), no special tokens."""
    text = response if response[:1].isspace() else " " + response
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_batch(tokenizer, prompts: list[str], responses: list[str] | None, max_length: int) -> dict:
    """Left-padded tensors: input_ids, attention_mask, labels (response + eos only) and response_mask [B,L]."""
    if responses is not None and len(responses) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    eos = tokenizer.eos_token_id
    rows: list[tuple[list[int], list[int]]] = []
    for i, prompt in enumerate(prompts):
        p = _prompt_ids(tokenizer, prompt)
        r = _response_ids(tokenizer, responses[i]) + [eos] if responses is not None else []
        if len(p) + len(r) > max_length:
            raise DeftrecError(
                f"prompt {i} needs {len(p) + len(r)} tokens, more than max_length={max_length}",
                hint="raise the maximum length or build the prompt with fit_prompt, which drops the oldest history")
        rows.append((p, r))
    length = max(len(p) + len(r) for p, r in rows)
    b = len(rows)
    input_ids = torch.full((b, length), tokenizer.pad_token_id, dtype=torch.long)  # [B,L]
    attention_mask = torch.zeros(b, length, dtype=torch.long)  # [B,L]
    labels = torch.full((b, length), IGNORE_INDEX, dtype=torch.long)  # [B,L]
    response_mask = torch.zeros(b, length, dtype=torch.bool)  # [B,L]
    for i, (p, r) in enumerate(rows):
        n = len(p) + len(r)
        input_ids[i, length - n:] = torch.tensor(p + r, dtype=torch.long)
        attention_mask[i, length - n:] = 1
        if r:
            labels[i, length - len(r):] = torch.tensor(r, dtype=torch.long)
            response_mask[i, length - len(r):length - 1] = True  # the response text, not its eos
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
            "response_mask": response_mask}


def fit_prompt(tokenizer, input_template_id: int, history_titles: list[str], k: int, max_length: int,
               response: str | None = None, dataset_name: str | None = None,
               max_title_chars: int = MAX_TITLE_CHARS, drop_year: bool = False,
               history_categories: list[str | None] | None = None) -> tuple[str, int]:
    """(prompt, n_kept): the prompt over the last n_kept titles (and their categories, where given), dropping from
    the left until prompt+response fits."""
    extra = len(_response_ids(tokenizer, response)) + 1 if response is not None else 0
    start = 0
    while True:
        prompt = build_prompt(input_template_id, history_titles[start:], k, dataset_name,
                              max_title_chars=max_title_chars, drop_year=drop_year,
                              categories=None if history_categories is None else history_categories[start:])
        if len(_prompt_ids(tokenizer, prompt)) + extra <= max_length:
            return prompt, len(history_titles) - start
        if start >= len(history_titles):
            raise DeftrecError(f"even a prompt without history does not fit max_length={max_length}",
                               hint="raise the maximum length")
        start += 1


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that ignore left padding, as HF generate computes them: cumsum(mask) - 1, 0 on pads."""
    pos = attention_mask.long().cumsum(-1) - 1  # [B,L]
    return pos.masked_fill(attention_mask == 0, 0)  # [B,L]
