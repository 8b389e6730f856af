"""The tiny test LLM: a randomly initialized 2-layer Llama and an offline BPE tokenizer trained in memory on
the template words, built from a config, never downloaded. Production code reaches it only by name: `--llm tiny`
(a run's `llm.name`) goes through engine/model/recommender.py `load_llm`, in any process (the CLI in a
subprocess included), so it lives here rather than under tests/."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from engine.model.llm.convert import offline_for_loading
from engine.model.llm.loading import prepare_tokenizer
from engine.model.prompts import INPUT_TEMPLATES, RESPONSE_TEMPLATES, ROLE_PLAY, build_prompt

_TINY_WORDS = (
    "the a an of and or to in on with for by at from is are was be this that it its their they them user users "
    "item items movie movies film films product products title titles history list purchase purchased "
    "interaction interactions interacted engagement previous past light account taking analyzing analysing "
    "analysis examination expected preferences preference prefer interests interested likely potential inclined "
    "like will would might may can could what which describe decide help wonder find considering according given "
    "following predict category favored lean towards based upon input response genre genres action adventure "
    "animation children comedy crime documentary drama fantasy noir horror musical mystery romance sci-fi thriller "
    "war western unknown rock pop jazz electronic metal indie beauty software game games book books music song "
    "love story star wars toy return night day man woman life world king city house time dark last first new "
    "you expert entrusted responsibility recommending perfect our example format recommendations now please "
    "provide content side information brand"
)


def _tiny_corpus() -> list[str]:
    """Sentences that cover the prompt and response templates, digits and common title words."""
    lines = list(INPUT_TEMPLATES) + list(RESPONSE_TEMPLATES) + [ROLE_PLAY]
    lines += [build_prompt(i, ["Toy Story (1995)", "Heat (1995)"], 2) for i in range(len(INPUT_TEMPLATES))]
    lines += [_TINY_WORDS, _TINY_WORDS.title(), " ".join(str(i) for i in range(2025)),
              "### Input: ### Response: ( ) [ ] , . : ; ' ! ? - | & / \" 0 1 2 3 4 5 6 7 8 9"]
    return lines * 3


def tiny_tokenizer(vocab_size: int | None = None) -> PreTrainedTokenizerFast:
    """An offline byte-level BPE tokenizer trained in memory on the template words (deterministic, any text)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = ["<unk>", "<pad>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size or 768, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_tiny_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", padding_side="left")
    return prepare_tokenizer(fast)


def tiny_llama(tokenizer_vocab_size: int | None = None, hidden_size: int = 64, layers: int = 2, heads: int = 4,
               seed: int = 0) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A randomly initialized small LlamaForCausalLM and its offline tokenizer, for fast tests (eval mode)."""
    offline_for_loading()
    tokenizer = tiny_tokenizer(tokenizer_vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=2048, tie_word_embeddings=True, initializer_range=0.1,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval(), tokenizer
