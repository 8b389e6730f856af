"""The continuous-token placeholder added to the vocabulary, and the LoRA adapters (§2.4.1): put on, folded
in."""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from transformers import PreTrainedModel

from data.errors import DeftrecError
from engine.model.llm.convert import offline_for_loading
from engine.model.prompts import CT


def add_placeholder_token(model: PreTrainedModel, tokenizer) -> int:
    """Add CT as a special token (idempotent), grow the embeddings with mean-initialized rows; return its id."""
    from tokenizers import AddedToken

    if CT not in tokenizer.get_vocab():
        # lstrip: 'title <ct>' encodes as 'title', '<ct>' (the space is absorbed, no stray space token)
        tokenizer.add_tokens([AddedToken(CT, special=True, lstrip=True, normalized=False)], special_tokens=True)
    ct_id = tokenizer.convert_tokens_to_ids(CT)
    old = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > old:
        with torch.random.fork_rng(devices=[]):  # the resize's random init must not move the caller's RNG
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():  # deterministic init: the mean of the old rows (the row is always spliced over)
            emb = model.get_input_embeddings().weight  # [V', D]
            emb[old:] = emb[:old].float().mean(0).to(emb.dtype)
            out = model.get_output_embeddings()
            if out is not None and out.weight.data_ptr() != emb.data_ptr():
                out.weight[old:] = out.weight[:old].float().mean(0).to(out.weight.dtype)
    return ct_id


@contextlib.contextmanager
def merged_lora(model: nn.Module):
    """LoRA folded into the base weights for the block (generation then costs what the bare model's does: 1.24× the
    users/s of the unmerged adapter, measured on one CPU thread), unfolded after; a 4-bit base stays unmerged."""
    quantized = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
    if quantized or not hasattr(model, "merge_adapter"):
        yield model
        return
    model.merge_adapter()
    try:
        yield model
    finally:
        model.unmerge_adapter()


def lora_target_modules(model: nn.Module) -> list[str]:
    """Leaf names of every linear projection inside the transformer blocks (attention and MLP), lm_head excluded."""
    from transformers.pytorch_utils import Conv1D

    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = set()
    for name, module in model.named_modules():
        if module is out or name.split(".")[-1] in {"lm_head", "embed_out", "output"}:
            continue
        if isinstance(module, (nn.Linear, Conv1D)):
            names.add(name.split(".")[-1])
    if not names:
        raise DeftrecError("the model has no linear projections to put LoRA adapters on")
    return sorted(names)


def apply_lora(model: PreTrainedModel, r: int = 16, alpha: int = 32, dropout: float = 0.05):
    """Wrap the model in a peft LoRA over all attention and MLP projections (q,k,v,o,gate,up,down for Llama)."""
    offline_for_loading()
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=lora_target_modules(model),
                        bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)
