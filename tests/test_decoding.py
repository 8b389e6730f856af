"""Template-aware decoding (engine/model/decoding.py) against full greedy decoding
(engine.model.llm.generation.generate)."""

import pytest
import torch

from engine.model.decoding import CategoryTrie, Guess, Guesser, slot_names, template_generate, template_tokens
from engine.model.deftrec import ConditionHead
from engine.model.llm.batches import encode_batch
from engine.model.llm.continuous import embed_with_continuous_tokens
from engine.model.llm.forward import lm_forward
from engine.model.llm.generation import generate
from engine.model.llm.lora import add_placeholder_token
from engine.model.llm.tiny import tiny_llama
from engine.model.prompts import RESPONSE_TEMPLATES, build_prompt, build_response

TITLES = ["Toy Story (1995)", "Heat (1995)", "Star Wars (1977)", "Fargo (1996)"]
# (history shown, response template, category): the trained model answers each prompt with its own response
CASES = [(TITLES[:1], 0, "Comedy|Drama"), (TITLES[1:2], 2, "Action|Thriller"), (TITLES[2:3], 1, "Sci-Fi"),
         (TITLES[3:], 0, "Crime")]


def _batch(model, tok, ct_id, histories, responses=None):
    prompts = [build_prompt(0, h, 2) for h in histories]
    batch = encode_batch(tok, prompts, responses, 256)
    n_ct = int((batch["input_ids"] == ct_id).sum())
    tokens = torch.linspace(-0.5, 0.5, n_ct * model.config.hidden_size).reshape(n_ct, -1)  # fixed continuous tokens
    return batch, embed_with_continuous_tokens(model, batch["input_ids"], ct_id, tokens)


@pytest.fixture(scope="module")
def taught():
    """A tiny Llama taught, in a few hundred steps, to answer each CASES prompt with its templated response."""
    model, tok = tiny_llama(seed=0)
    ct_id = add_placeholder_token(model, tok)
    histories = [h for h, _, _ in CASES]
    responses = [build_response(t, c) for _, t, c in CASES]
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(300):
        batch, embeds = _batch(model, tok, ct_id, histories, responses)
        loss = lm_forward(model, embeds, batch["attention_mask"], batch["labels"]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return model, tok, ct_id


def test_templates_tokenise_around_the_slot():
    model, tok = tiny_llama(seed=0)
    for template, parts in zip(RESPONSE_TEMPLATES, template_tokens(tok)):
        full = tok(" " + template.format(category="Action|Sci-Fi"), add_special_tokens=False)["input_ids"]
        slot = tok(" Action|Sci-Fi", add_special_tokens=False)["input_ids"]
        assert full == list(parts.prefix) + slot + list(parts.suffix)


def test_equals_full_greedy_decoding_where_it_follows_the_template(taught):
    model, tok, ct_id = taught
    batch, embeds = _batch(model, tok, ct_id, [h for h, _, _ in CASES])
    with torch.no_grad():
        full = generate(model, tok, embeds, batch["attention_mask"], max_new_tokens=32, with_hidden=True)
        fast = template_generate(model, tok, embeds, batch["attention_mask"], max_new_tokens=32)
    texts = [tok.decode(ids).strip() for ids in full.ids]
    assert texts == [build_response(t, c) for _, t, c in CASES]  # the teaching took: every row follows
    assert fast.ids == full.ids
    assert fast.followed == [True] * len(CASES)
    head = ConditionHead(model.config.hidden_size)
    c_full = head(full.hidden.last_hidden, full.hidden.response_mask)  # [B,D]
    c_fast = head(fast.hidden.last_hidden, fast.hidden.response_mask)  # [B,D]
    assert torch.allclose(c_fast, c_full, atol=1e-5)
    longest = max(len(ids) for ids in full.ids)
    assert fast.forwards < longest / 2  # prefill, fixed words in one pass each, the slot token by token


def test_shared_prompt_words_go_through_the_llm_once(taught):
    model, tok, ct_id = taught
    from engine.model.decoding import shared_prompt_tokens
    shared = shared_prompt_tokens(tok, 0, 2)
    head = tok("### Input: Given the following purchase history:", add_special_tokens=True)["input_ids"]
    assert 0 < shared <= len(head) + 1
    histories = [h for h, _, _ in CASES] + [TITLES]  # prompts of several lengths: rows are left padded
    batch, embeds = _batch(model, tok, ct_id, histories)
    assert batch["attention_mask"][:, 0].tolist().count(0) >= 1
    with torch.no_grad():
        plain = template_generate(model, tok, embeds, batch["attention_mask"], max_new_tokens=32)
        reused = template_generate(model, tok, embeds, batch["attention_mask"], max_new_tokens=32, shared_prefix=shared)
        wrong = template_generate(model, tok, embeds, batch["attention_mask"], max_new_tokens=32,
                                  shared_prefix=batch["attention_mask"].sum(1).min().item())  # not shared: ignored
    assert reused.ids == plain.ids == wrong.ids and reused.followed == plain.followed
    assert torch.allclose(reused.hidden.last_hidden, plain.hidden.last_hidden, atol=1e-5)


def test_a_row_that_leaves_the_template_is_plain_greedy(taught):
    model, tok, ct_id = taught
    batch, embeds = _batch(model, tok, ct_id, [h for h, _, _ in CASES[:2]])
    with torch.no_grad():  # with an eos never generated the template is left after its last word: greedy goes on
        full = generate(model, tok, embeds, batch["attention_mask"], max_new_tokens=30, eos_token_id=ct_id,
                        with_hidden=True)
        fast = template_generate(model, tok, embeds, batch["attention_mask"], max_new_tokens=30, eos_token_id=ct_id)
    assert fast.ids == full.ids and all(len(ids) == 30 for ids in fast.ids)
    assert fast.followed == [False, False]
    head = ConditionHead(model.config.hidden_size)
    assert torch.allclose(head(fast.hidden.last_hidden, fast.hidden.response_mask),
                          head(full.hidden.last_hidden, full.hidden.response_mask), atol=1e-5)


def test_constrained_slot_names_only_known_categories(taught):
    model, tok, ct_id = taught
    names = ["Comedy", "Drama", "Horror", "Western|War"]  # none of the taught answers is a name here
    trie = CategoryTrie(tok, names)
    assert len(trie) == 4
    batch, embeds = _batch(model, tok, ct_id, [h for h, _, _ in CASES])
    with torch.no_grad():
        fast = template_generate(model, tok, embeds, batch["attention_mask"], trie=trie)
    for ids, (_, template, _) in zip(fast.ids, CASES):
        before, after = RESPONSE_TEMPLATES[template].split("{category}")
        text = tok.decode(ids).strip()
        assert text.startswith(before.strip()) and text.endswith(after.strip())
        assert text[len(before):len(text) - len(after)].strip() in names
    assert not any(fast.followed)  # the constraint overrode greedy decoding in every row


def _slot(tok, category):
    return tuple(tok(" " + category, add_special_tokens=False)["input_ids"])


class _Collect:
    """A streamer that keeps what it is given (the first call is the prompt, as transformers' streamers expect)."""

    def __init__(self):
        self.calls, self.ended = [], False

    def put(self, value):
        self.calls.append(value.reshape(-1).tolist())

    def end(self):
        self.ended = True

    def tokens(self):
        return [t for call in self.calls[1:] for t in call]


def _same_as_full(model, tok, embeds, mask, full, fast):
    """ids, followed and c of a speculative decoding equal full greedy decoding's."""
    assert fast.ids == full.ids
    head = ConditionHead(model.config.hidden_size)
    assert torch.allclose(head(fast.hidden.last_hidden, fast.hidden.response_mask),
                          head(full.hidden.last_hidden, full.hidden.response_mask), atol=1e-5)


def test_right_guesses_cost_one_pass_and_change_nothing(taught):
    model, tok, ct_id = taught
    batch, embeds = _batch(model, tok, ct_id, [h for h, _, _ in CASES])
    mask = batch["attention_mask"]
    guesses = [Guess(t, (_slot(tok, c),)) for _, t, c in CASES]
    with torch.no_grad():
        full = generate(model, tok, embeds, mask, max_new_tokens=32, with_hidden=True)
        fast = template_generate(model, tok, embeds, mask, max_new_tokens=32, drafts=guesses)
    _same_as_full(model, tok, embeds, mask, full, fast)
    assert fast.followed == [True] * len(CASES)
    assert fast.forwards == 1  # the prompts and the guessed responses in one pass, nothing decoded after it


def test_wrong_guesses_are_corrected_and_change_nothing(taught):
    model, tok, ct_id = taught
    batch, embeds = _batch(model, tok, ct_id, [h for h, _, _ in CASES])
    mask = batch["attention_mask"]
    with torch.no_grad():
        full = generate(model, tok, embeds, mask, max_new_tokens=32, with_hidden=True)
        plain = template_generate(model, tok, embeds, mask, max_new_tokens=32)
        # a wrong template (nothing kept), a wrong first slot with the right one second, a slot that begins right and
        # ends wrong, tokens that are no slot at all
        guesses = [Guess(1, (_slot(tok, "Comedy|Drama"),)),
                   Guess(2, (_slot(tok, "Western"), _slot(tok, "Action|Thriller"))),
                   Guess(1, (_slot(tok, "Sci-Fi|Horror"),)),
                   Guess(0, ((5, 6, 7),))]
        streamed = []
        for first in range(len(CASES)):  # each row first in its batch: the streamer follows row 0
            order = [first] + [r for r in range(len(CASES)) if r != first]
            streamer = _Collect()
            out = template_generate(model, tok, embeds[order], mask[order], max_new_tokens=32,
                                    drafts=[guesses[r] for r in order], streamer=streamer)
            streamed.append(streamer.tokens() == out.ids[0] and streamer.ended)
        assert streamed == [True] * len(CASES)  # the kept guesses and the decoded tokens, in order, once each
        fast = template_generate(model, tok, embeds, mask, max_new_tokens=32, drafts=guesses)
        empty = template_generate(model, tok, embeds, mask, max_new_tokens=32, drafts=[Guess(0, ())] * len(CASES))
    for out in (fast, empty):
        _same_as_full(model, tok, embeds, mask, full, out)
        assert out.followed == [True] * len(CASES)
    assert fast.forwards < plain.forwards


def test_guesses_on_a_row_that_leaves_the_template(taught):
    model, tok, ct_id = taught
    batch, embeds = _batch(model, tok, ct_id, [h for h, _, _ in CASES[:2]])
    mask = batch["attention_mask"]
    guesses = [Guess(t, (_slot(tok, c),)) for _, t, c in CASES[:2]]
    with torch.no_grad():  # eos is never generated: greedy goes on after the template's last word
        full = generate(model, tok, embeds, mask, max_new_tokens=30, eos_token_id=ct_id, with_hidden=True)
        fast = template_generate(model, tok, embeds, mask, max_new_tokens=30, eos_token_id=ct_id, drafts=guesses)
    _same_as_full(model, tok, embeds, mask, full, fast)
    assert fast.followed == [False, False]


def test_guesser_learns_the_template_and_scores_its_candidates():
    _, tok = tiny_llama(seed=0)
    templates = template_tokens(tok)
    guesser = Guesser(tok, templates, common=2)
    first = guesser.guesses(["Drama|Comedy"])[0]  # nothing learnt: template 0, the history's own categories
    assert first == Guess(0, (_slot(tok, "Drama|Comedy"),))

    def written(t, category):
        return list(templates[t].prefix) + list(_slot(tok, category)) + list(templates[t].suffix)
    # what the LLM wrote: template 2 three times; for 'Drama|Comedy' histories 'Drama|Action' twice, once their own
    guesser.learn(["Drama|Comedy", "Drama|Comedy", "Drama|Comedy", "Crime"],
                  [written(2, "Drama|Action"), written(2, "Drama|Action"), written(2, "Drama|Comedy"),
                   written(0, "Drama|Action")], [True, True, True, False])  # the last did not follow: not counted
    assert guesser.template_counts == [0, 0, 3] and guesser.total == 3 and guesser.own_hits == 1
    drama, crime = guesser.guesses(["Drama|Comedy", "Crime"])
    assert drama.template == crime.template == 2
    # Drama|Action: 2/3 of this lead's; Drama|Comedy: 1/3 here, and own 1/3
    assert drama.slots == (_slot(tok, "Drama|Action"), _slot(tok, "Drama|Comedy"))
    # an unseen lead: the common slots by overall share (2/3, 1/3), its own categories at the own hit rate (1/3)
    assert crime.slots == (_slot(tok, "Drama|Action"), _slot(tok, "Crime"), _slot(tok, "Drama|Comedy"))
    assert drama.slot_after(list(_slot(tok, "Drama|Comedy"))[:1]) == _slot(tok, "Drama|Action")


def test_slot_names_by_response_kind():
    categories = ["Action|Sci-Fi", "Drama", None, "Drama|Action"]
    assert slot_names(categories, "target") == ["Action|Sci-Fi", "Drama", "Drama|Action"]
    history = slot_names(categories, "history")
    assert history[:3] == ["Action", "Drama", "Sci-Fi"] and "Sci-Fi|Drama" in history and len(history) == 3 + 6


def test_mixed_precision_runs_the_prompt_pass_alone_in_bf16_and_keeps_the_equality(taught):
    """With the prompt's pass in bf16 and the response's in float32, template decoding still equals full decoding."""
    from engine.model.decoding import decoder_of
    from engine.model.llm.forward import first_pass_autocast
    model, tok, ct_id = taught
    batch, embeds = _batch(model, tok, ct_id, [h for h, _, _ in CASES])
    mask = batch["attention_mask"]
    dtypes = []
    probe = decoder_of(model).layers[0].mlp.down_proj.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    try:
        with torch.no_grad():
            plain = generate(model, tok, embeds, mask, max_new_tokens=32, with_hidden=True)
            with first_pass_autocast(decoder_of(model), "cpu"):
                full = generate(model, tok, embeds, mask, max_new_tokens=32, with_hidden=True)
            dtypes_full, dtypes[:] = list(dtypes), []
            with first_pass_autocast(decoder_of(model), "cpu"):
                fast = template_generate(model, tok, embeds, mask, max_new_tokens=32)
    finally:
        probe.remove()
    assert dtypes[0] == torch.bfloat16 and set(dtypes[1:]) == {torch.float32}  # the prompt's pass alone in bf16
    assert dtypes_full.count(torch.bfloat16) == 1  # full decoding too (the plain pass before it: none)
    _same_as_full(model, tok, embeds, mask, full, fast)
    head = ConditionHead(model.config.hidden_size)
    assert not torch.equal(head(full.hidden.last_hidden, full.hidden.response_mask),
                           head(plain.hidden.last_hidden, plain.hidden.response_mask))  # bf16 did change the prompt
    with first_pass_autocast(decoder_of(model), "cpu"):
        pass  # nothing ran: no autocast is left behind
    assert not torch.is_autocast_enabled("cpu")


def test_guesses_after_a_bf16_prompt_pass_equal_full_decoding_in_the_same_precision(taught):
    """split_prompt: the prompt in a bf16 pass of its own, the guesses in float32 after it; right guesses cost 2 passes."""
    from engine.model.decoding import decoder_of
    from engine.model.llm.forward import first_pass_autocast
    model, tok, ct_id = taught
    batch, embeds = _batch(model, tok, ct_id, [h for h, _, _ in CASES])
    mask = batch["attention_mask"]
    right = [Guess(t, (_slot(tok, c),)) for _, t, c in CASES]
    wrong = [Guess((t + 1) % 3, (_slot(tok, "Western"),)) for _, t, _ in CASES]
    with torch.no_grad():
        with first_pass_autocast(decoder_of(model), "cpu"):
            full = generate(model, tok, embeds, mask, max_new_tokens=32, with_hidden=True)
        for guesses in (right, wrong):
            with first_pass_autocast(decoder_of(model), "cpu"):
                fast = template_generate(model, tok, embeds, mask, max_new_tokens=32, drafts=guesses, split_prompt=True)
            _same_as_full(model, tok, embeds, mask, full, fast)
            assert fast.followed == [True] * len(CASES)
            if guesses is right:
                assert fast.forwards == 2  # the prompt's pass, then the guessed responses' pass
