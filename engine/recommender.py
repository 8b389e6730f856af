"""The recommender facade: prompt → LLM preference text → condition → denoising trajectory → hybrid
retrieval, batched over users. Training, evaluation, export and the explorer all go through it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.deftrec import DeftRecConfig, DeftRecHeads
from engine.llm import embed_with_continuous_tokens, encode_batch, fit_prompt, generate, response_hidden
from engine.prompts import DEFAULT_INPUT_TEMPLATE
from engine.retriever import HybridRetriever, extract_category


@dataclass
class Preference:
    """One user's LLM output: the prompt, the generated sentence, the category found in it, and c."""

    user_idx: int
    prompt: str
    text: str
    category: str | None
    condition: torch.Tensor  # [D]


@dataclass
class UserResult:
    """Everything the explorer shows for one user."""

    preference: Preference
    trajectory: torch.Tensor  # [steps+1, d], noise first, y last
    items: list  # list[Recommendation] with cosine, pi_bonus, score, rank


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
        self.known_categories = sorted({c for c in categories if c})
        self.retriever = HybridRetriever(item_q.float().numpy(), np.array(categories, dtype=object))

    @property
    def device(self) -> torch.device:
        return next(self.heads.parameters()).device

    def inference_history(self, user: int) -> np.ndarray:
        """The user's prompt history at inference: a seeded shuffle of the unique train items, at most max_history."""
        unique = np.unique(self.histories[user])
        rng = np.random.default_rng([self.seed, user])
        return rng.permutation(unique)[: self.config.max_history]

    def build_prompts(self, users: list[int], histories: list[np.ndarray], template_ids: list[int],
                      responses: list[str] | None = None) -> tuple[list[str], list[np.ndarray]]:
        """Prompt texts that fit max_length (dropping the oldest history items) and the items they kept."""
        prompts, kept = [], []
        for row, (history, template_id) in enumerate(zip(histories, template_ids)):
            prompt, n_kept = fit_prompt(self.tokenizer, template_id, [self.titles[i] for i in history],
                                        self.config.k, self.config.max_length,
                                        response=None if responses is None else responses[row])
            prompts.append(prompt)
            kept.append(history[len(history) - n_kept:])
        return prompts, kept

    def embed(self, users: list[int], kept: list[np.ndarray], template_ids: list[int],
              input_ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings [B,L,D] with the user's and each history item's continuous tokens spliced in."""
        device = self.device
        user_q = self.user_q[torch.as_tensor(users)].to(device)  # [B,d]
        history_q = [self.item_q[torch.as_tensor(h, dtype=torch.long)].to(device) for h in kept]
        tokens = self.heads.prompt_tokens(user_q, history_q, template_ids)  # [N_ct,D]
        return embed_with_continuous_tokens(self.llm, input_ids.to(device), self.ct_id, tokens)

    @torch.no_grad()
    def describe(self, users: list[int], streamer=None) -> list[Preference]:
        """Generate each user's preference sentence and compute its condition c (as in training)."""
        self.heads.eval()
        template_ids = [DEFAULT_INPUT_TEMPLATE] * len(users)
        prompts, kept = self.build_prompts(users, [self.inference_history(u) for u in users], template_ids)
        batch = encode_batch(self.tokenizer, prompts, None, self.config.max_length)
        embeds = self.embed(users, kept, template_ids, batch["input_ids"])  # [B,L,D]
        mask = batch["attention_mask"].to(embeds.device)
        generated = generate(self.llm, self.tokenizer, embeds, mask, max_new_tokens=self.config.max_new_tokens,
                             streamer=streamer)
        hidden = response_hidden(self.llm, embeds, mask, generated, self.tokenizer.pad_token_id)
        cond = self.heads.condition(hidden.last_hidden, hidden.response_mask, hidden.input_embeds)  # [B,D]
        out = []
        for row, user in enumerate(users):
            text = self.tokenizer.decode(generated[row], skip_special_tokens=True).strip()
            out.append(Preference(user_idx=user, prompt=prompts[row], text=text,
                                  category=extract_category(text, self.known_categories),
                                  condition=cond[row].float().cpu()))
        return out

    @torch.no_grad()
    def trajectories(self, conditions: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Denoising trajectories [steps+1, B, d] for conditions [B,D]."""
        self.heads.eval()
        return self.heads.sample(conditions.to(self.device), generator).cpu()

    def scores(self, final: torch.Tensor, categories: list[str | None]) -> torch.Tensor:
        """Hybrid scores s = cos·(1+π) of every item [B, n_items] (for evaluation ranks)."""
        return self.retriever.scores_dense(final.float().numpy(), categories, self.config.pi, self.config.pi_match)

    def recommend(self, users: list[int], history, k: int = 20, seed: int | None = None,
                  streamer=None) -> list[UserResult]:
        """Full pipeline for a batch of users; `history` is the HistoryIndex to mask."""
        prefs = self.describe(users, streamer=streamer)
        generator = torch.Generator().manual_seed(self.seed if seed is None else seed)
        paths = self.trajectories(torch.stack([p.condition for p in prefs]), generator)  # [S+1,B,d]
        lists = self.retriever.search(paths[-1].numpy(), history, np.asarray(users),
                                      [p.category for p in prefs], k, pi=self.config.pi, match=self.config.pi_match)
        return [UserResult(preference=p, trajectory=paths[:, row], items=lists[row]) for row, p in enumerate(prefs)]
