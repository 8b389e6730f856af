"""The recommender facade: prompt → LLM preference text → condition → denoising trajectory → hybrid
retrieval, batched over users. Training, evaluation, export and the explorer all go through it."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from engine.model.deftrec import DeftRecConfig, DeftRecHeads
from engine.model.llm.batches import encode_batch, fit_prompt
from engine.model.llm.continuous import embed_with_continuous_tokens
from engine.model.llm.forward import first_pass_autocast, lm_forward
from engine.model.llm.generation import generate
from engine.model.llm.loading import load_causal_lm
from engine.model.llm.lora import add_placeholder_token, apply_lora
from engine.model.prompts import DEFAULT_INPUT_TEMPLATE, leading_categories, prompt_history
from engine.model.retriever import HybridRetriever, category_parts, extract_category, extract_parts
from engine.model.runtime import cpu_supports_bf16, resolve_precision


@dataclass
class Preference:
    """One user's LLM output: the prompt, the generated sentence, the category found in it, and c."""

    user_idx: int
    prompt: str
    text: str
    category: str | None
    condition: torch.Tensor  # [D]


@dataclass
class PromptInputs:
    """The users' inference prompts, encoded and embedded (left padded, on the model's device)."""

    prompts: list[str]
    kept: list[np.ndarray]  # the history items each prompt shows
    template_ids: list[int]
    input_ids: torch.Tensor  # [B,L]
    attention_mask: torch.Tensor  # [B,L]
    embeds: torch.Tensor  # [B,L,D] continuous tokens spliced in


@dataclass
class UserResult:
    """Everything the explorer shows for one user."""

    preference: Preference
    trajectory: torch.Tensor  # [steps+1, d], noise first, y last
    items: list  # list[Recommendation] with cosine, pi_bonus, score, rank


DRAFT_MAX_BATCH = 8  # larger batches decode the template way: each guess widens every pass of the batch, which at
#                      batch 32 cost more than the passes it saved (2.12 against 2.60 users/s; batch 8: 2.87 / 2.14)


class DeftRecModel:
    """A loaded DeftRec: LLM (+LoRA), heads, CF embeddings, catalog texts and the retriever."""

    def __init__(self, config: DeftRecConfig, llm, tokenizer, ct_id: int, heads: DeftRecHeads,
                 user_q: torch.Tensor, item_q: torch.Tensor, titles: list[str], categories: list[str],
                 histories: list[np.ndarray], seed: int = 0) -> None:
        self.config = config
        self.llm, self.tokenizer, self.ct_id, self.heads = llm, tokenizer, ct_id, heads
        self.user_q, self.item_q = user_q.float(), item_q.float()  # [n_users,d], [n_items,d]
        self.titles, self.categories = titles, categories
        self.histories = histories
        self.seed = seed
        # built on first use: the category trie, the prompts' shared tokens, the response templates as token ids
        self._trie, self._shared, self._templates = None, None, None
        self._guesser = None  # draft decoding's guesses (engine.model.decoding.Guesser), learnt from what the LLM wrote
        self.known_categories = sorted({c for c in categories if c})
        self.category_parts = category_parts(categories)
        self.retriever = self.build_retriever(config.retrieval.item_norm)

    def build_retriever(self, item_norm: float) -> HybridRetriever:
        """The hybrid retriever over the item CF vectors with item weight ‖q_j‖^α, α = item_norm (0: Eq. 14)."""
        return HybridRetriever(self.item_q.numpy(), np.array(self.categories, dtype=object), item_norm=item_norm)

    @property
    def device(self) -> torch.device:
        return next(self.heads.parameters()).device

    def inference_history(self, user: int) -> np.ndarray:
        """The user's prompt history at inference, at most max_history items (engine.model.prompts.prompt_history)."""
        return prompt_history(self.histories[user], self.config.prompt.history, self.config.prompt.max_history,
                              self.seed, user)

    def extract_category(self, text: str) -> str | None:
        """The category the generated text names, in the form π matches: the whole catalog category ('exact') or
        every category part it names ('overlap', 'all')."""
        if self.config.retrieval.pi_match in ("overlap", "all"):
            return extract_parts(text, self.category_parts)
        return extract_category(text, self.known_categories)

    def build_prompts(self, users: list[int], histories: list[np.ndarray], template_ids: list[int],
                      responses: list[str] | None = None) -> tuple[list[str], list[np.ndarray]]:
        """Prompt texts that fit max_length (dropping the oldest history items) and the items they kept."""
        prompts, kept = [], []
        for row, (history, template_id) in enumerate(zip(histories, template_ids)):
            prompt, n_kept = fit_prompt(self.tokenizer, template_id, [self.titles[i] for i in history],
                                        self.config.tokenizer.k, self.config.prompt.max_length,
                                        response=None if responses is None else responses[row],
                                        max_title_chars=self.config.prompt.max_title_chars,
                                        drop_year=self.config.prompt.title_year == "drop",
                                        history_categories=[self.categories[i] for i in history]
                                        if self.config.prompt.item_text == "title-category" else None)
            prompts.append(prompt)
            kept.append(history[len(history) - n_kept:])
        return prompts, kept

    def prompt_lengths(self, users: list[int]) -> list[int]:
        """Token count of each user's inference prompt (to batch users of similar length together)."""
        prompts, _ = self.build_prompts(users, [self.inference_history(u) for u in users],
                                        [DEFAULT_INPUT_TEMPLATE] * len(users))
        return [len(ids) for ids in self.tokenizer(prompts, add_special_tokens=False)["input_ids"]]

    def embed(self, users: list[int], kept: list[np.ndarray], template_ids: list[int],
              input_ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings [B,L,D] with the user's and each history item's continuous tokens spliced in."""
        device = self.device
        user_q = self.user_q[torch.as_tensor(users)].to(device)  # [B,d]
        history_q = [self.item_q[torch.as_tensor(h, dtype=torch.long)].to(device) for h in kept]
        tokens = self.heads.prompt_tokens(user_q, history_q, template_ids)  # [N_ct,D]
        return embed_with_continuous_tokens(self.llm, input_ids.to(device), self.ct_id, tokens)

    def prompt_inputs(self, users: list[int], suffix: str = "", extra_length: int = 0) -> PromptInputs:
        """The users' inference prompts (default template, `suffix` appended) as token ids, mask and embeddings."""
        template_ids = [DEFAULT_INPUT_TEMPLATE] * len(users)
        prompts, kept = self.build_prompts(users, [self.inference_history(u) for u in users], template_ids)
        prompts = [prompt + suffix for prompt in prompts]
        batch = encode_batch(self.tokenizer, prompts, None, self.config.prompt.max_length + extra_length)
        input_ids = batch["input_ids"].to(self.device)  # [B,L]
        embeds = self.embed(users, kept, template_ids, input_ids)  # [B,L,D]
        return PromptInputs(prompts, kept, template_ids, input_ids, batch["attention_mask"].to(self.device), embeds)

    def autocast(self, precision: str | None = None):
        """bf16 autocast over the LLM's fp32 weights where the device has native bf16, as the run (or `precision`) asks:
        every pass (bfloat16), the LLM's next pass alone (mixed: a generation's prompt pass) or none (float32); auto
        resolves as at training (engine.model.runtime.resolve_precision)."""
        device = self.device.type
        precision = resolve_precision(precision or self.config.llm.inference_precision, device)
        native = torch.cuda.is_bf16_supported() if device == "cuda" else cpu_supports_bf16()
        if precision == "mixed":  # the prompt's pass in bf16, the response's passes in float32
            from engine.model.decoding import decoder_of
            return first_pass_autocast(decoder_of(self.llm), device, enabled=native)
        return torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bfloat16" and native)

    @torch.no_grad()
    def describe(self, users: list[int], streamer=None, decoding: str | None = None,
                 precision: str | None = None) -> list[Preference]:
        """Generate each user's preference sentence and compute its condition c (as in training); `decoding`
        (full | template | constrained) and `precision` (float32 | bfloat16) override the run's."""
        self.heads.eval()
        inputs = self.prompt_inputs(users)
        embeds, mask = inputs.embeds, inputs.attention_mask  # [B,L,D], [B,L]
        generation = self.generate(embeds, mask, streamer, decoding, inputs.kept, precision)
        generated, hidden = generation.ids, generation.hidden
        user = None
        if self.config.condition.pool == "response+user":  # the prompt's states at the user's tokens: one more pass
            prompt_hidden = None
            if self.config.condition.source == "hidden":
                with self.autocast(precision):
                    prompt_hidden = lm_forward(self.llm, embeds, mask).last_hidden  # [B,L,D]
            user = self.heads.user_state(prompt_hidden, embeds, inputs.input_ids, self.ct_id,
                                         inputs.template_ids)  # [B,D]
        cond = self.heads.condition(hidden.last_hidden, hidden.response_mask, hidden.input_embeds, user)  # [B,D]
        out = []
        for row, user in enumerate(users):
            text = self.tokenizer.decode(generated[row], skip_special_tokens=True).strip()
            out.append(Preference(user_idx=user, prompt=inputs.prompts[row], text=text,
                                  category=self.extract_category(text),
                                  condition=cond[row].float().cpu()))
        return out

    def leads(self, kept: list[np.ndarray]) -> list[str]:
        """The leading categories of each prompt's items (what a history response names)."""
        return [leading_categories([self.categories[int(i)] for i in items]) or "various" for items in kept]

    def generate(self, embeds: torch.Tensor, mask: torch.Tensor, streamer=None, decoding: str | None = None,
                 kept: list[np.ndarray] | None = None, precision: str | None = None):
        """Greedy responses to prompts embeds [B,L,D] (left padded) with their hidden states, decoded the way the
        run's config says (or `decoding`): full, template, draft (needs the prompts' `kept` items; template without)
        or constrained (engine/model/decoding.py), in the run's precision (or `precision`)."""
        precision = resolve_precision(precision or self.config.llm.inference_precision, self.device.type)
        with self.autocast(precision):
            return self._generate(embeds, mask, streamer, decoding, kept, precision == "mixed")

    def _generate(self, embeds: torch.Tensor, mask: torch.Tensor, streamer, decoding: str | None,
                  kept: list[np.ndarray] | None, mixed: bool):
        """generate() inside its precision's context; `mixed`: the prompt's pass alone is in bf16, so it goes through
        the LLM whole, as in full decoding (no shared head computed apart; guessed responses in a pass of their own)."""
        decoding = decoding or self.config.llm.decoding
        if decoding == "full":
            return generate(self.llm, self.tokenizer, embeds, mask, max_new_tokens=self.config.llm.max_new_tokens,
                            streamer=streamer, with_hidden=True)
        from engine.model.decoding import (
            CategoryTrie,
            Guesser,
            shared_prompt_tokens,
            slot_names,
            template_generate,
            template_tokens,
        )
        if self._shared is None:
            self._shared = shared_prompt_tokens(self.tokenizer, DEFAULT_INPUT_TEMPLATE, self.config.tokenizer.k)
            self._templates = template_tokens(self.tokenizer)
        if decoding == "draft" and kept is not None:  # speculative in small batches; the guesses learn from all
            if self._guesser is None:
                self._guesser = Guesser(self.tokenizer, self._templates)
            leads = self.leads(kept)
            drafts = self._guesser.guesses(leads) if len(kept) <= DRAFT_MAX_BATCH else None
            out = template_generate(self.llm, self.tokenizer, embeds, mask, self.config.llm.max_new_tokens,
                                    self._templates, streamer=streamer, shared_prefix=0 if mixed else self._shared,
                                    drafts=drafts, split_prompt=mixed)
            self._guesser.learn(leads, out.ids, out.followed)
            return out
        trie = None
        if decoding == "constrained":
            if self._trie is None:
                self._trie = CategoryTrie(self.tokenizer, slot_names(self.categories, self.config.prompt.response))
            trie = self._trie
        return template_generate(self.llm, self.tokenizer, embeds, mask, self.config.llm.max_new_tokens,
                                 self._templates, trie=trie, streamer=streamer,
                                 shared_prefix=0 if mixed else self._shared)

    @torch.no_grad()
    def trajectories(self, conditions: torch.Tensor, users: list[int], seed: int | None = None,
                     temperature: float | None = None, guidance: float | None = None) -> torch.Tensor:
        """Denoising trajectories [steps+1, B, d] for conditions [B,D]; each user's noise comes from a generator
        seeded by (seed, user), so a user's result does not depend on the rest of the batch."""
        return denoise(self.heads, conditions, users, self.seed if seed is None else seed, temperature, guidance)

    def scores(self, final: torch.Tensor, categories: list[str | None]) -> torch.Tensor:
        """Hybrid scores s = cos·w·(1+π) of every item [B, n_items] (for evaluation ranks)."""
        return self.retriever.scores_dense(final.float().numpy(), categories, self.config.retrieval.pi, self.config.retrieval.pi_match)

    def recommend(self, users: list[int], history, k: int = 20, seed: int | None = None,
                  streamer=None) -> list[UserResult]:
        """Full pipeline for a batch of users; `history` is the HistoryIndex to mask."""
        prefs = self.describe(users, streamer=streamer)
        paths = self.trajectories(torch.stack([p.condition for p in prefs]), users, seed)  # [S+1,B,d]
        lists = self.retriever.search(paths[-1].numpy(), history, np.asarray(users),
                                      [p.category for p in prefs], k, pi=self.config.retrieval.pi, match=self.config.retrieval.pi_match)
        return [UserResult(preference=p, trajectory=paths[:, row], items=lists[row]) for row, p in enumerate(prefs)]


def denoise(heads: DeftRecHeads, conditions: torch.Tensor, users: list[int], seed: int,
            temperature: float | None = None, guidance: float | None = None) -> torch.Tensor:
    """The reverse diffusion of a batch of users, [steps+1, B, d] on the CPU, user u's noise drawn from a
    generator seeded by (seed, u)."""
    heads.eval()
    device = next(heads.parameters()).device
    paths = []
    for start in range(0, len(users), 4096):
        rows = slice(start, start + 4096)
        generators = [torch.Generator().manual_seed(seed * 1_000_003 + int(user)) for user in users[rows]]
        paths.append(heads.sample(conditions[rows].to(device), generators, temperature, guidance).cpu())  # [S+1,b,d]
    return torch.cat(paths, dim=1)  # [S+1,B,d]


def load_llm(spec: str, *, qlora: bool = False):
    """(model, tokenizer) for a spec: 'smollm2', 'tiny' (a 2-layer random Llama for tests) or a local path."""
    if spec == "tiny":  # the tiny test LLM (engine/model/llm/tiny.py): `--llm tiny` in any process, no files
        from engine.model.llm.tiny import tiny_llama
        return tiny_llama(hidden_size=64, layers=2, heads=4, seed=0)
    # bf16 on GPUs; on these CPUs bf16 measured no faster than fp32 for SmolLM2-135M, so fp32 there
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if torch.cuda.is_available() else "cpu"
    return load_causal_lm(None if spec == "smollm2" else spec, dtype=dtype, device=device, qlora=qlora)


def build_model(config: DeftRecConfig, split, user_q: torch.Tensor, item_q: torch.Tensor, seed: int,
                *, qlora: bool = False, lora_dir=None) -> DeftRecModel:
    """LLM + placeholder + LoRA (fresh, or loaded from lora_dir) + heads, as a DeftRecModel."""
    from peft import PeftModel
    llm, tokenizer = load_llm(config.llm.name, qlora=qlora)
    ct_id = add_placeholder_token(llm, tokenizer)
    if lora_dir is None:
        llm = apply_lora(llm, r=config.llm.lora_r, alpha=config.llm.lora_alpha, dropout=config.llm.lora_dropout)
    else:
        # inference only: fold the adapter into the weights, so a forward costs what the bare LLM's does
        llm = PeftModel.from_pretrained(llm, str(lora_dir), is_trainable=False).merge_and_unload()
    heads = DeftRecHeads(config).to(next(llm.parameters()).device)
    titles, categories, histories = split
    return DeftRecModel(config, llm, tokenizer, ct_id, heads, user_q, item_q, titles, categories, histories,
                        seed=seed)
