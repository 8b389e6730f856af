"""`deftrec train`: data → protocol → CF stage (→ DeftRec, when asked) → one self-contained run directory."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from data.catalog import Catalog
from data.errors import RunError
from data.protocol import prepare
from data.registry import load_dataset
from engine.model.config import PROFILES, DeftRecConfig
from engine.model.runtime import flush_denormals
from train.cf import CFResult, CFTrainConfig, Evaluator, train_bpr_model, train_popularity
from train.checkpoint import RunBuilder, training_lock
from train.progress import log
from train.resume import ResumeState


@dataclass
class TrainRequest:
    """Everything `deftrec train` was asked for."""

    dataset: str = "ml-100k"
    out_root: Path = Path("runs")
    name: str | None = None
    stage: str = "cf"
    min_count: int = 5
    seed: int = 0
    force: bool = False
    threads: int | None = None
    cf: CFTrainConfig = field(default_factory=CFTrainConfig)
    profile: str = "quick"  # engine.model.config.PROFILES name; it replaces the profile of `deftrec`
    max_history: int | None = None  # items a prompt shows, replacing the profile's (None: the profile's own)
    refine_patience: int | None = None  # refinement checks without improvement before stopping (None: the profile's)
    refine_epochs: int | None = None  # the refinement's most epochs (None: the profile's)
    refine_seconds: float | None = None  # the refinement's time bound in seconds, 0 none (None: the profile's)
    deftrec: DeftRecConfig = field(default_factory=DeftRecConfig)  # the DeftRec settings (stage all)
    temperatures: tuple[float, ...] = ()  # sampling temperatures to choose among on validation (default: the config's)
    item_norms: tuple[float, ...] = ()  # retrieval item weights ‖q_j‖^α to choose among on validation (default: the config's)
    guidances: tuple[float, ...] = ()  # guidance weights to choose among on validation (with condition dropout)
    qlora: bool = False
    resume: bool = False


def default_run_name(dataset: str) -> str:
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in dataset.replace(":", "-")).strip("-")
    return f"{slug[-40:]}-{time.strftime('%Y%m%d-%H%M%S')}"


def world() -> tuple[int, int]:
    """(rank, world size) of this process under `accelerate launch` / torchrun; (0, 1) otherwise."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def barrier() -> None:
    """Wait for every process of a multi-process training (no-op in a single process)."""
    if world()[1] > 1:
        from accelerate import PartialState
        PartialState(cpu=not torch.cuda.is_available()).wait_for_everyone()  # the state Accelerator will reuse


def train_run(request: TrainRequest) -> Path | None:
    """Train and write a run; returns its directory. Finished phases are kept in runs/.NAME.resume/ until the
    run is complete, so `--resume` continues an interrupted training. Under `accelerate launch` the main process
    does everything and the others join the joint training only (returning None)."""
    if request.threads:
        torch.set_num_threads(request.threads)
    flush_denormals()
    started = time.perf_counter()
    rank, size = world()
    if size > 1 and (request.stage != "all" or not request.name):
        raise RunError("a multi-process training (accelerate launch) needs --stage all and --name",
                       hint="every process must agree on the run's name")
    if rank > 0:
        return _join_joint_training(request)
    name = request.name or default_run_name(request.dataset)
    RunBuilder.check_target(request.out_root, name, force=request.force)
    with training_lock(request.out_root, name):
        return _train_run(request, name, started)


def _train_run(request: TrainRequest, name: str, started: float) -> Path:
    """train_run for the main process, holding the run's training lock."""
    if request.resume and request.force:
        raise RunError("--resume and --force contradict each other", hint="--resume continues, --force starts over")
    RunBuilder.check_target(request.out_root, name, force=request.force)
    resume = ResumeState(request.out_root, name)
    if request.resume and not resume.exists():
        raise RunError(f"nothing to resume: no interrupted training named {name!r}", path=resume.path,
                       hint="start it without --resume")
    if not request.resume and resume.exists() and not request.force:
        raise RunError(f"an interrupted training named {name!r} exists", path=resume.path,
                       hint="continue it with --resume, or start over with --force")
    raw = load_dataset(request.dataset)  # bad data fails here, before anything is written
    split = prepare(raw, min_count=request.min_count, seed=request.seed)
    log(f"{split.name}: {split.after.users} users, {split.after.items} items, "
        f"{split.after.interactions} interactions after {request.min_count}-core "
        f"({split.before.interactions} before)")
    for note in split.notes:
        log(f"note: {note}")
    cf_config = CFTrainConfig(**{**asdict(request.cf), "seed": request.seed})
    identity = _identity(request, split, cf_config)
    if request.resume:
        resume.check(identity)
    else:
        resume.start(identity)
    with RunBuilder(request.out_root, name, force=request.force) as run:
        Catalog.create(run.catalog_path, split)
        evaluator = Evaluator(split)
        results = _cf_stage(split, evaluator, cf_config, resume)
        barrier()  # the other processes read the CF embeddings from the resume folder
        for result in results[1:]:
            run.save_tensors(result.model, {"user": result.user_embeddings, "item": result.item_embeddings})
        with Catalog.open(run.catalog_path) as catalog:
            for result in results:
                catalog.put_metrics(result.model, "valid", result.valid)
                catalog.put_metrics(result.model, "test", result.test)
            deftrec_config = None
            if request.stage == "all":
                deftrec_config = _train_deftrec_stage(request, split, evaluator, results[1], run, catalog, resume)
            catalog.checkpoint()
        config = {
            "name": name,
            "stage": request.stage,
            "dataset": {"spec": request.dataset, "name": split.name, "checksum": split.checksum,
                        "before": asdict(split.before), "after": asdict(split.after), "notes": split.notes},
            "protocol": split.protocol,
            "seed": request.seed,
            "min_count": request.min_count,
            "cf": {**asdict(cf_config), "n_users": split.n_users, "n_items": split.n_items},
            "models": (["deftrec"] if deftrec_config else []) + [r.model for r in results],
            "deftrec": deftrec_config,
            "best_epochs": {r.model: r.best_epoch for r in results},
            "seconds": round(time.perf_counter() - started, 1),
        }
        path = run.commit(config)
    resume.remove()
    log(f"run written to {path} in {time.perf_counter() - started:.0f} s")
    return path


def _join_joint_training(request: TrainRequest) -> None:
    """A non-main process of `accelerate launch`: the same split, the main process's CF embeddings, then its
    share of the joint training; it writes nothing."""
    from train.deftrec import train_deftrec
    split = prepare(load_dataset(request.dataset), min_count=request.min_count, seed=request.seed)
    barrier()  # the main process has finished (or reloaded) the CF stage
    saved = ResumeState(request.out_root, request.name).load("cf")
    if saved is None:
        raise RunError("the main process left no CF embeddings to share", path=request.out_root)
    tensors, _ = saved
    train_deftrec(split, Evaluator(split), tensors["lightgcn.user"], tensors["lightgcn.item"], deftrec_config(request),
                  request.seed, qlora=request.qlora, resume=None, joint_only=True)


def _sort_adapter_modules(path: Path) -> None:
    """peft writes target_modules from a set, in an order that varies across processes: sort it, so that two trainings
    of one command write the same bytes."""
    config = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def deftrec_config(request: TrainRequest) -> DeftRecConfig:
    """The DeftRec settings a request trains with: its config under the profile it names."""
    overrides = {"max_history": request.max_history, "refine_patience": request.refine_patience,
                 "refine_epochs": request.refine_epochs, "refine_seconds": request.refine_seconds}
    profile = replace(PROFILES[request.profile], **{k: v for k, v in overrides.items() if v is not None})
    return request.deftrec.updated({"profile": profile})


def _identity(request: TrainRequest, split, cf_config: CFTrainConfig) -> dict:
    """What must be equal for --resume to continue a training: data, LLM and every setting."""
    fingerprint = None
    if request.stage == "all":
        from engine.model.llm.loading import llm_fingerprint
        fingerprint = llm_fingerprint(request.deftrec.llm.name)
    return {"dataset_checksum": split.checksum, "llm_fingerprint": fingerprint, "dataset": request.dataset,
            "stage": request.stage, "seed": request.seed, "min_count": request.min_count,
            "cf": asdict(cf_config), "profile": request.profile, "deftrec": deftrec_config(request).to_dict(),
            "temperatures": list(request.temperatures), "guidances": list(request.guidances), "qlora": request.qlora,
            "item_norms": list(request.item_norms)}


def _cf_stage(split, evaluator: Evaluator, cf_config: CFTrainConfig, resume: ResumeState) -> list[CFResult]:
    """Popularity, LightGCN and MF-BPR; reloaded from the resume folder when an earlier attempt finished them."""
    saved = resume.load("cf")
    if saved is not None:
        tensors, state = saved
        log("cf stage: reusing the results of the interrupted training")
        return [CFResult(**{**row, "user_embeddings": tensors.get(f"{row['model']}.user", torch.empty(0)),
                            "item_embeddings": tensors.get(f"{row['model']}.item", torch.empty(0))}) for row in state["results"]]
    results: list[CFResult] = [train_popularity(split, evaluator)]
    for kind in ("lightgcn", "mf"):
        results.append(train_bpr_model(kind, split, evaluator, cf_config))
    tensors = {f"{r.model}.{side}": t for r in results[1:]
               for side, t in (("user", r.user_embeddings), ("item", r.item_embeddings))}
    rows = [{"model": r.model, "valid": r.valid, "test": r.test, "best_epoch": r.best_epoch, "seconds": r.seconds,
             "config": r.config} for r in results]
    resume.save("cf", tensors, {"results": rows})
    return results


def _train_deftrec_stage(request: TrainRequest, split, evaluator, lightgcn: CFResult, run: RunBuilder,
                         catalog: Catalog, resume: ResumeState) -> dict:
    """Train DeftRec on top of LightGCN, save its parts into the run and cache results in the catalog."""
    from engine.services.run import cf_weights_name
    from train.deftrec import train_deftrec

    config = deftrec_config(request)
    outcome = train_deftrec(split, evaluator, lightgcn.user_embeddings, lightgcn.item_embeddings, config,
                            request.seed, qlora=request.qlora, resume=resume, temperatures=tuple(request.temperatures),
                            guidances=tuple(request.guidances), item_norms=tuple(request.item_norms))
    model = outcome.model
    run.save_tensors("tokenizer", model.heads.tokenizer.state_dict())
    run.save_tensors("denoiser", {f"condition.{k}": v for k, v in model.heads.condition.state_dict().items()}
                     | {f"denoiser.{k}": v for k, v in (model.heads.denoiser or model.heads.regressor).state_dict().items()})
    if config.training.cf == "random":
        run.save_tensors(cf_weights_name(config.training.cf), {"user": model.user_q, "item": model.item_q})
    model.llm.save_pretrained(str(run.path / "lora"), safe_serialization=True, save_embedding_layers=False)
    _sort_adapter_modules(run.path / "lora" / "adapter_config.json")
    model.retriever.save(str(run.path / "items.faiss"))
    catalog.put_metrics("deftrec", "valid", outcome.valid)
    catalog.put_metrics("deftrec", "test", outcome.test)
    catalog.put_preferences(outcome.preferences)  # prompt, text, category, c (float32 [D])
    # cache every user's top-20 (test-time masking) so export and the explorer reuse it
    import numpy as np
    import torch
    conditions = torch.stack([p.condition for p in outcome.preferences])
    paths = model.trajectories(conditions, list(range(split.n_users)), request.seed)
    lists = model.retriever.search(paths[-1].numpy(), evaluator.test_history, np.arange(split.n_users),
                                   [p.category for p in outcome.preferences], 20, pi=model.config.retrieval.pi,
                                   match=model.config.retrieval.pi_match)
    catalog.put_recommendations("deftrec", ({"user_idx": u, "rank": r.rank, "item_idx": r.item_idx, "cosine": r.cosine,
                                         "pi_bonus": r.pi_bonus, "score": r.score}
                                        for u, items in enumerate(lists) for r in items))
    from engine.services.diagnostics import cheap_diagnostics
    diagnostics = cheap_diagnostics(conditions, model.user_q, model.item_q, split.items["category"].tolist(),
                                    [p.text for p in outcome.preferences], [p.category for p in outcome.preferences],
                                    model.heads, evaluator, request.seed, finals=paths[-1])
    from engine.model.runtime import kernel_fingerprint
    return {"config": model.config.to_dict(), "tokenizer": outcome.tokenizer, "refine_epoch": outcome.refine_epoch,
            "refine": outcome.refine, "selection": outcome.selection,
            "seconds": outcome.seconds, "loss_log": outcome.log[-20:], "diagnostics": diagnostics,
            "kernels": kernel_fingerprint(model.device.type)}  # what wrote the texts: export warns where it differs
