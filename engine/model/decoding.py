"""Template-aware greedy decoding: the response templates' fixed words go through the LLM in one pass each, and only
the words the model chooses (the template's first word and the {category} slot) are decoded token by token.

The result equals full greedy decoding (engine.model.llm.generation.generate) wherever that decoding follows a
template: the fixed words are the tokens greedy decoding would have chosen there, and each token's last hidden state
is the one it gets when fed, so c is the same up to float error. A row whose greedy choice leaves the templates (a first word no
template starts with, eos inside the slot, a word other than eos after the template's last word) continues as plain
greedy decoding, and `followed` says so. With a CategoryTrie the slot is restricted to the dataset's category names
(constrained decoding, an option: it changes the text wherever free decoding would name something else)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from engine.model.llm.forward import ResponseHidden
from engine.model.llm.generation import Generation, placeholder_id
from engine.model.prompts import RESPONSE_TEMPLATES

SLOT = "{category}"


@dataclass(frozen=True)
class TemplateTokens:
    """A response template as token ids around its {category} slot, tokenised as the response continues the prompt."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]


def template_tokens(tokenizer, templates: tuple[str, ...] = RESPONSE_TEMPLATES) -> list[TemplateTokens]:
    """Each template's prefix (' Analysing … prefer') and suffix (' products.') ids; the category goes between."""
    out = []
    for template in templates:
        before, after = template.split(SLOT)
        prefix = tokenizer(" " + before.rstrip(), add_special_tokens=False)["input_ids"] if before.strip() else []
        suffix = tokenizer(after, add_special_tokens=False)["input_ids"]
        if not suffix:
            raise ValueError(f"response template {template!r} has no words after its slot to stop at")
        out.append(TemplateTokens(tuple(prefix), tuple(suffix)))
    return out


def shared_prompt_tokens(tokenizer, input_template_id: int, k: int) -> int:
    """How many leading tokens every prompt of an input template has in common (its words before the first slot),
    found as the common prefix of two prompts whose first history items and users differ."""
    from engine.model.prompts import build_prompt
    a, b = (tokenizer(build_prompt(input_template_id, titles, k), add_special_tokens=True)["input_ids"]
            for titles in (["Zebra Crossing"], ["1 Apple"]))
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


class CategoryTrie:
    """Token-id trie of the category names the slot may hold, each tokenised with its leading space."""

    def __init__(self, tokenizer, names: list[str]) -> None:
        self.children: list[dict[int, int]] = [{}]
        self.terminal: list[bool] = [False]
        for name in sorted(set(names)):
            node = 0
            for token in tokenizer(" " + name, add_special_tokens=False)["input_ids"]:
                nxt = self.children[node].get(token)
                if nxt is None:
                    nxt = len(self.children)
                    self.children[node][token] = nxt
                    self.children.append({})
                    self.terminal.append(False)
                node = nxt
            self.terminal[node] = True

    def __len__(self) -> int:
        return sum(self.terminal)


def slot_names(categories: list[str], response: str) -> list[str]:
    """What a response may name: the catalog's category strings ('target'), or the leading one or two category
    parts of a history, '|'-joined in either order ('history')."""
    if response == "target":
        return sorted({c for c in categories if c})
    parts = sorted({p.strip() for c in categories if isinstance(c, str) for p in c.split("|")} - {""})
    return parts + [f"{a}|{b}" for a in parts for b in parts if a != b]


@dataclass(frozen=True)
class Guess:
    """What a row's response is guessed to be: its template (an index into the templates) and candidate ids of its
    {category} slot, most likely first; the first pass checks the template with the first slot, later passes the first
    slot that continues what greedy decoding has written."""

    template: int
    slots: tuple[tuple[int, ...], ...]

    def first(self, templates: list[TemplateTokens]) -> list[int]:
        """The guessed response's ids: the template's first words, the first slot, its last words."""
        t = templates[self.template]
        return [*t.prefix, *(self.slots[0] if self.slots else ()), *t.suffix]

    def slot_after(self, written: list[int]) -> tuple[int, ...] | None:
        """The first candidate slot that begins with the slot tokens written so far."""
        return next((s for s in self.slots if list(s[:len(written)]) == written), None)


class Guesser:
    """Learns, from what the LLM wrote, what to guess for draft decoding: the response template it chooses most often
    and, per row, candidate slots scored by how often each kind of guess was right so far: the slots written for
    histories with the same leading categories (their share there), the leading categories themselves (what training
    teaches it to write; their hit rate) and the slots written most often for anyone (their share overall)."""

    def __init__(self, tokenizer, templates: list[TemplateTokens], common: int = 8) -> None:
        self.tokenizer, self.templates, self.common = tokenizer, templates, common
        self.template_counts = [0] * len(templates)
        self.slots: dict[str, dict[tuple[int, ...], int]] = {}  # leading categories -> slot -> times written
        self.overall: dict[tuple[int, ...], int] = {}
        self.own_hits, self.total = 0, 0
        self._own: dict[str, tuple[int, ...]] = {}

    def own(self, lead: str) -> tuple[int, ...]:
        """The slot ids that name these leading categories."""
        if lead not in self._own:
            self._own[lead] = tuple(self.tokenizer(" " + lead, add_special_tokens=False)["input_ids"])
        return self._own[lead]

    def guesses(self, leads: list[str]) -> list[Guess]:
        """A Guess per row from its history's leading categories."""
        template = max(range(len(self.templates)), key=lambda t: (self.template_counts[t], -t))
        total = max(self.total, 1)
        common = sorted(self.overall, key=self.overall.get, reverse=True)[:self.common]
        out = []
        for lead in leads:
            seen = self.slots.get(lead, {})
            n = max(sum(seen.values()), 1)
            scores: dict[tuple[int, ...], float] = {}
            for slot, score in [*((s, c / n) for s, c in seen.items()),
                                (self.own(lead), self.own_hits / total if self.total else 1.0),
                                *((s, self.overall[s] / total) for s in common)]:
                scores[slot] = max(score, scores.get(slot, 0.0))
            out.append(Guess(template, tuple(sorted(scores, key=scores.get, reverse=True))))
        return out

    def learn(self, leads: list[str], ids: list[list[int]], followed: list[bool]) -> None:
        """Count the template and slot of each row that followed a template."""
        for lead, row, ok in zip(leads, ids, followed):
            if not ok:
                continue
            for t, template in enumerate(self.templates):
                p, x = len(template.prefix), len(template.suffix)
                if row[:p] == list(template.prefix) and row[len(row) - x:] == list(template.suffix) and len(row) > p + x:
                    slot = tuple(row[p:len(row) - x])
                    counts = self.slots.setdefault(lead, {})
                    counts[slot] = counts.get(slot, 0) + 1
                    self.overall[slot] = self.overall.get(slot, 0) + 1
                    self.template_counts[t] += 1
                    self.own_hits += slot == self.own(lead)
                    self.total += 1
                    break


@dataclass
class _Row:
    """One row's decoding state: 'choose' (matching template prefixes), 'slot', 'pending' (slot done, suffix waiting),
    'tail' (suffix fed), 'free' (off the templates: plain greedy), 'done'."""

    ids: list[int] = field(default_factory=list)
    states: list[torch.Tensor] = field(default_factory=list)
    phase: str = "choose"
    template: int = -1
    slot: list[int] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)
    node: int = 0
    followed: bool = False
    forced: bool = False  # fed a word it did not choose (a template's fixed words, a trie's only continuation)


@dataclass
class TemplateGeneration(Generation):
    """Generation plus, per row, whether greedy decoding followed a template to its end (then eos)."""

    followed: list[bool] = field(default_factory=list)
    forwards: int = 0


def _lm_head(model: nn.Module) -> nn.Module:
    return model.get_output_embeddings()


def decoder_of(model: nn.Module) -> nn.Module:
    """The transformer under the LM head (its output is the last hidden state, after the final norm)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder() if hasattr(base, "get_decoder") else base.model


def _cache_keyword(decoder: nn.Module) -> str:
    """The forward's name for the KV cache: 'cache' in recent transformers, 'past_key_values' before."""
    import inspect
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


@torch.no_grad()
def template_generate(model: nn.Module, tokenizer, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                      max_new_tokens: int = 24, templates: list[TemplateTokens] | None = None,
                      trie: CategoryTrie | None = None, eos_token_id: int | None = None,
                      streamer=None, shared_prefix: int = 0,
                      drafts: list[Guess | None] | None = None, split_prompt: bool = False) -> TemplateGeneration:
    """Greedy response ids and their last hidden states for left-padded prompts inputs_embeds [B,L,D], feeding each
    template's fixed words in one pass; see the module docstring for when it equals
    engine.model.llm.generation.generate. The first `shared_prefix` real tokens, when every row starts with them, go
    through the LLM once for the whole batch. With `drafts` (a Guess per row; not with a trie) decoding is speculative:
    the guessed response goes through the LLM with the prompt, and every later pass that feeds a slot token also feeds
    a guessed rest of the slot and the template's last words; each guess is kept up to its first token that is not the
    greedy choice and the rest masked out, so the result is the same and a right guess costs no pass of its own.
    split_prompt: the guesses go through in a pass of their own after the prompt's (so that a precision given to the
    first pass, engine.model.llm.forward.first_pass_autocast, applies to the prompt alone)."""
    from transformers import DynamicCache
    templates = template_tokens(tokenizer) if templates is None else templates
    eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    ct = placeholder_id(tokenizer)
    embed = model.get_input_embeddings()
    head = _lm_head(model)
    device, dtype = inputs_embeds.device, inputs_embeds.dtype
    b = inputs_embeds.shape[0]
    rows = [_Row() for _ in range(b)]
    was_training = model.training
    if was_training:  # switching to eval mode walks every module: 8 ms a call for SmolLM2; a loaded run is in it already
        model.eval()
    decoder = decoder_of(model)
    cache, keyword = DynamicCache(), _cache_keyword(decoder)
    mask = attention_mask.long().to(device)  # [B,past]
    count = mask.sum(1)  # [B] real tokens so far (the next position id)
    feed: list[list[int]] = []
    forwards = 0
    try:
        if streamer is not None:
            streamer.put(torch.zeros(1, 0, dtype=torch.long))  # the prompt, which a streamer skips
        if drafts is not None and trie is None:
            last, mask, count = _draft_pass(decoder, keyword, cache, embed, head, inputs_embeds, mask, rows, drafts,
                                            templates, ct, tokenizer.pad_token_id, max_new_tokens, split_prompt)
            forwards += int(split_prompt)
            if streamer is not None and rows[0].ids:
                streamer.put(torch.tensor([rows[0].ids]))
        else:
            out, mask = _prefill(decoder, keyword, cache, inputs_embeds, mask, shared_prefix)
            last = out.last_hidden_state[:, -1]  # [B,D] the state that predicts each row's first response token
        forwards += 1
        while True:
            logits = head(last).float()  # [B,V]
            if ct is not None:
                logits[:, ct] = float("-inf")  # never generate the placeholder itself
            feed = [_advance(rows[r], logits[r], templates, trie, eos, max_new_tokens)
                    if rows[r].phase not in ("done", "pending") else [] for r in range(b)]
            if not any(feed):  # every row still decoding has reached its template's last words: feed them all
                feed = [_release(row, max_new_tokens) if row.phase == "pending" else [] for row in rows]
            guesses = [_speculate(rows[r], drafts[r], templates, max_new_tokens) if drafts is not None and trie is None
                       and feed[r] and rows[r].phase == "slot" else ([], ()) for r in range(b)]
            spec = [g for g, _ in guesses]
            width = max(len(f) + len(g) for f, g in zip(feed, spec))
            if width == 0:
                break
            ids, new_mask = _right_padded([f + g if f else [] for f, g in zip(feed, spec)], tokenizer.pad_token_id,
                                          device)  # [B,W]
            if streamer is not None and feed[0]:
                streamer.put(ids[:1, :len(feed[0])].cpu())
            positions = (count.unsqueeze(1) + new_mask.cumsum(-1) - 1).clamp(min=0)  # [B,W]
            mask = torch.cat([mask, new_mask], dim=1)  # [B,past+W]
            out = decoder(inputs_embeds=embed(ids).to(dtype), attention_mask=mask, position_ids=positions,
                          **{keyword: cache}, use_cache=True)
            forwards += 1
            hidden = out.last_hidden_state  # [B,W,D] after the final norm
            fed = [len(f) for f in feed]
            if any(spec):  # keep each guess up to its first token greedy decoding would not choose
                choices = _greedy(head, hidden, ct)  # [B,W]
                for r, guess in enumerate(spec):
                    if guess:
                        kept = _agreeing(choices[r][fed[r] - 1:], guess)
                        mask[r, mask.shape[1] - width + fed[r] + kept:] = 0
                        rows[r].ids.extend(guess[:kept])
                        fed[r] += kept
                        _resume(rows[r], templates[rows[r].template], len(rows[r].ids), guesses[r][1])
                        if streamer is not None and r == 0 and kept:
                            streamer.put(torch.tensor([guess[:kept]]))
            count = count + torch.tensor(fed, device=device)
            lengths = torch.tensor([max(n, 1) for n in fed], device=device)
            last = hidden[torch.arange(b, device=device), lengths - 1]  # [B,D] each row's last kept token
            for r, n in enumerate(fed):
                rows[r].states.extend(hidden[r, :n].unbind(0))
    finally:
        if was_training:
            model.train()
    if streamer is not None:
        streamer.end()
    return _collect(rows, embed, head, tokenizer.pad_token_id, eos, ct, inputs_embeds, forwards)


def _draft_pass(decoder: nn.Module, keyword: str, cache, embed: nn.Module, head: nn.Module, embeds: torch.Tensor,
                mask: torch.Tensor, rows: list[_Row], drafts: list[Guess | None], templates: list[TemplateTokens],
                ct: int | None, pad: int, max_new_tokens: int, split: bool = False):
    """The prompt pass with each row's guessed response appended [B,L+W] (with `split`, the prompt's pass and then the
    guesses' pass): keeps each guess up to its first token that greedy decoding would not choose, masks the rest out of
    the cache and puts the row in the decoding state the kept tokens reach. Returns (the state [B,D] that predicts
    each row's next token, the attention mask [B,L+W], the tokens so far per row [B])."""
    b, length = mask.shape
    device = embeds.device
    guessed = [d.first(templates)[:max_new_tokens - 1] if d is not None else [] for d in drafts]
    ids, new_mask = _right_padded(guessed, pad, device)  # [B,W]
    full_mask = torch.cat([mask, new_mask], dim=1)  # [B,L+W]
    if split:
        prompt = decoder(inputs_embeds=embeds, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                         **{keyword: cache}, use_cache=True).last_hidden_state[:, -1:]  # [B,1,D]
        positions = (mask.sum(1, keepdim=True) + new_mask.cumsum(-1) - 1).clamp(min=0)  # [B,W] as in one pass
        guesses = decoder(inputs_embeds=embed(ids).to(embeds.dtype), attention_mask=full_mask, position_ids=positions,
                          **{keyword: cache}, use_cache=True).last_hidden_state  # [B,W,D]
        hidden = torch.cat([prompt, guesses], dim=1)  # [B,W+1,D]
    else:
        out = decoder(inputs_embeds=torch.cat([embeds, embed(ids).to(embeds.dtype)], dim=1), attention_mask=full_mask,
                      position_ids=(full_mask.cumsum(-1) - 1).clamp(min=0), **{keyword: cache}, use_cache=True)
        hidden = out.last_hidden_state[:, length - 1:]  # [B,W+1,D] the prompt's last state, then each guessed token's
    choices = _greedy(head, hidden, ct)  # [B,W+1]
    for r, g in enumerate(guessed):
        kept = _agreeing(choices[r], g)
        full_mask[r, length + kept:] = 0  # the rejected guess: in the cache, never attended to
        rows[r].ids = g[:kept]
        rows[r].states = list(hidden[r, 1:kept + 1].unbind(0))
        if drafts[r] is not None and kept >= len(templates[drafts[r].template].prefix):
            rows[r].template = drafts[r].template
            _resume(rows[r], templates[drafts[r].template], kept, drafts[r].slots[0] if drafts[r].slots else ())
    kept = torch.tensor([len(r.ids) for r in rows], device=device)  # [B]
    return hidden[torch.arange(b, device=device), kept], full_mask, mask.sum(1) + kept


def _right_padded(rows: list[list[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as right-padded ids [B,W] and their mask [B,W] (W at least 1; an empty row is all padding)."""
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)  # [B,W]
    mask = torch.zeros(len(rows), width, dtype=torch.long)  # [B,W]
    for i, row in enumerate(rows):
        if row:
            ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, :len(row)] = 1
    return ids.to(device), mask.to(device)


def _greedy(head: nn.Module, hidden: torch.Tensor, ct: int | None) -> list[list[int]]:
    """The greedy next token after each position of hidden [B,W,D] (never the placeholder), as lists."""
    logits = head(hidden).float()  # [B,W,V]
    if ct is not None:
        logits[..., ct] = float("-inf")
    return logits.argmax(-1).tolist()  # [B,W]


def _agreeing(choices: list[int], guess: list[int]) -> int:
    """How many leading guessed tokens are the greedy choice (choices[j]: the greedy token where guess[j] stands)."""
    kept = 0
    while kept < len(guess) and choices[kept] == guess[kept]:
        kept += 1
    return kept


def _speculate(row: _Row, guess: Guess | None, templates: list[TemplateTokens],
               max_new_tokens: int) -> tuple[list[int], tuple[int, ...]]:
    """The guessed rest of a row's response after the slot tokens it has just written (the rest of the first candidate
    slot that begins with them, then the template's last words) and that candidate; nothing when none begins so."""
    slot = guess.slot_after(row.slot) if guess is not None else None
    if slot is None:
        return [], ()
    rest = [*slot[len(row.slot):], *templates[row.template].suffix]
    return rest[:max(0, max_new_tokens - 1 - len(row.ids))], slot


def _resume(row: _Row, template: TemplateTokens, kept: int, slot: tuple[int, ...]) -> None:
    """The decoding state after the first `kept` tokens of template prefix + slot + suffix, as template decoding has
    it there (the row's template already set)."""
    p = len(template.prefix)
    if kept < p:  # inside the template's first words: the next greedy token decides as in 'choose'
        return
    if kept - p <= len(slot):  # inside the slot (or just after it, the greedy token not the suffix's first word)
        row.phase, row.slot = "slot", list(slot[:kept - p])
    elif kept - p - len(slot) < len(template.suffix):  # the suffix begun: template decoding feeds the rest of it
        row.phase, row.slot, row.pending = "pending", list(slot), list(template.suffix[kept - p - len(slot):])
    else:  # the whole response: greedy decoding must end here
        row.phase, row.slot = "tail", list(slot)


def _prefill(decoder: nn.Module, keyword: str, cache, embeds: torch.Tensor, mask: torch.Tensor, shared: int):
    """The prompt pass into `cache`: (its output, the attention mask the cache now matches). With a shared prefix of
    `shared` tokens the rows are laid out as [prefix][pads][rest], the prefix computed for one row and repeated."""
    b, length = mask.shape
    pads = (length - mask.sum(1)).tolist()  # [B] left pads per row
    first = embeds[0, pads[0]:pads[0] + shared]  # [P,D]
    if shared < 1 or b < 2 or min(length - p for p in pads) <= shared or not all(
            torch.equal(embeds[r, p:p + shared], first) for r, p in enumerate(pads)):
        return decoder(inputs_embeds=embeds, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                       **{keyword: cache}, use_cache=True), mask
    decoder(inputs_embeds=first.unsqueeze(0), attention_mask=mask.new_ones(1, shared),
            position_ids=torch.arange(shared, device=mask.device).unsqueeze(0), **{keyword: cache}, use_cache=True)
    cache.batch_repeat_interleave(b)
    index = torch.tensor([list(range(p)) + list(range(p + shared, length)) for p in pads], device=mask.device)  # [B,L-P]
    rest = embeds.gather(1, index.unsqueeze(-1).expand(-1, -1, embeds.shape[-1]))  # [B,L-P,D] pads then the rest
    rest_mask = mask.gather(1, index)  # [B,L-P]
    full_mask = torch.cat([mask.new_ones(b, shared), rest_mask], dim=1)  # [B,L] prefix, pads, rest
    positions = (shared + rest_mask.cumsum(-1) - 1).clamp(min=0)  # [B,L-P] as in the left-padded layout
    out = decoder(inputs_embeds=rest, attention_mask=full_mask, position_ids=positions, **{keyword: cache},
                  use_cache=True)
    return out, full_mask


def _advance(row: _Row, logits: torch.Tensor, templates: list[TemplateTokens], trie: CategoryTrie | None,
             eos: int, max_new_tokens: int) -> list[int]:
    """The tokens this row feeds next, given the logits [V] after its last fed token; updates its state."""
    budget = max_new_tokens - len(row.ids)
    if row.phase == "tail":  # the template is complete: greedy decoding must end here
        token = int(logits.argmax())
        if token == eos:
            row.followed, row.phase = True, "done"
            return []
        row.phase = "free"
        return _take(row, [token], budget)
    if row.phase == "slot":
        suffix = templates[row.template].suffix
        if trie is not None:
            allowed = list(trie.children[row.node])
            if trie.terminal[row.node] and row.slot:
                allowed.append(suffix[0])
            token = allowed[int(logits[allowed].argmax())] if allowed else suffix[0]
        else:
            token = int(logits.argmax())
        if token == suffix[0] and row.slot:
            row.phase, row.pending = "pending", list(suffix)
            return []
        if token == eos:
            row.phase = "done"
            return []
        row.slot.append(token)
        tokens = [token]
        if trie is not None:  # follow the trie while only one continuation is possible
            row.node = trie.children[row.node][token]
            while len(trie.children[row.node]) == 1 and not trie.terminal[row.node]:
                (forced, row.node), = trie.children[row.node].items()
                row.slot.append(forced)
                tokens.append(forced)
                row.forced = True
            if not trie.children[row.node]:  # a leaf: the name is complete, the suffix follows
                row.phase, row.pending = "pending", list(suffix)
        return _take(row, tokens, budget)
    token = int(logits.argmax())
    if token == eos:
        row.phase = "done"
        return []
    if row.phase == "choose":
        chosen = row.ids + [token]
        matching = [j for j, t in enumerate(templates) if list(t.prefix[:len(chosen)]) == chosen]
        if len(matching) == 1:
            row.template = matching[0]
            row.phase = "slot"
            row.forced = len(templates[row.template].prefix) > len(chosen)
            return _take(row, list(templates[row.template].prefix), budget, start=len(row.ids))
        if not matching:
            row.phase = "free"
    return _take(row, [token], budget)


def _release(row: _Row, max_new_tokens: int) -> list[int]:
    """A pending row's template words after its slot, fed once no row needs a pass of its own any more (rows end
    their slots at different steps; their suffixes then share one pass)."""
    row.phase, row.forced = "tail", True
    return _take(row, row.pending, max_new_tokens - len(row.ids))


def _take(row: _Row, tokens: list[int], budget: int, start: int | None = None) -> list[int]:
    """Record tokens (from position `start` of a full prefix, when given) within the token budget; the row ends when
    the budget is spent."""
    if start is not None:
        tokens = tokens[start:]
    tokens = tokens[:budget]
    row.ids.extend(tokens)
    if len(tokens) >= budget:
        row.phase = "done"
    return tokens


def _collect(rows: list[_Row], embed: nn.Module, head: nn.Module, pad_id: int, eos: int, ct: int | None,
             inputs_embeds: torch.Tensor, forwards: int) -> TemplateGeneration:
    """The rows' ids and states as engine.model.llm.generation.generate returns them (right-padded [B,R,D] states
    and mask)."""
    b, d = len(rows), inputs_embeds.shape[-1]
    width = max((len(r.ids) for r in rows), default=0)
    states = inputs_embeds.new_zeros(b, width, d)  # [B,R,D]
    response_mask = torch.zeros(b, width, dtype=torch.bool, device=inputs_embeds.device)  # [B,R]
    resp = torch.full((b, width), pad_id, dtype=torch.long, device=inputs_embeds.device)  # [B,R]
    for i, row in enumerate(rows):
        n = len(row.ids)
        if n:
            states[i, :n] = torch.stack(row.states[:n]).to(states.dtype)
            response_mask[i, :n] = True
            resp[i, :n] = torch.tensor(row.ids, dtype=torch.long)
    hidden = ResponseHidden(last_hidden=states, response_mask=response_mask,
                            input_embeds=embed(resp).to(inputs_embeds.dtype), attention_mask=response_mask.long())
    followed = [row.followed and (not row.forced or _greedy_throughout(row, head, eos, ct)) for row in rows]
    return TemplateGeneration(ids=[r.ids for r in rows], hidden=hidden, followed=followed, forwards=forwards)


def _greedy_throughout(row: _Row, head: nn.Module, eos: int, ct: int | None) -> bool:
    """Whether every token after the first is the greedy choice after the one before (the forced template words
    included) and eos follows the last: then full greedy decoding writes exactly these ids."""
    if not row.ids:
        return False
    chosen = _greedy(head, torch.stack(row.states[:len(row.ids)]).unsqueeze(0), ct)[0]  # [R]
    return chosen[:-1] == row.ids[1:] and chosen[-1] == eos
