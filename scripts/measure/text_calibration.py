"""Would the LLM's text read the history better if its {category} slot were chosen with the prior divided out?
For N users of a run (every 943/N-th): the log-probability of every leading-parts string a history response can
name ('A|B' for the pairs that lead some user's prompt history, both orders), after the user's inference prompt and
the words of the response template the run wrote before the slot, plus the template's first word after it. The slot
is then chosen by log p(s | user) − α·log p̄(s), with p̄ the mean of p(s | user) over the N users (the marginal,
the calibration of Zhao et al. 2021); printed for each α: how often the choice names exactly the history's leading
parts, at least one of them, and how varied the choices are.
python scripts/measure/text_calibration.py RUN [N] [PRECISION]"""
import sys
from collections import Counter

import torch

from engine.model.decoding import template_tokens
from engine.model.llm.batches import encode_batch
from engine.model.prompts import DEFAULT_INPUT_TEMPLATE, RESPONSE_TEMPLATES
from engine.model.retriever import extract_parts
from engine.services.diagnostics import read_run
from engine.services.loading import open_deftrec
from engine.services.run import Run

torch.set_num_threads(2)
run = Run.open(sys.argv[1])
n_users = int(sys.argv[2]) if len(sys.argv) > 2 else 150
precision = sys.argv[3] if len(sys.argv) > 3 else None
model = open_deftrec(run)
cached = read_run(run)
users = list(range(0, len(cached.texts), max(1, len(cached.texts) // n_users)))[:n_users]
leads = {u: model.leads([model.inference_history(u)])[0] for u in range(len(cached.texts))}
candidates = sorted({s for lead in leads.values() if "|" in lead for s in (lead, "|".join(lead.split("|")[::-1]))})
templates = template_tokens(model.tokenizer)
tok = model.tokenizer


def template_of(text: str) -> int:
    """The response template the run's text follows (by the words before its slot), 0 when none."""
    for index, template in enumerate(RESPONSE_TEMPLATES):
        if text.startswith(template.split("{category}")[0].strip()):
            return index
    return 0


@torch.no_grad()
def slot_logprobs(user: int) -> torch.Tensor:
    """[C] log p(candidate slot + the template's next word | prompt, the template's words before the slot)."""
    prompts, kept = model.build_prompts([user], [model.inference_history(user)], [DEFAULT_INPUT_TEMPLATE])
    batch = encode_batch(tok, prompts, None, model.config.prompt.max_length)
    template = templates[template_of(cached.texts[user])]
    prefix = torch.tensor([template.prefix], dtype=torch.long)  # [1,P]
    ids = torch.cat([batch["input_ids"], prefix], 1)  # [1,L]
    embeds = model.embed([user], kept, [DEFAULT_INPUT_TEMPLATE], ids)  # [1,L,D]
    with model.autocast(precision):
        out = model.llm(inputs_embeds=embeds, use_cache=True)
        first = out.logits[0, -1].float().log_softmax(-1)  # [V]
        rows = [tok(" " + c, add_special_tokens=False)["input_ids"] + [template.suffix[0]] for c in candidates]
        width = max(len(r) for r in rows)
        cand = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])  # [C,W]
        past = out.past_key_values
        past.batch_repeat_interleave(len(rows))
        mask = torch.ones(len(rows), ids.shape[1] + width, dtype=torch.long)  # [C,L+W] right padding: unused
        logits = model.llm(input_ids=cand, past_key_values=past, attention_mask=mask).logits.float()  # [C,W,V]
    logp = logits.log_softmax(-1)  # [C,W,V]
    total = first[cand[:, 0]].clone()  # [C]
    for c, r in enumerate(rows):
        total[c] += logp[c, torch.arange(len(r) - 1), torch.tensor(r[1:])].sum()
    return total


scores = torch.stack([slot_logprobs(u) for u in users])  # [N,C]
prior = scores.logsumexp(0) - torch.log(torch.tensor(float(len(users))))  # [C] log of the mean probability
wanted = [set(leads[u].split("|")) for u in users]
for alpha in (0.0, 0.5, 0.75, 1.0):
    chosen = (scores - alpha * prior).argmax(1).tolist()
    said = [set(candidates[c].split("|")) for c in chosen]
    names = Counter(candidates[c] for c in chosen)
    match = sum(s == w for s, w in zip(said, wanted)) / len(users)
    overlap = sum(bool(s & w) for s, w in zip(said, wanted)) / len(users)
    print(f"alpha {alpha:g}: exact {match:.3f}, at least one part {overlap:.3f}, {len(names)} distinct slots, "
          f"the commonest {names.most_common(1)[0][0]} for {names.most_common(1)[0][1] / len(users):.0%}", flush=True)
written = [set((extract_parts(cached.texts[u], model.category_parts) or "").split("|")) for u in users]
print(f"the run's own texts on these users: exact {sum(s == w for s, w in zip(written, wanted)) / len(users):.3f}; "
      f"{len(users)} users, {len(candidates)} candidate slots", flush=True)
