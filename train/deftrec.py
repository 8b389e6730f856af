"""Joint training of DeftRec (Eq. 15: L = L_diff + γ1·L_LLM + γ2·L_neg over tokenizer, LoRA and denoiser),
then inference conditions for every user, a denoiser refinement on those cached conditions selected on
validation HR@10, and the final validation/test metrics."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np
import torch

from data.protocol import Split
from engine.model.config import PROFILES, DeftRecConfig, Profile  # noqa: F401 -- PROFILES: train.deftrec.PROFILES as before
from engine.model.deftrec import DeftRecHeads
from engine.model.llm.batches import encode_batch
from engine.model.llm.loading import llm_fingerprint
from engine.model.metrics import metrics_from_ranks
from engine.model.prompts import INPUT_TEMPLATES, RESPONSE_TEMPLATES, build_response, leading_categories
from engine.model.ranking import target_ranks
from engine.model.recommender import DeftRecModel, Preference, build_model
from engine.model.refine import refine_epochs, refinement_pairs
from engine.model.runtime import resolve_precision
from engine.model.variants import variant_of
from engine.services.memory import is_out_of_memory
from train.cf import Evaluator, NegativeSampler
from train.objective import JointBatch, JointObjective
from train.progress import log, make_progress
from train.resume import (
    ResumeState,
    optimizer_from_flat,
    optimizer_to_flat,
    random_state,
    restore_random_state,
)


def embedding_rms(llm) -> float:
    weight = llm.get_input_embeddings().weight.detach().float()
    return float(weight.pow(2).mean().sqrt())


def make_accelerator(cpu_bf16: bool = False):
    """HF Accelerate: the device (CPU, one GPU, or this process's GPU under `accelerate launch`) and bf16
    autocast where the GPU supports it, or on a CPU when cpu_bf16 and bf16 measures faster there than fp32
    (`cpu_bf16_pays`: a joint step of 8 users took 5.1 s in bf16 against 6.7 s in fp32 on a 2-core AMD EPYC,
    9.5 s against 7.5 s on a 2-core Intel Xeon, both with avx512_bf16)."""
    from accelerate import Accelerator

    from engine.model.runtime import cpu_bf16_pays, cpu_bf16_speedup, cpu_supports_bf16
    cuda = torch.cuda.is_available()
    bf16 = torch.cuda.is_bf16_supported() if cuda else (cpu_bf16 and cpu_bf16_pays())
    accelerator = Accelerator(cpu=not cuda, mixed_precision="bf16" if bf16 else "no")
    if not cuda and cpu_bf16 and cpu_supports_bf16() and accelerator.is_main_process:  # the probe ran: say what it chose
        log(f"deftrec: joint training in {'bf16' if bf16 else 'fp32'} (bf16 autocast measured "
            f"{cpu_bf16_speedup():.2f}× the speed of fp32 on this CPU)")
    return accelerator


class JointSampler:
    """Draws joint-training micro-batches: users, the prompt history and held-out train items as positives.

    history 'random' (the paper): positives drawn from the user's train items, the prompt a shuffled sample of the
    others. history 'recent': a cut point in the time-ordered train sequence, the prompt the items just before it
    in time order, the positives the items right after it (next-item prediction, as at inference).
    With distinct_positives each of the profile's diffusion_repeats noise draws gets its own positive and
    negatives (Eq. 10/13 are expectations over the user's positives); otherwise one positive is repeated.
    The response names the target's category (response 'target') or the prompt history's leading categories.
    """

    def __init__(self, model: DeftRecModel, split: Split, profile: Profile, rng: np.random.Generator) -> None:
        self.model, self.split, self.profile, self.rng = model, split, profile, rng
        users_all, items_all = split.train_pairs()
        self.negatives = NegativeSampler(split.n_items, users_all, items_all, rng)
        self.sequences = [np.array(h, dtype=np.int64) for h in model.histories]  # time order, repeats kept (copies)

    def draw(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        """(prompt history, positives [R]) of one user."""
        config, rng, max_history = self.model.config, self.rng, self.profile.max_history
        repeats = max(1, self.profile.diffusion_repeats)
        wanted = repeats if config.training.distinct_positives else 1
        seq = self.sequences[user]
        if config.prompt.history == "recent":
            cut = int(rng.integers(min(max_history, len(seq) - 1), len(seq))) if len(seq) > 1 else 0
            shown, positives = seq[max(0, cut - max_history):cut], seq[cut:cut + wanted]
        else:
            items = np.sort(seq)  # order-free before the shuffle
            distinct = np.unique(items)
            positives = rng.choice(distinct, size=min(wanted, max(1, len(distinct) - 1)), replace=False)
            shown = rng.permutation(items[~np.isin(items, positives)] if len(distinct) > 1 else items)[:max_history]
        return shown, np.resize(positives, repeats)  # [R]: cycled when fewer distinct ones exist

    def batch(self, size: int | None = None) -> JointBatch:
        model, rng, config = self.model, self.rng, self.model.config
        users = rng.choice(self.split.n_users, size or self.profile.batch_size, replace=False).tolist()
        positives, kept, template_ids, responses, prompts = [], [], [], [], []
        for user in users:
            shown, pos = self.draw(user)
            template_id = int(rng.integers(len(INPUT_TEMPLATES)))
            response_id = int(rng.integers(len(RESPONSE_TEMPLATES)))
            if config.prompt.response == "target":
                response = build_response(response_id, model.categories[int(pos[0])] or "various")
                prompt, shown_kept = model.build_prompts([user], [shown], [template_id], [response])
            else:  # the leading categories of what the prompt shows, recomputed if the prompt had to drop items
                shown_kept = [shown]
                while True:
                    response = build_response(response_id, leading_categories(
                        [model.categories[int(i)] for i in shown_kept[0]]) or "various")
                    prompt, fitted = model.build_prompts([user], shown_kept, [template_id], [response])
                    if len(fitted[0]) == len(shown_kept[0]):
                        break
                    shown_kept = fitted
            positives.append(pos)
            kept.append(shown_kept[0])
            template_ids.append(template_id)
            responses.append(response)
            prompts.append(prompt[0])
        encoded = encode_batch(model.tokenizer, prompts, responses, config.prompt.max_length)
        pos = np.stack(positives).T.reshape(-1)  # [R*B], repeat-major: row j*B + b is user b's j-th positive
        negatives = self.negatives.sample(np.repeat(np.tile(users, len(pos) // len(users)),
                                                    config.training.n_negatives)).reshape(len(pos), -1)  # [R*B,n]
        device, scale = model.device, config.diffusion.target_scale
        return JointBatch(
            input_ids=encoded["input_ids"].to(device), attention_mask=encoded["attention_mask"].to(device),
            labels=encoded["labels"].to(device), response_mask=encoded["response_mask"].to(device),
            user_q=model.user_q[torch.as_tensor(users)].to(device),  # [B,d]
            history_q=[model.item_q[torch.as_tensor(h, dtype=torch.long)].to(device) for h in kept],
            template_ids=template_ids,
            x_pos=(model.item_q[torch.as_tensor(pos)] / scale).to(device),  # [R*B,d]
            x_neg=(model.item_q[torch.as_tensor(negatives)].mean(1) / scale).to(device))  # [R*B,d]


def _is_running_statistic(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return last == "num_batches_tracked" or last.startswith("running_")  # running_mean / _var, the probe's bank


def trainable_state(objective: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What training changes: the trainable parameters and the running statistics of normalization layers."""
    state = {name: p.detach().clone() for name, p in objective.named_parameters() if p.requires_grad}
    state |= {name: b.detach().clone() for name, b in objective.named_buffers() if _is_running_statistic(name)}
    return state


def load_trainable_state(objective: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    tensors = dict(objective.named_parameters()) | dict(objective.named_buffers())
    with torch.no_grad():
        for name, value in state.items():
            tensors[name].copy_(value.to(tensors[name].device, tensors[name].dtype))


def validation_hr(model: DeftRecModel, evaluator: Evaluator, users: list[int], profile: Profile,
                  seed: int) -> dict:
    """Validation metrics of the current model on a user subset, through the inference path (generated text)."""
    model.llm.eval()
    prefs = []
    for start in range(0, len(users), profile.describe_batch):
        prefs += model.describe(users[start:start + profile.describe_batch])
    finals = model.trajectories(torch.stack([p.condition for p in prefs]), users, seed)[-1]  # [U,d]
    scores = model.scores(finals, [p.category for p in prefs])  # [U,n_items]
    ranks = target_ranks(scores, torch.as_tensor(evaluator.split.valid_item[users]),
                         evaluator.train_history.mask(np.asarray(users), scores.shape[1]))
    model.llm.train()
    return metrics_from_ranks(ranks)


def joint_training(model: DeftRecModel, split: Split, evaluator: Evaluator, profile: Profile, seed: int,
                   resume: ResumeState | None = None) -> tuple[list[dict], dict]:
    """Phase 1: the joint objective of Eq. 15 through Accelerate, with gradient accumulation, resume
    checkpoints and (when the profile asks) validation HR@10 on a user subset for early stopping."""
    config = model.config
    accelerator = make_accelerator(profile.cpu_bf16 and config.llm.name != "tiny")
    rng = np.random.default_rng([seed, accelerator.process_index])  # each process draws its own users
    generator = torch.Generator().manual_seed(seed + 7919 * accelerator.process_index)
    objective = JointObjective(model.llm, model.heads, config, model.ct_id)
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=profile.lr, weight_decay=profile.weight_decay)
    objective, optimizer = accelerator.prepare(objective, optimizer)
    if accelerator.num_processes > 1 and accelerator.is_main_process:
        log(f"deftrec: joint training in {accelerator.num_processes} processes ({accelerator.distributed_type}), "
            f"{profile.batch_size} users each per micro-batch")
    sampler = JointSampler(model, split, profile, rng)
    val_users = (np.random.default_rng(seed + 7).permutation(split.n_users)[: profile.val_users].tolist()
                 if profile.val_every else [])
    log_rows: list[dict] = []
    first_step = 1
    selection = {"best_step": None, "best_hr": -1.0, "checks": [], "stopped_early": False}
    best_state = None
    saved = resume.load("joint") if resume is not None else None
    if saved is not None:
        tensors, state = saved
        load_trainable_state(accelerator.unwrap_model(objective),
                             {k[6:]: v for k, v in tensors.items() if k.startswith("param.")})
        optimizer_from_flat(optimizer, tensors, state["optimizer"])
        restore_random_state(rng, generator, tensors, state["random"])
        log_rows, selection, first_step = state["log"], state["selection"], state["step"] + 1
        if any(k.startswith("best.") for k in tensors):
            best_state = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
        log(f"deftrec: resuming joint training after step {state['step']}")
    selection["precision"] = "bf16" if accelerator.mixed_precision == "bf16" else "fp32"
    objective.train()
    started = time.perf_counter()
    micro_batch, grad_accum = profile.batch_size, profile.grad_accum
    with make_progress() as progress:
        task = progress.add_task("deftrec joint", total=profile.steps, status="", completed=first_step - 1)
        for step in range(first_step, profile.steps + 1):
            while True:  # out of memory: the same step again with half the micro-batch and twice the accumulation
                try:
                    parts = accumulate_step(objective, sampler, accelerator, generator, micro_batch, grad_accum)
                    break
                except BaseException as error:
                    if not is_out_of_memory(error) or micro_batch == 1:
                        raise
                    optimizer.zero_grad(set_to_none=True)
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    micro_batch, grad_accum = max(1, micro_batch // 2), grad_accum * 2
                    log(f"deftrec: out of memory at step {step}; continuing with micro-batches of {micro_batch} "
                        f"users × {grad_accum} accumulation steps")
            accelerator.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            row = {"step": step, **{k: round(v, 5) for k, v in parts.items()}}
            log_rows.append(row)
            done = step - first_step + 1
            rate = done * micro_batch * grad_accum / (time.perf_counter() - started)
            status = " ".join(f"{key.removeprefix('l_')} {row[key]:.3f}" for key in
                              ("loss", "l_diff", "l_llm", "l_neg", "l_disp", "l_rec", "l_align") if key in row)
            status = f"{status} {rate:.1f} samples/s".replace("loss ", "L ", 1)
            if profile.val_every and (step % profile.val_every == 0 or step == profile.steps):
                metrics = validation_hr(model, evaluator, val_users, profile, seed)
                selection["checks"].append({"step": step, "HR@10": metrics["HR@10"], "NDCG@10": metrics["NDCG@10"]})
                if metrics["HR@10"] > selection["best_hr"]:
                    selection["best_hr"], selection["best_step"] = metrics["HR@10"], step
                    best_state = trainable_state(accelerator.unwrap_model(objective))
                status += f" val HR@10 {metrics['HR@10']:.4f} (best {selection['best_hr']:.4f} @ {selection['best_step']})"
                since_best = sum(1 for c in selection["checks"] if c["step"] > selection["best_step"])
                if profile.val_patience and since_best >= profile.val_patience:
                    selection["stopped_early"] = True
            progress.update(task, advance=1, status=status)
            if resume is not None and accelerator.is_main_process and (step % profile.checkpoint_every == 0 or step == profile.steps
                                       or selection["stopped_early"]):
                save_joint_checkpoint(resume, accelerator.unwrap_model(objective), optimizer, rng, generator,
                                      step, log_rows, selection, best_state)
            if selection["stopped_early"]:
                log(f"deftrec: early stop at step {step}, best validation HR@10 at step {selection['best_step']}")
                break
    if best_state is not None:
        load_trainable_state(accelerator.unwrap_model(objective), best_state)
    model.llm.eval()
    return log_rows, selection


def accumulate_step(objective, sampler: JointSampler, accelerator, generator: torch.Generator, micro_batch: int,
                    grad_accum: int) -> dict[str, float]:
    """Forward and backward of grad_accum micro-batches (gradients synchronized on the last one only)."""
    parts: dict[str, float] = {}
    for micro in range(grad_accum):
        batch = sampler.batch(micro_batch)
        sync = micro == grad_accum - 1
        with contextlib.nullcontext() if sync else accelerator.no_sync(objective):
            losses = objective(batch, generator)
            accelerator.backward(losses["loss"] / grad_accum)
        for key, value in losses.items():
            parts[key] = parts.get(key, 0.0) + float(value.detach()) / grad_accum
    return parts


def save_joint_checkpoint(resume: ResumeState, objective: torch.nn.Module, optimizer, rng, generator, step: int,
                          log_rows: list[dict], selection: dict, best_state: dict | None) -> None:
    """Trainable weights, optimizer, random states and the loss log after `step` (for --resume)."""
    optim_tensors, optim_meta = optimizer_to_flat(optimizer)
    rng_tensors, rng_meta = random_state(rng, generator)
    tensors = {f"param.{k}": v for k, v in trainable_state(objective).items()} | optim_tensors | rng_tensors
    if best_state is not None:
        tensors |= {f"best.{k}": v for k, v in best_state.items()}
    resume.save("joint", tensors, {"step": step, "log": log_rows, "selection": selection,
                                   "optimizer": optim_meta, "random": rng_meta})


def describe_all(model: DeftRecModel, profile: Profile, resume: ResumeState | None = None) -> list[Preference]:
    """Phase 2: every user's generated preference sentence and inference condition, in batches of users with
    similar prompt lengths (less padding), saved after each batch for --resume."""
    n_users = len(model.histories)
    done: dict[int, Preference] = {}
    saved = resume.load("describe") if resume is not None else None
    if saved is not None:
        tensors, state = saved
        for row, item in enumerate(state["preferences"]):
            done[item["user_idx"]] = Preference(condition=tensors["conditions"][row], **item)
        log(f"deftrec: resuming with {len(done)} of {n_users} users described")
    lengths = model.prompt_lengths(list(range(n_users)))
    todo = [u for u in np.argsort(lengths, kind="stable").tolist() if u not in done]
    with make_progress() as progress:
        task = progress.add_task("describe users", total=n_users, status="", completed=len(done))
        started = time.perf_counter()
        from engine.services.memory import adaptive_batches
        finished = 0
        for users, prefs in adaptive_batches(todo, profile.describe_batch, model.describe, lambda size, error: log(
                f"describe: out of memory ({str(error).splitlines()[0][:80]}), continuing with batches of {size}")):
            for pref in prefs:
                done[pref.user_idx] = pref
            if resume is not None:
                ordered = list(done.values())
                resume.save("describe", {"conditions": torch.stack([p.condition for p in ordered])},
                            {"preferences": [{"user_idx": p.user_idx, "prompt": p.prompt, "text": p.text,
                                              "category": p.category} for p in ordered]})
            finished += len(users)
            progress.update(task, advance=len(users),
                            status=f"{finished / (time.perf_counter() - started):.1f} users/s")
    return [done[u] for u in range(n_users)]


def evaluate_cached(model: DeftRecModel, evaluator: Evaluator, conditions: torch.Tensor,
                    categories: list[str | None], which: str, seed: int,
                    temperature: float | None = None, guidance: float | None = None) -> tuple[dict, np.ndarray]:
    """Metrics of the current heads from cached conditions; the same generator seed every time."""
    finals = model.trajectories(conditions, list(range(len(conditions))), seed, temperature, guidance)[-1]  # [U,d]
    return final_metrics(model, evaluator, finals, categories, which), finals


def final_metrics(model: DeftRecModel, evaluator: Evaluator, finals: torch.Tensor, categories: list[str | None],
                  which: str) -> dict:
    """Metrics of preference vectors [U,d] under the model's retriever, train (valid) or train+valid (test) masked."""
    scores = model.scores(finals, categories)  # [U,n_items]
    history = evaluator.train_history if which == "valid" else evaluator.test_history
    targets = evaluator.split.valid_item if which == "valid" else evaluator.split.test_item
    users = np.arange(len(finals))
    ranks = target_ranks(scores, torch.as_tensor(targets), history.mask(users, scores.shape[1]))
    return metrics_from_ranks(ranks)


def choose_item_norm(model: DeftRecModel, evaluator: Evaluator, finals: torch.Tensor, categories: list[str | None],
                     item_norms: tuple[float, ...]) -> tuple[list[dict], dict]:
    """Rank the kept preference vectors [U,d] with each item weight ‖q_j‖^α of `item_norms` on validation, keep the
    best HR@10, then NDCG@10 (a tie goes to the smaller α), and set the model's config and retriever to it;
    (checks, the chosen α's validation metrics)."""
    checks, best = [], None
    for alpha in sorted(set(item_norms)):
        model.retriever = model.build_retriever(alpha)
        metrics = final_metrics(model, evaluator, finals, categories, "valid")
        checks.append({"item_norm": alpha, "HR@10": metrics["HR@10"], "NDCG@10": metrics["NDCG@10"]})
        if best is None or (metrics["HR@10"], metrics["NDCG@10"]) > (best[0]["HR@10"], best[0]["NDCG@10"]):
            best = (metrics, alpha, model.retriever)
    metrics, alpha, model.retriever = best
    model.config = model.config.updated({"retrieval.item_norm": alpha})
    model.heads.config = model.config
    return checks, metrics


def refine_denoiser(model: DeftRecModel, split: Split, evaluator: Evaluator, prefs: list[Preference],
                    profile: Profile, seed: int, temperatures: tuple[float, ...] = (),
                    guidances: tuple[float, ...] = (), item_norms: tuple[float, ...] = ()) -> tuple[dict, int, dict]:
    """Phase 3: train the denoiser on (inference condition, train item) pairs; keep the epoch, sampling
    temperature and guidance weight (among `temperatures` / `guidances`, default the config's) with the best
    validation HR@10, then NDCG@10; then the retriever's item weight α among `item_norms` (default the config's)
    the same way."""
    config = model.config
    heads = model.heads
    conditions = torch.stack([p.condition for p in prefs])  # [U,D]
    categories = [p.category for p in prefs]
    temperatures = temperatures or (config.diffusion.sampling_temperature,)
    guidances = guidances if (guidances and config.diffusion.cond_dropout > 0) else (config.diffusion.guidance,)
    checks: list[dict] = []

    def check(epoch: int, best: tuple | None) -> tuple:
        for tau in temperatures:
            for weight in guidances:
                metrics, _ = evaluate_cached(model, evaluator, conditions, categories, "valid", seed, tau, weight)
                checks.append({"epoch": epoch, "temperature": tau, "guidance": weight, "HR@10": metrics["HR@10"],
                               "NDCG@10": metrics["NDCG@10"]})
                if best is None or (metrics["HR@10"], metrics["NDCG@10"]) > best[:2]:
                    best = (metrics["HR@10"], metrics["NDCG@10"], epoch,
                            {k: v.clone() for k, v in heads.state_dict().items()}, tau, weight)
        return best

    best = check(0, None)
    if heads.denoiser is None or profile.refine_epochs == 0:
        return _keep_best(model, best, evaluator, conditions, categories, seed, checks, item_norms)
    users, items = split.train_pairs()  # distinct pairs
    if config.prompt.history == "recent":  # each user's latest items, from the time-ordered sequences
        users, items = refinement_pairs("recent", np.repeat(np.arange(len(model.histories)),
                                                            [len(h) for h in model.histories]),
                                        np.concatenate(model.histories).astype(np.int64),
                                        config.training.refine_targets)
    if config.training.refine_init == "fresh":  # the epoch-0 check above stays a candidate: the joint denoiser
        fresh_denoiser(heads.denoiser, seed)
    rng = np.random.default_rng(seed + 1)
    generator = torch.Generator().manual_seed(seed + 1)

    def check_epoch(epoch: int) -> int:
        nonlocal best
        best = check(epoch, best)
        return best[2]

    with make_progress() as progress:
        task = progress.add_task("refine denoiser", total=profile.refine_epochs, status="")

        def on_epoch(epoch: int, checked: bool, stopping: bool) -> None:
            if checked:
                progress.update(task, status=f"val HR@10 {checks[-1]['HR@10']:.4f} "
                                             f"(best {best[0]:.4f} @ {best[2]}, τ={best[4]:g}, w={best[5]:g})")
            progress.update(task, advance=1)
            if stopping:
                log(f"refine: stopped at epoch {epoch}, best validation HR@10 at epoch {best[2]}")

        stopped = refine_epochs(heads.denoiser, config, conditions, users, items, model.item_q, profile.refine_epochs,
                                profile.refine_patience, check_epoch, rng, generator, model.device, on_epoch,
                                history=split.train_pairs(), seconds=profile.refine_seconds)
    if stopped == "time":
        log(f"refine: the profile's {profile.refine_seconds:g} s were spent (--refine-seconds 0 lifts the bound)")
    metrics, epoch, record = _keep_best(model, best, evaluator, conditions, categories, seed, checks, item_norms)
    return metrics, epoch, {**record, "stopped": stopped}


def fresh_denoiser(denoiser: torch.nn.Module, seed: int) -> None:
    """Give the denoiser the weights (and condition statistics) a newly built one of its config has, seeded by
    `seed`, in place (refine_init 'fresh')."""
    from engine.model.diffusion import Denoiser
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 2)
        state = Denoiser(denoiser.config).state_dict()
    denoiser.load_state_dict(state)


def _keep_best(model: DeftRecModel, best: tuple, evaluator: Evaluator, conditions: torch.Tensor,
               categories: list[str | None], seed: int, checks: list[dict],
               item_norms: tuple[float, ...] = ()) -> tuple[dict, int, dict]:
    """Load the selected heads, fix the selected temperature and guidance into the model's config, then choose the
    item weight α on validation (choose_item_norm); (valid, epoch, record)."""
    model.heads.load_state_dict(best[3])
    model.config = model.config.updated({"diffusion.sampling_temperature": best[4], "diffusion.guidance": best[5]})
    model.heads.config = model.config
    metrics, finals = evaluate_cached(model, evaluator, conditions, categories, "valid", seed)
    record = {"epoch": best[2], "temperature": best[4], "guidance": best[5], "checks": checks}
    if item_norms:
        record["item_norm_checks"], metrics = choose_item_norm(model, evaluator, finals, categories, item_norms)
        record["item_norm"] = model.config.retrieval.item_norm
    return metrics, best[2], record


@dataclass
class DeftRecOutcome:
    model: DeftRecModel
    preferences: list[Preference]
    valid: dict
    test: dict
    log: list[dict]
    selection: dict
    refine_epoch: int
    refine: dict
    seconds: dict
    tokenizer: dict  # σ-VAE pre-training record and the final tokens' collapse statistics


def train_deftrec(split: Split, evaluator: Evaluator, user_q: torch.Tensor, item_q: torch.Tensor,
                  config: DeftRecConfig, seed: int, *, qlora: bool = False,
                  resume: ResumeState | None = None, temperatures: tuple[float, ...] = (),
                  guidances: tuple[float, ...] = (), joint_only: bool = False,
                  item_norms: tuple[float, ...] = ()) -> DeftRecOutcome | None:
    """All DeftRec phases under the config's profile; returns the trained model and its metrics (selected on
    validation only); joint_only (a non-main process of a multi-process training) stops after the joint phase."""
    torch.manual_seed(seed)
    timings = {}
    t0 = time.perf_counter()
    profile = config.profile
    if config.training.cf == "random":
        g = torch.Generator().manual_seed(seed)
        user_q = torch.randn(user_q.shape, generator=g) * user_q.std()
        item_q = torch.randn(item_q.shape, generator=g) * item_q.std()
    target_scale = float(item_q.pow(2).mean().sqrt())
    model = build_model(config, (split.items["title"].tolist(), split.items["category"].tolist(),
                                 split.train_histories()), user_q, item_q, seed, qlora=qlora)
    config = config.with_llm_hidden(model.llm.config.hidden_size).updated({
        "tokenizer.out_scale": embedding_rms(model.llm), "diffusion.target_scale": target_scale,
        "prompt.max_history": profile.max_history, "prompt.max_length": profile.max_length,
        "llm.fingerprint": llm_fingerprint(config.llm.name),
        "llm.inference_precision": resolve_precision(config.llm.inference_precision, model.device.type)})
    config = config.updated({"variant": variant_of(config)})
    model.config = config
    model.heads = DeftRecHeads(config).to(model.device)
    log(f"deftrec: LLM {config.llm.name} (hidden {config.llm.hidden}), K={config.tokenizer.k}, variant {config.variant}, "
        f"profile {profile.name}: {profile.steps} joint steps × {profile.batch_size} users, "
        f"texts in {config.llm.inference_precision}")
    pretrain = {}
    if model.heads.tokenizer.has_decoder:
        t_pretrain = time.perf_counter()
        pretrain = pretrain_tokenizer(model, config.tokenizer.pretrain_epochs, seed)
        timings["tokenizer_pretrain"] = time.perf_counter() - t_pretrain
    rows, selection = joint_training(model, split, evaluator, profile, seed, resume)
    timings["joint"] = time.perf_counter() - t0 - timings.get("tokenizer_pretrain", 0.0)  # model load + joint steps
    if joint_only:
        return None
    t1 = time.perf_counter()
    model.llm.eval()
    from engine.model.llm.lora import merged_lora
    with merged_lora(model.llm):  # training is over: generate at the speed (and with the weights) of a loaded run
        prefs = describe_all(model, profile, resume)
    timings["describe"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    valid, refine_epoch, refine_record = refine_denoiser(model, split, evaluator, prefs, profile, seed, temperatures,
                                                         guidances, item_norms)
    log(f"deftrec: refinement kept epoch {refine_epoch}, sampling temperature "
        f"{model.config.diffusion.sampling_temperature:g}, guidance {model.config.diffusion.guidance:g}, "
        f"item weight ‖q‖^{model.config.retrieval.item_norm:g}")
    timings["refine"] = time.perf_counter() - t2
    conditions = torch.stack([p.condition for p in prefs])
    test, _ = evaluate_cached(model, evaluator, conditions, [p.category for p in prefs], "test", seed)
    log(f"deftrec: valid HR@10 {valid['HR@10']:.4f} NDCG@10 {valid['NDCG@10']:.4f}; "
        f"test HR@10 {test['HR@10']:.4f} NDCG@10 {test['NDCG@10']:.4f}")
    return DeftRecOutcome(model=model, preferences=prefs, valid=valid, test=test, log=rows, selection=selection,
                          refine_epoch=refine_epoch, refine=refine_record, seconds={k: round(v, 1) for k, v in timings.items()},
                          tokenizer=pretrain | tokenizer_health(model))


def pretrain_tokenizer(model: DeftRecModel, epochs: int, seed: int, batch_size: int = 256) -> dict:
    """σ-VAE pre-training: reconstruction only, over every user and item embedding (ContRec's optional warm-up);
    returns {epochs, reconstruction MSE over all embeddings before and after}."""
    heads = model.heads
    if epochs <= 0:
        return {"pretrain_epochs": 0}
    tokenizer = heads.tokenizer
    generator = torch.Generator().manual_seed(seed + 3)
    rng = np.random.default_rng(seed + 3)
    device = model.device
    user_q, item_q = model.user_q.to(device), model.item_q.to(device)
    optimizer = torch.optim.AdamW(tokenizer.parameters(), lr=1e-3, weight_decay=1e-5)

    def full_loss() -> float:
        tokenizer.eval()
        with torch.no_grad():
            return float(heads.reconstruction_loss(user_q, item_q))

    before = full_loss()
    with make_progress() as progress:
        task = progress.add_task("σ-VAE pre-training", total=epochs, status="")
        for _ in range(epochs):
            tokenizer.train()
            users, items = rng.permutation(len(user_q)), rng.permutation(len(item_q))
            n_batches = max(1, -(-max(len(users), len(items)) // batch_size))
            for b in range(n_batches):
                u = torch.as_tensor(users[b * batch_size:(b + 1) * batch_size])
                i = torch.as_tensor(items[b * batch_size:(b + 1) * batch_size])
                loss = heads.reconstruction_loss(user_q[u], item_q[i], generator)  # an empty side is skipped
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            progress.update(task, advance=1, status=f"reconstruction {loss.item():.4f}")
    after = full_loss()
    log(f"deftrec: σ-VAE pre-training {epochs} epochs, reconstruction MSE {before:.4f} -> {after:.4f}")
    return {"pretrain_epochs": epochs, "reconstruction_before": round(before, 5), "reconstruction_after": round(after, 5)}


@torch.no_grad()
def tokenizer_health(model: DeftRecModel) -> dict:
    """Collapse statistics of the trained tokenizer's inference tokens over all users and items: the effective
    rank (exp of the entropy of the normalized singular values) and the mean pairwise cosine of the tokens."""
    tokenizer = model.heads.tokenizer
    tokenizer.eval()
    device = model.device
    record = {}
    for side, encode, q in (("user", tokenizer.encode_users, model.user_q), ("item", tokenizer.encode_items, model.item_q)):
        tokens = encode(q.to(device)).flatten(1).float().cpu()  # [N, K*D]
        record[f"{side}_effective_rank"] = round(effective_rank(tokens), 2)
        unit = torch.nn.functional.normalize(tokens - tokens.mean(0), dim=1)  # [N, K*D]
        sample = unit[:2000]
        cos = sample @ sample.T  # [n, n]
        n = len(sample)
        record[f"{side}_mean_abs_cosine"] = round(float((cos.abs().sum() - n) / max(n * (n - 1), 1)), 4)
        if tokenizer.has_decoder:
            side_vae = tokenizer.user if side == "user" else tokenizer.item
            record[f"{side}_reconstruction"] = round(float(
                torch.nn.functional.mse_loss(side_vae.decode(side_vae.encode(q.to(device))[0]), q.to(device)).cpu()
                / model.config.diffusion.target_scale ** 2), 5)
    return record


def effective_rank(matrix: torch.Tensor) -> float:
    """Roy & Vetterli 2007: exp(H(p)) with p the singular values of the centered matrix [N, F] divided by their sum."""
    singular = torch.linalg.svdvals(matrix - matrix.mean(0))  # [min(N, F)]
    p = singular / singular.sum().clamp_min(1e-12)
    entropy = -(p * p.clamp_min(1e-12).log()).sum()
    return float(entropy.exp())
