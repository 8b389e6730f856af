"""Joint training of DeftRec (Eq. 15: L = L_diff + γ1·L_LLM + γ2·L_neg over tokenizer, LoRA and denoiser),
then inference conditions for every user, a denoiser refinement on those cached conditions selected on
validation HR@10, and the final validation/test metrics."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from data.protocol import Split
from engine.deftrec import DeftRecConfig, DeftRecHeads
from engine.diffusion import contrastive_diffusion_losses, diffusion_loss
from engine.llm import encode_batch, lm_forward
from engine.metrics import metrics_from_ranks
from engine.prompts import INPUT_TEMPLATES, RESPONSE_TEMPLATES, build_response
from engine.ranking import target_ranks
from engine.recommender import DeftRecModel, Preference, build_model
from train.cf import Evaluator, NegativeSampler
from train.progress import log, make_progress


@dataclass(frozen=True)
class Profile:
    """How long and how wide the joint training runs."""

    name: str
    steps: int
    batch_size: int
    grad_accum: int
    lr: float
    weight_decay: float
    max_history: int
    max_length: int
    refine_epochs: int
    diffusion_repeats: int  # noise draws per LLM condition in a joint step (cheap extra diffusion signal)
    describe_batch: int


PROFILES = {
    "quick": Profile("quick", steps=60, batch_size=8, grad_accum=1, lr=1e-3, weight_decay=1e-5, max_history=8,
                     max_length=160, refine_epochs=60, diffusion_repeats=8, describe_batch=48),
    "paper": Profile("paper", steps=20_000, batch_size=12, grad_accum=1, lr=1e-3, weight_decay=1e-5,
                     max_history=20, max_length=1024, refine_epochs=200, diffusion_repeats=4, describe_batch=64),
    "tiny": Profile("tiny", steps=2, batch_size=4, grad_accum=1, lr=1e-3, weight_decay=1e-5, max_history=5,
                    max_length=128, refine_epochs=2, diffusion_repeats=2, describe_batch=16),
}


def embedding_rms(llm) -> float:
    weight = llm.get_input_embeddings().weight.detach().float()
    return float(weight.pow(2).mean().sqrt())


def joint_training(model: DeftRecModel, split: Split, profile: Profile, seed: int) -> list[dict]:
    """Phase 1: the joint objective of Eq. 15 on random (history → held-out train item) samples."""
    config = model.config
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    users_all, items_all = split.train_pairs()
    sampler = NegativeSampler(split.n_items, users_all, items_all, rng)
    scale = config.target_scale
    params = [p for p in model.llm.parameters() if p.requires_grad] + list(model.heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=profile.lr, weight_decay=profile.weight_decay)
    model.llm.train()
    model.heads.train()
    histories = [np.unique(h) for h in model.histories]
    log_rows = []
    started = time.perf_counter()
    with make_progress() as progress:
        task = progress.add_task("deftrec joint", total=profile.steps, status="")
        for step in range(1, profile.steps + 1):
            users = rng.choice(split.n_users, profile.batch_size, replace=False).tolist()
            targets, kept_histories, template_ids, responses = [], [], [], []
            for user in users:
                items = histories[user]
                target = int(rng.choice(items))
                others = rng.permutation(items[items != target])[: profile.max_history]
                targets.append(target)
                kept_histories.append(others)
                template_ids.append(int(rng.integers(len(INPUT_TEMPLATES))))
                responses.append(build_response(int(rng.integers(len(RESPONSE_TEMPLATES))),
                                                model.categories[target] or "various"))
            prompts, kept = model.build_prompts(users, kept_histories, template_ids, responses)
            batch = encode_batch(model.tokenizer, prompts, responses, config.max_length)
            embeds = model.embed(users, kept, template_ids, batch["input_ids"])  # [B,L,D]
            device = embeds.device
            out = lm_forward(model.llm, embeds, batch["attention_mask"].to(device), batch["labels"].to(device))
            cond = model.heads.condition(out.last_hidden, batch["response_mask"].to(device), embeds)  # [B,D]
            negatives = np.stack([sampler.sample(np.full(config.n_negatives, u)) for u in users])  # [B,n]
            x_pos = (model.item_q[torch.as_tensor(targets)] / scale).to(device)  # [B,d]
            x_neg = (model.item_q[torch.as_tensor(negatives)].mean(1) / scale).to(device)  # [B,d]
            if model.heads.denoiser is not None:
                r = profile.diffusion_repeats
                l_diff, l_neg = contrastive_diffusion_losses(
                    model.heads.denoiser, model.heads.schedule(), x_pos.repeat(r, 1), x_neg.repeat(r, 1),
                    cond.repeat(r, 1), generator)
            else:
                l_diff = diffusion_loss(model.heads.regressor(cond), x_pos)
                l_neg = torch.zeros((), device=device)
            loss = l_diff + config.gamma1 * out.loss + (config.gamma2 * l_neg if config.negative_loss else 0.0)
            (loss / profile.grad_accum).backward()
            if step % profile.grad_accum == 0:
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            row = {"step": step, "loss": float(loss.detach()), "l_diff": float(l_diff.detach()),
                   "l_llm": float(out.loss.detach()), "l_neg": float(l_neg.detach())}
            log_rows.append(row)
            rate = step * profile.batch_size / (time.perf_counter() - started)
            progress.update(task, advance=1, status=f"L {row['loss']:.3f} diff {row['l_diff']:.3f} "
                                                    f"llm {row['l_llm']:.3f} neg {row['l_neg']:.3f} "
                                                    f"{rate:.1f} samples/s")
    return log_rows


def describe_all(model: DeftRecModel, profile: Profile) -> list[Preference]:
    """Phase 2: every user's generated preference sentence and inference condition."""
    prefs: list[Preference] = []
    n_users = len(model.histories)
    with make_progress() as progress:
        task = progress.add_task("describe users", total=n_users, status="")
        started = time.perf_counter()
        for start in range(0, n_users, profile.describe_batch):
            users = list(range(start, min(n_users, start + profile.describe_batch)))
            prefs += model.describe(users)
            progress.update(task, advance=len(users),
                            status=f"{len(prefs) / (time.perf_counter() - started):.1f} users/s")
    return prefs


def evaluate_cached(model: DeftRecModel, evaluator: Evaluator, conditions: torch.Tensor,
                    categories: list[str | None], which: str, seed: int) -> tuple[dict, np.ndarray]:
    """Metrics of the current heads from cached conditions; the same generator seed every time."""
    finals = model.trajectories(conditions, list(range(len(conditions))), seed)[-1]  # [U,d]
    scores = model.scores(finals, categories)  # [U,n_items]
    history = evaluator.train_history if which == "valid" else evaluator.test_history
    targets = evaluator.split.valid_item if which == "valid" else evaluator.split.test_item
    users = np.arange(len(conditions))
    ranks = target_ranks(scores, torch.as_tensor(targets), history.mask(users, scores.shape[1]))
    return metrics_from_ranks(ranks), finals


def refine_denoiser(model: DeftRecModel, split: Split, evaluator: Evaluator, prefs: list[Preference],
                    profile: Profile, seed: int) -> tuple[dict, int]:
    """Phase 3: train the denoiser on (inference condition, train item) pairs; keep the best validation HR@10."""
    config = model.config
    heads = model.heads
    conditions = torch.stack([p.condition for p in prefs])  # [U,D]
    categories = [p.category for p in prefs]
    best_metrics, _ = evaluate_cached(model, evaluator, conditions, categories, "valid", seed)
    best = (best_metrics["HR@10"], best_metrics["NDCG@10"], 0, {k: v.clone() for k, v in heads.state_dict().items()})
    if heads.denoiser is None or profile.refine_epochs == 0:
        return best_metrics, 0
    users, items = split.train_pairs()
    rng = np.random.default_rng(seed + 1)
    generator = torch.Generator().manual_seed(seed + 1)
    sampler = NegativeSampler(split.n_items, users, items, rng)
    optimizer = torch.optim.AdamW(heads.denoiser.parameters(), lr=1e-3, weight_decay=1e-5)
    schedule = heads.schedule()
    device = model.device
    with make_progress() as progress:
        task = progress.add_task("refine denoiser", total=profile.refine_epochs, status="")
        for epoch in range(1, profile.refine_epochs + 1):
            heads.denoiser.train()
            order = rng.permutation(len(users))
            for start in range(0, len(order), 1024):
                batch = order[start:start + 1024]
                u = users[batch]
                negatives = sampler.sample(np.repeat(u, config.n_negatives)).reshape(len(u), -1)
                x_pos = (model.item_q[torch.as_tensor(items[batch])] / config.target_scale).to(device)
                x_neg = (model.item_q[torch.as_tensor(negatives)].mean(1) / config.target_scale).to(device)
                l_diff, l_neg = contrastive_diffusion_losses(heads.denoiser, schedule, x_pos, x_neg,
                                                             conditions[torch.as_tensor(u)].to(device), generator)
                loss = l_diff + (config.gamma2 * l_neg if config.negative_loss else 0.0)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            if epoch % 5 == 0 or epoch == profile.refine_epochs:
                metrics, _ = evaluate_cached(model, evaluator, conditions, categories, "valid", seed)
                if (metrics["HR@10"], metrics["NDCG@10"]) > best[:2]:
                    best = (metrics["HR@10"], metrics["NDCG@10"], epoch,
                            {k: v.clone() for k, v in heads.state_dict().items()})
                progress.update(task, status=f"val HR@10 {metrics['HR@10']:.4f} (best {best[0]:.4f} @ {best[2]})")
            progress.update(task, advance=1)
    heads.load_state_dict(best[3])
    return evaluate_cached(model, evaluator, conditions, categories, "valid", seed)[0], best[2]


@dataclass
class DeftRecOutcome:
    model: DeftRecModel
    preferences: list[Preference]
    valid: dict
    test: dict
    log: list[dict]
    refine_epoch: int
    seconds: dict


def train_deftrec(split: Split, evaluator: Evaluator, user_q: torch.Tensor, item_q: torch.Tensor,
                  config: DeftRecConfig, profile: Profile, seed: int, *, qlora: bool = False) -> DeftRecOutcome:
    """All DeftRec phases; returns the trained model and its metrics (selected on validation only)."""
    torch.manual_seed(seed)
    timings = {}
    t0 = time.perf_counter()
    if config.cf == "random":
        g = torch.Generator().manual_seed(seed)
        user_q = torch.randn(user_q.shape, generator=g) * user_q.std()
        item_q = torch.randn(item_q.shape, generator=g) * item_q.std()
    target_scale = float(item_q.pow(2).mean().sqrt())
    model = build_model(config, (split.items["title"].tolist(), split.items["category"].tolist(),
                                 split.train_histories()), user_q, item_q, seed, qlora=qlora)
    config = DeftRecConfig.from_dict({**config.to_dict(), "llm_hidden": model.llm.config.hidden_size,
                                      "token_scale": embedding_rms(model.llm), "target_scale": target_scale,
                                      "max_history": profile.max_history, "max_length": profile.max_length})
    model.config = config
    model.heads = DeftRecHeads(config).to(model.device)
    log(f"deftrec: LLM {config.llm} (hidden {config.llm_hidden}), K={config.k}, profile {profile.name}: "
        f"{profile.steps} joint steps × {profile.batch_size} users")
    rows = joint_training(model, split, profile, seed)
    timings["joint"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    model.llm.eval()
    prefs = describe_all(model, profile)
    timings["describe"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    valid, refine_epoch = refine_denoiser(model, split, evaluator, prefs, profile, seed)
    timings["refine"] = time.perf_counter() - t2
    conditions = torch.stack([p.condition for p in prefs])
    test, _ = evaluate_cached(model, evaluator, conditions, [p.category for p in prefs], "test", seed)
    log(f"deftrec: valid HR@10 {valid['HR@10']:.4f} NDCG@10 {valid['NDCG@10']:.4f}; "
        f"test HR@10 {test['HR@10']:.4f} NDCG@10 {test['NDCG@10']:.4f}")
    return DeftRecOutcome(model=model, preferences=prefs, valid=valid, test=test, log=rows,
                          refine_epoch=refine_epoch, seconds={k: round(v, 1) for k, v in timings.items()})


def profile_dict(profile: Profile) -> dict:
    return asdict(profile)
