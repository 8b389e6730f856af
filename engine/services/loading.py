"""A run's DeftRec rebuilt from the run directory: its own config (never CLI defaults), its weights and catalog.
The model (engine/model/recommender.py) knows no run; this service reads one."""

from __future__ import annotations

import numpy as np

from engine.model.deftrec import DeftRecHeads
from engine.model.recommender import DeftRecModel, build_model
from engine.model.runtime import flush_denormals
from engine.services.run import Run, cf_weights_name


def load_heads(run: Run, heads: DeftRecHeads) -> None:
    """The run's tokenizer, condition head and denoiser (or regression head) weights into `heads`."""
    flush_denormals()  # every path that scores with a run's heads passes here
    heads.tokenizer.load_state_dict(run.tensors("tokenizer"))
    weights = run.tensors("denoiser")
    heads.condition.load_state_dict({k[10:]: v for k, v in weights.items() if k.startswith("condition.")})
    head = heads.denoiser or heads.regressor
    head.load_state_dict({k[9:]: v for k, v in weights.items() if k.startswith("denoiser.")})
    heads.eval()


def open_deftrec(run: Run) -> DeftRecModel:
    """Rebuild a run's DeftRec on the CPU from the run's own config (never from CLI defaults) and weights."""
    from data.catalog import Catalog
    from data.errors import RunError
    config = run.deftrec_config
    if config is None:
        raise RunError("the run has no DeftRec model (trained with --stage cf)", path=run.path)
    from engine.model.llm.loading import llm_fingerprint
    found = llm_fingerprint(config.llm.name)  # a one-line error when the run's LLM is not on this machine
    if config.llm.fingerprint and found != config.llm.fingerprint:
        raise RunError(f"the run was trained on another LLM: {config.llm.name!r} here has fingerprint {found}, "
                       f"the run's is {config.llm.fingerprint}", path=run.path / "config.json",
                       hint="open it where the LLM it was trained on is installed")
    with Catalog.open(run.catalog_path, readonly=True) as catalog:
        catalog_checksum = catalog.meta().get("checksum")
        if catalog_checksum != (run.config.get("dataset") or {}).get("checksum"):
            raise RunError("the catalog holds another dataset than the one the run was trained on "
                           f"(checksum {catalog_checksum!r} vs config.json's)", path=run.catalog_path)
        items = catalog.items()
        train = catalog.train_pairs()
        n_users = catalog.n_users()
    counts = np.bincount(train[:, 0], minlength=n_users)
    histories = np.split(train[:, 1], np.cumsum(counts)[:-1])
    cf = run.tensors(cf_weights_name(config.training.cf))
    if cf["user"].shape[0] != n_users or cf["item"].shape[0] != len(items):
        raise RunError(f"the embeddings ({cf['user'].shape[0]} users, {cf['item'].shape[0]} items) do not match "
                       f"the catalog ({n_users} users, {len(items)} items): weights from another dataset",
                       path=run.path)
    model = build_model(config, ([r["title"] for r in items], [r["category"] for r in items], histories),
                        cf["user"], cf["item"], int(run.config.get("seed", 0)), lora_dir=run.path / "lora")
    load_heads(run, model.heads)
    model.llm.eval()
    return model
