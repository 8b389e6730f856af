"""Diagnostics of a DeftRec run: how much of the user the condition c carries (ridge R² from c to the LightGCN user
vector), what the CF vectors rank alone, how varied the generated text is, what π adds, and the ceiling — a fresh
denoiser conditioned on the LightGCN user vector itself, trained and scored as the run's own. All on the run's
split under its full-ranking protocol (train items masked for validation, train + validation for test)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from engine.model.deftrec import DeftRecConfig, DeftRecHeads
from engine.model.diffusion import DDPMSchedule, Denoiser, guided
from engine.model.metrics import metrics_from_ranks
from engine.model.prompts import leading_categories, prompt_history
from engine.model.ranking import HistoryIndex, rank_all
from engine.model.recommender import denoise
from engine.model.refine import RECENT_TARGETS, refine_epochs, refinement_pairs
from engine.model.retriever import HybridRetriever, category_parts, extract_parts
from engine.services.run import Run, cf_weights_name

LAMBDAS = (0.1, 1.0, 10.0, 100.0, 1000.0)  # ridge penalties tried on the inner split
TRAIN_SHARE = 0.8  # share of users the ridge is fitted on (and of those, the inner fit for choosing λ)
DEFAULT_PI = 0.1  # π of the 'exact'/'overlap' figures when the run's own π is 0


@dataclass(frozen=True)
class Targets:
    """The split as full-ranking evaluation sees it (train.cf.Evaluator's view, built without importing train)."""

    train_users: np.ndarray  # [N] user_idx of each distinct train pair
    train_items: np.ndarray  # [N] item_idx
    valid_item: np.ndarray  # [U]
    test_item: np.ndarray  # [U]
    n_items: int
    train_history: HistoryIndex  # masked for validation
    test_history: HistoryIndex  # train + validation item, masked for test

    @property
    def n_users(self) -> int:
        return len(self.valid_item)

    @classmethod
    def of(cls, evaluator) -> Targets:
        """From a train.cf.Evaluator (duck-typed: .split, .train_history, .test_history), or a Targets as is."""
        if isinstance(evaluator, Targets):
            return evaluator
        split = evaluator.split
        users, items = split.train_pairs()
        return cls(users, items, np.asarray(split.valid_item), np.asarray(split.test_item), split.n_items,
                   evaluator.train_history, evaluator.test_history)

    @classmethod
    def from_catalog(cls, catalog) -> Targets:
        """From a run's open data.catalog.Catalog: its users' held-out items and its train interactions (distinct
        pairs, in order)."""
        held = catalog.held_out()  # [U,2]
        n_items = catalog.n_items()
        train = catalog.train_pairs()  # [N,2]
        _, first = np.unique(train[:, 0] * n_items + train[:, 1], return_index=True)
        pairs = train[np.sort(first)]  # [N',2] first occurrence of each pair
        history = HistoryIndex.build(len(held), pairs[:, 0], pairs[:, 1])
        return cls(pairs[:, 0], pairs[:, 1], held[:, 0], held[:, 1], int(n_items), history,
                   history.with_extra(held[:, 0]))

    def ranks(self, score_fn: Callable[[np.ndarray], torch.Tensor], which: str) -> np.ndarray:
        """[U] 0-based rank of each user's 'valid' (train masked) or 'test' (train + valid masked) item."""
        history = self.train_history if which == "valid" else self.test_history
        held = self.valid_item if which == "valid" else self.test_item
        return rank_all(score_fn, self.n_users, self.n_items, history, held)

    def metrics(self, score_fn: Callable[[np.ndarray], torch.Tensor], which: str) -> dict:
        """HR@10 and NDCG@10 of a score function (user_idx batch -> [B, n_items]) on 'valid' or 'test'."""
        metrics = metrics_from_ranks(self.ranks(score_fn, which))
        return {"HR@10": metrics["HR@10"], "NDCG@10": metrics["NDCG@10"]}

    def both(self, score_fn: Callable[[np.ndarray], torch.Tensor]) -> dict:
        return {"valid": self.metrics(score_fn, "valid"), "test": self.metrics(score_fn, "test")}


def _float64(x) -> np.ndarray:
    """A float64 numpy copy of a tensor or array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _ridge(x: np.ndarray, y: np.ndarray, lam: float) -> Callable[[np.ndarray], np.ndarray]:
    """Ridge fit on x [n,D] (standardized per dimension with its own statistics) to y [n,d], with an intercept;
    returns the predictor. The dual form when D > n (the same solution, a smaller system)."""
    mean, std = x.mean(0), x.std(0)  # [D]
    std = np.where(std > 1e-12, std, 1.0)  # a constant dimension becomes 0
    z = (x - mean) / std  # [n,D]
    y_mean = y.mean(0)  # [d]
    centered = y - y_mean  # [n,d]
    n, dim = z.shape
    if dim <= n:
        weights = np.linalg.solve(z.T @ z + lam * np.eye(dim), z.T @ centered)  # [D,d]
    else:
        weights = z.T @ np.linalg.solve(z @ z.T + lam * np.eye(n), centered)  # [D,d]
    return lambda new: ((new - mean) / std) @ weights + y_mean  # [m,d]


def r2_score(y: np.ndarray, predicted: np.ndarray) -> float:
    """1 − SS_res/SS_tot summed over every output dimension, SS_tot around y's own mean."""
    ss_res = float(((y - predicted) ** 2).sum())
    ss_tot = float(((y - y.mean(0)) ** 2).sum())
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


def ridge_r2(conditions, user_vectors, seed: int = 0, lambdas: Sequence[float] = LAMBDAS,
             train_share: float = TRAIN_SHARE) -> dict:
    """R² on held-out users of a ridge regression from c [U,D] to the CF user vector [U,d]: fitted on a seeded
    80% of users, λ chosen on an inner 80/20 split of those training users only, then refitted on all of them."""
    x, y = _float64(conditions), _float64(user_vectors)  # [U,D], [U,d]
    order = np.random.default_rng(seed).permutation(len(x))
    n_train = round(train_share * len(x))
    train, held = order[:n_train], order[n_train:]
    n_inner = round(train_share * len(train))
    inner, check = train[:n_inner], train[n_inner:]
    if min(len(held), len(check), n_inner) < 2:
        return {"r2": None, "lambda": None, "train_users": len(train), "held_out_users": len(held), "inner_r2": {}}
    inner_r2 = {lam: r2_score(y[check], _ridge(x[inner], y[inner], lam)(x[check])) for lam in lambdas}
    best = max(lambdas, key=lambda lam: (np.nan_to_num(inner_r2[lam], nan=-np.inf), -lam))  # ties: smaller λ
    r2 = r2_score(y[held], _ridge(x[train], y[train], best)(x[held]))
    return {"r2": r2, "lambda": best, "train_users": len(train), "held_out_users": len(held),
            "inner_r2": {f"{lam:g}": value for lam, value in inner_r2.items()}}


def embedding_metrics(user_q: torch.Tensor, item_q: torch.Tensor, targets: Targets, cosine: bool = False) -> dict:
    """Valid and test HR@10/NDCG@10 ranking every item by the user vector's dot product (or cosine) with it."""
    users, items = user_q.detach().float().cpu(), item_q.detach().float().cpu()  # [U,d], [n,d]
    if cosine:
        users = torch.nn.functional.normalize(users, dim=1)  # [U,d]
        items = torch.nn.functional.normalize(items, dim=1)  # [n,d]
    return targets.both(lambda batch: users[torch.as_tensor(batch)] @ items.T)  # [B,n]


def text_stats(texts: Sequence[str | None], categories: Sequence[str | None],
               leads: Sequence[str | None] | None = None, parts: Sequence[str] = ()) -> dict:
    """How varied the generated preference sentences and their extracted categories are across users and, given each
    prompt history's leading categories (`leads`, what a history response teaches) and the catalog's category
    parts, how often the text names exactly those parts (`history_match_share`; a constant text would reach
    `history_match_constant`) or at least one of them."""
    n = len(texts)
    sentences = Counter(t or "" for t in texts)
    named = Counter(c for c in categories if c)
    top_sentence, top_sentence_count = sentences.most_common(1)[0] if sentences else ("", 0)
    top_category, top_category_count = named.most_common(1)[0] if named else (None, 0)
    out = {"users": n, "distinct_sentences": len(sentences), "distinct_categories": len(named),
           "top_sentence": top_sentence, "top_sentence_share": top_sentence_count / n if n else 0.0,
           "top_category": top_category, "top_category_share": top_category_count / n if n else 0.0,
           "no_category_share": (n - sum(named.values())) / n if n else 0.0}
    if leads is not None and n:
        said = [_part_set(extract_parts(t, parts)) for t in texts]
        wanted = [_part_set(lead) for lead in leads]
        out["distinct_leads"] = len(Counter(lead for lead in leads if lead))
        out["history_match_share"] = sum(bool(w) and s == w for s, w in zip(said, wanted)) / n
        out["history_overlap_share"] = sum(bool(s & w) for s, w in zip(said, wanted)) / n
        sets = Counter(frozenset(w) for w in wanted if w)  # a constant text naming the commonest leading parts:
        constant, count = sets.most_common(1)[0] if sets else (frozenset(), 0)  # the shares it would reach
        out["history_match_constant"] = count / n
        out["history_overlap_constant"] = sum(bool(constant & w) for w in wanted) / n
    return out


def _part_set(named: str | None) -> set[str]:
    """The '|'-separated category parts of a string, as a set (none for None)."""
    return set((named or "").split("|")) - {""}


def prompt_leads(targets: Targets, item_categories: Sequence[str | None], config: DeftRecConfig,
                 seed: int) -> list[str | None]:
    """The leading categories of each user's inference prompt history (before its length is fitted)."""
    users, items = np.asarray(targets.train_users), np.asarray(targets.train_items)
    order = np.argsort(users, kind="stable")  # time order within a user kept
    bounds = np.searchsorted(users[order], np.arange(targets.n_users + 1))
    return [leading_categories([item_categories[i] for i in prompt_history(
        items[order[bounds[u]:bounds[u + 1]]], config.prompt.history, config.prompt.max_history, seed, u)])
        for u in range(targets.n_users)]


def _retrieval_scores(finals: torch.Tensor, retriever: HybridRetriever, categories: Sequence[str | None],
                      pi: float, match: str) -> Callable[[np.ndarray], torch.Tensor]:
    """The score function (user_idx batch -> [B, n_items]) of preference vectors [U,d] under the retriever's score."""
    finals = finals.detach().float().cpu()  # [U,d]

    def score(batch: np.ndarray) -> torch.Tensor:
        return retriever.scores_dense(finals[torch.as_tensor(batch)].numpy(), [categories[u] for u in batch],
                                      pi, match)  # [B,n]
    return score


def retrieval_metrics(finals: torch.Tensor, retriever: HybridRetriever, categories: Sequence[str | None],
                      pi: float, match: str, targets: Targets, which: tuple[str, ...] = ("valid", "test")) -> dict:
    """{split: HR@10/NDCG@10} of preference vectors [U,d] under s = cos·(1+π) with the users' extracted categories."""
    score = _retrieval_scores(finals, retriever, categories, pi, match)
    return {split: targets.metrics(score, split) for split in which}


def retrieval_ranks(finals: torch.Tensor, retriever: HybridRetriever, categories: Sequence[str | None],
                    pi: float, match: str, targets: Targets, which: tuple[str, ...] = ("valid", "test")) -> dict:
    """{split: [U] 0-based rank of each user's held-out item} of preference vectors [U,d], as retrieval_metrics."""
    score = _retrieval_scores(finals, retriever, categories, pi, match)
    return {split: targets.ranks(score, split) for split in which}


def pi_metrics(finals: torch.Tensor, retriever: HybridRetriever, categories: Sequence[str | None], pi: float,
               targets: Targets) -> dict:
    """The same preference vectors ranked with π = 0 ('off'), and with π where the category matches 'exact'ly or
    shares a '|'-part ('overlap')."""
    pi = pi if pi > 0 else DEFAULT_PI
    out: dict = {"pi": pi}
    for name, value, match in (("off", 0.0, "exact"), ("exact", pi, "exact"), ("overlap", pi, "overlap"),
                               ("all", pi, "all")):
        out[name] = retrieval_metrics(finals, retriever, categories, value, match, targets)
    return out


def recent_item_means(targets: Targets, item_q: torch.Tensor, n: int = RECENT_TARGETS) -> torch.Tensor:
    """[U,d] mean CF vector of each user's n latest train items: what a condition read from the latest history can
    carry (R² against it is the 'recent' counterpart of R² against the user vector)."""
    users, items = np.asarray(targets.train_users), np.asarray(targets.train_items)
    out = torch.zeros(targets.n_users, item_q.shape[1])  # [U,d]
    q = item_q.detach().float().cpu()
    for user in range(targets.n_users):
        mine = items[users == user][-n:]
        if len(mine):
            out[user] = q[torch.as_tensor(mine)].mean(0)
    return out


def cheap_diagnostics(conditions: torch.Tensor, user_q: torch.Tensor, item_q: torch.Tensor,
                      item_categories: Sequence[str | None], texts: Sequence[str], categories: Sequence[str | None],
                      heads: DeftRecHeads, evaluator, seed: int, finals: torch.Tensor | None = None) -> dict:
    """Every diagnostic but the ceiling, from in-memory tensors (conditions [U,D], CF vectors [U,d] / [n,d]), the
    trained heads and the split's evaluator (train.cf.Evaluator or Targets); `seed` is the run's, so the final
    vectors are the ones training scored."""
    targets = Targets.of(evaluator)
    if finals is None:  # the training pipeline passes the ones it has just computed
        finals = denoise(heads, conditions, list(range(len(conditions))), seed)[-1]  # [U,d]
    retriever = HybridRetriever(item_q.detach().float().cpu().numpy(), np.array(list(item_categories), dtype=object),
                                item_norm=heads.config.retrieval.item_norm)
    recent = recent_item_means(targets, item_q)  # [U,d]
    return {"condition_r2": ridge_r2(conditions, user_q, seed),
            "recent_items_r2": ridge_r2(conditions, recent, seed),
            "recent_items_cosine": embedding_metrics(recent, item_q, targets, cosine=True),
            "lightgcn_dot": embedding_metrics(user_q, item_q, targets),
            "lightgcn_cosine": embedding_metrics(user_q, item_q, targets, cosine=True),
            "text": text_stats(texts, categories, prompt_leads(targets, item_categories, heads.config, seed),
                               category_parts(item_categories)),
            "pi": pi_metrics(finals, retriever, list(categories), heads.config.retrieval.pi, targets)}


class DenoiserSampler(nn.Module):
    """A bare denoiser behind DeftRecHeads.sample's interface (the run's temperature and guidance), so that
    engine.model.recommender.denoise seeds it exactly as it seeds the run's heads."""

    def __init__(self, denoiser: Denoiser, config: DeftRecConfig) -> None:
        super().__init__()
        self.denoiser, self.config = denoiser, config

    def sample(self, cond: torch.Tensor, generator, temperature: float | None = None,
               guidance: float | None = None) -> torch.Tensor:
        """Trajectory [steps+1, B, d] for conditions cond [B, d_cf]."""
        tau = self.config.diffusion.sampling_temperature if temperature is None else temperature
        weight = self.config.diffusion.guidance if guidance is None else guidance
        return DDPMSchedule.from_config(self.denoiser.config).sample(guided(self.denoiser, weight), cond.float(),
                                                                     generator, temperature=tau)  # [S+1,B,d]


def ceiling_metrics(heads: DeftRecHeads, user_q: torch.Tensor, item_q: torch.Tensor,
                    item_categories: Sequence[str | None], categories: Sequence[str | None], evaluator, seed: int,
                    epochs: int, patience: int,
                    on_epoch: Callable[[int, int, str], None] | None = None, ema_decay: float = 0.0) -> dict:
    """What the retrieval side reaches with a perfect condition: a fresh denoiser of the run's DiffusionConfig with
    c = the CF user vector (standardized inside the denoiser), refined like the run's (engine.model.refine: same loss,
    budget, checks and patience), sampled at the run's temperature and guidance and scored with the run's retriever
    and extracted categories; the epoch with the best validation HR@10, then NDCG@10, and its test metrics."""
    config = heads.config
    if not config.diffusion.enabled:
        return {"skipped": "the run has no denoiser (trained --no-diffusion)"}
    targets = Targets.of(evaluator)
    device = next(heads.parameters()).device
    user_q, item_q = user_q.detach().float().cpu(), item_q.detach().float().cpu()  # [U,d], [n,d]
    torch.manual_seed(seed)
    denoiser = Denoiser(replace(heads.diffusion_config(), cond_dim=user_q.shape[1], cond_standardize=True)).to(device)
    sampler = DenoiserSampler(denoiser, config)
    retriever = HybridRetriever(item_q.numpy(), np.array(list(item_categories), dtype=object),
                                item_norm=config.retrieval.item_norm)
    categories = list(categories)
    everyone = list(range(len(user_q)))
    checks: list[dict] = []
    best: tuple | None = None

    def evaluate(which: tuple[str, ...]) -> dict:
        finals = denoise(sampler, user_q, everyone, seed)[-1]  # [U,d]
        return retrieval_metrics(finals, retriever, categories, config.retrieval.pi, config.retrieval.pi_match, targets, which)

    def check(epoch: int) -> int:
        nonlocal best
        valid = evaluate(("valid",))["valid"]
        checks.append({"epoch": epoch, **valid})
        if best is None or (valid["HR@10"], valid["NDCG@10"]) > best[:2]:
            best = (valid["HR@10"], valid["NDCG@10"], epoch, {k: v.clone() for k, v in denoiser.state_dict().items()})
        return best[2]

    def progress(epoch: int, checked: bool, stopping: bool) -> None:
        if on_epoch is not None:
            last = checks[-1]
            on_epoch(epoch, epochs, f"val HR@10 {last['HR@10']:.4f} (best {best[0]:.4f} @ {best[2]})"
                     + (" early stop" if stopping else ""))

    check(0)
    rng = np.random.default_rng(seed + 1)
    generator = torch.Generator().manual_seed(seed + 1)
    users, items = refinement_pairs(config.prompt.history, targets.train_users, targets.train_items,
                                    config.training.refine_targets)  # as the run's
    refine_epochs(denoiser, config, user_q, users, items, item_q, epochs, patience,
                  check, rng, generator, device, progress, history=(targets.train_users, targets.train_items),
                  ema_decay=ema_decay)
    denoiser.load_state_dict(best[3])
    selected = evaluate(("valid", "test"))
    return {"epoch": best[2], "valid": selected["valid"], "test": selected["test"], "refine_epochs": epochs,
            "patience": patience, "temperature": config.diffusion.sampling_temperature, "guidance": config.diffusion.guidance,
            "checks": checks}


@dataclass
class RunInputs:
    """What the diagnostics read from a run directory."""

    heads: DeftRecHeads
    conditions: torch.Tensor  # [U,D] cached at training
    texts: list[str]
    categories: list[str | None]
    user_q: torch.Tensor  # [U,d] the CF vectors DeftRec was trained on
    item_q: torch.Tensor  # [n,d]
    item_categories: list[str | None]
    targets: Targets
    seed: int


def read_run(run: Run) -> RunInputs:
    """The run's heads (no LLM), cached conditions, texts and categories, CF vectors and split."""
    from data.catalog import Catalog
    from data.errors import RunError
    from engine.services.contract import cached_preferences
    from engine.services.loading import load_heads
    config = run.deftrec_config
    if config is None:
        raise RunError("the run has no DeftRec model (trained with --stage cf)", path=run.path,
                       hint="train one with: deftrec train --stage all")
    cached = cached_preferences(run)
    conditions, item_categories, n_users = cached.conditions, cached.item_categories, len(cached.texts)
    with Catalog.open(run.catalog_path, readonly=True) as catalog:
        targets = Targets.from_catalog(catalog)
    cf = run.tensors(cf_weights_name(config.training.cf))
    if cf["user"].shape[0] != n_users or cf["item"].shape[0] != len(item_categories):
        raise RunError(f"the embeddings ({cf['user'].shape[0]} users, {cf['item'].shape[0]} items) do not match "
                       f"the catalog ({n_users} users, {len(item_categories)} items)", path=run.path)
    heads = DeftRecHeads(config)
    load_heads(run, heads)
    return RunInputs(heads=heads, conditions=conditions, texts=cached.texts, categories=cached.categories, user_q=cf["user"].float(), item_q=cf["item"].float(),
                     item_categories=item_categories, targets=targets, seed=int(run.config.get("seed", 0)))


def diagnose_run(run: Run, ceiling: bool = True, seed: int | None = None, ceiling_epochs: int | None = None,
                 on_epoch: Callable[[int, int, str], None] | None = None) -> dict:
    """Every diagnostic of a run; the ceiling (minutes on a CPU) unless ceiling=False. `seed` (default the run's)
    seeds the R² split, the sampler and the ceiling's training; ceiling_epochs overrides the profile's refine_epochs."""
    inputs = read_run(run)
    seed = inputs.seed if seed is None else seed
    out = {"run": str(run.path), "seed": seed, "cf": inputs.heads.config.training.cf,
           **cheap_diagnostics(inputs.conditions, inputs.user_q, inputs.item_q, inputs.item_categories, inputs.texts,
                               inputs.categories, inputs.heads, inputs.targets, seed),
           "ceiling": None}
    if ceiling:
        profile = inputs.heads.config.profile  # a format-1 run without one: the quick profile (engine.model.config.migrate)
        epochs = ceiling_epochs if ceiling_epochs is not None else profile.refine_epochs
        patience = profile.refine_patience
        out["ceiling"] = ceiling_metrics(inputs.heads, inputs.user_q, inputs.item_q, inputs.item_categories,
                                         inputs.categories, inputs.targets, seed, epochs, patience, on_epoch)
    return out
