"""The denoiser refinement loop on fixed conditions: (condition of the user, train item) pairs in shuffled batches
of 1024, the run's denoising objective, a check every 3 epochs with patience. Shared by training's refinement on
the cached LLM conditions (train/deftrec.py) and the ceiling diagnostic on CF user vectors (engine/services/diagnostics.py)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from engine.model.deftrec import DeftRecConfig, denoising_objective
from engine.model.diffusion import DDPMSchedule, Denoiser, denoising_losses
from engine.model.sampling import NegativeSampler

CHECK_EVERY = 3  # epochs between validation checks
RECENT_TARGETS = 5  # history 'recent': the latest items a diagnostic's recent-items mean reads (as refine_targets did)
BATCH_PAIRS = 1024  # train pairs per optimizer step


def refinement_pairs(history: str, users: np.ndarray, items: np.ndarray,
                     n_targets: int = RECENT_TARGETS) -> tuple[np.ndarray, np.ndarray]:
    """(users, items) the refinement trains on, from train pairs listed per user in time order: every pair
    (history 'random'), or each user's latest `n_targets` items (history 'recent': the inference condition reads
    the latest items and the next item lies nearest them), tiled to about as many pairs as the train set has, so
    both get the same number of updates."""
    users, items = np.asarray(users), np.asarray(items)
    if history != "recent" or not len(users):
        return users, items
    position_from_end = np.zeros(len(users), np.int64)  # 0 for each user's last pair
    last_of_user = np.r_[users[1:] != users[:-1], True]
    run_end = np.flatnonzero(last_of_user)
    run_start = np.r_[0, run_end[:-1] + 1]
    for start, end in zip(run_start, run_end):
        position_from_end[start:end + 1] = np.arange(end - start, -1, -1)
    keep = position_from_end < n_targets
    reps = max(1, len(users) // max(1, int(keep.sum())))
    return np.tile(users[keep], reps), np.tile(items[keep], reps)


def refine_epochs(denoiser: Denoiser, config: DeftRecConfig, conditions: torch.Tensor, users: np.ndarray,
                  items: np.ndarray, item_q: torch.Tensor, epochs: int, patience: int,
                  check: Callable[[int], int], rng: np.random.Generator, generator: torch.Generator,
                  device: torch.device | str, on_epoch: Callable[[int, bool, bool], None] | None = None,
                  history: tuple[np.ndarray, np.ndarray] | None = None, ema_decay: float = 0.0,
                  seconds: float = 0.0) -> str:
    """Train `denoiser` in place for up to `epochs` epochs on the pairs (users[i], items[i]) with conditions[user]
    as c; check(epoch) runs every 3 epochs and at the last one and returns the best epoch so far; stops once
    3·patience epochs have passed without a better check (patience 0: never) or at the first check once `seconds`
    have passed (0: no bound); on_epoch(epoch, checked, stopping) follows every epoch; negatives avoid the (user,
    item) pairs of `history` (default: the training pairs). Returns why it stopped: 'epochs', 'patience' or 'time'.
    ema_decay > 0 keeps an exponential moving average of the weights, updated after every step, and each check
    sees those averaged weights (the denoiser holds them while check runs, so a state it copies is the average)."""
    sampler = NegativeSampler(len(item_q), *(history if history is not None else (users, items)), rng)
    optimizer = torch.optim.AdamW(denoiser.parameters(), lr=1e-3, weight_decay=1e-5)
    average = [p.detach().clone() for p in denoiser.parameters()] if ema_decay > 0 else None
    schedule = DDPMSchedule.from_config(denoiser.config)
    objective = denoising_objective(config)
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        denoiser.train()
        order = rng.permutation(len(users))
        for start in range(0, len(order), BATCH_PAIRS):
            batch = order[start:start + BATCH_PAIRS]
            u = users[batch]
            negatives = sampler.sample(np.repeat(u, config.training.n_negatives)).reshape(len(u), -1)  # [B,n]
            x_pos = (item_q[torch.as_tensor(items[batch])] / config.diffusion.target_scale).to(device)  # [B,d]
            x_neg = (item_q[torch.as_tensor(negatives)].mean(1) / config.diffusion.target_scale).to(device)  # [B,d]
            l_diff, l_aux = denoising_losses(denoiser, schedule, x_pos, x_neg,
                                             conditions[torch.as_tensor(u)].to(device), generator, objective)
            loss = l_diff + (config.aux_weight() * l_aux if objective.loss != "none" else 0.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if average is not None:
                with torch.no_grad():
                    for a, p in zip(average, denoiser.parameters()):
                        a.lerp_(p, 1.0 - ema_decay)  # a ← decay·a + (1 − decay)·p
        checked = epoch % CHECK_EVERY == 0 or epoch == epochs
        reason = None
        if checked:
            if average is None:
                best_epoch = check(epoch)
            else:
                best_epoch = _check_averaged(denoiser, average, check, epoch)
            if patience and epoch - best_epoch >= CHECK_EVERY * patience:
                reason = "patience"
            elif seconds and time.perf_counter() - started >= seconds and epoch < epochs:
                reason = "time"
        if on_epoch is not None:
            on_epoch(epoch, checked, reason is not None)
        if reason is not None:
            return reason
    return "epochs"


def _check_averaged(denoiser: Denoiser, average: list[torch.Tensor], check: Callable[[int], int], epoch: int) -> int:
    """Run check(epoch) with the averaged weights in the denoiser, then put the trained weights back."""
    params = list(denoiser.parameters())
    trained = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, a in zip(params, average):
            p.copy_(a)
    try:
        return check(epoch)
    finally:
        with torch.no_grad():
            for p, t in zip(params, trained):
                p.copy_(t)
