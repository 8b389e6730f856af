"""What an interrupted `deftrec train` leaves for `--resume`: `runs/.NAME.resume/`, one safetensors file per
finished phase (CF stage, joint-training checkpoint, generated preferences) with its JSON state in the file's
metadata, each replaced atomically, plus `identity.json` so a resume never mixes datasets, LLMs or settings."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from data.errors import RunError

IDENTITY = "identity.json"


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class ResumeState:
    """The resume folder of one run name."""

    def __init__(self, root: str | Path, name: str) -> None:
        self.path = Path(root) / f".{name}.resume"
        self.name = name

    def exists(self) -> bool:
        return (self.path / IDENTITY).is_file()

    def start(self, identity: dict) -> None:
        """A fresh folder for a new training (any older one is removed)."""
        self.remove()
        self.path.mkdir(parents=True)
        _atomic_write_text(self.path / IDENTITY, json.dumps(identity, indent=2, default=str))

    def check(self, identity: dict) -> None:
        """Refuse to resume a training made from another dataset, LLM or setting."""
        try:
            saved = json.loads((self.path / IDENTITY).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise RunError(f"the interrupted training's identity is unreadable ({exc})",
                           path=self.path / IDENTITY, hint="start over with --force") from None
        for key, what in (("dataset_checksum", "another dataset"), ("llm_fingerprint", "another LLM")):
            if saved.get(key) != identity.get(key):
                raise RunError(f"cannot resume: the interrupted training of {self.name!r} was made from {what} "
                               f"({key} {saved.get(key)!r}, now {identity.get(key)!r})",
                               path=self.path, hint="resume with the same data and --llm, or start over with --force")
        for key in sorted(set(saved) | set(identity)):
            if saved.get(key) != identity.get(key):
                raise RunError(f"cannot resume: setting {key!r} was {saved.get(key)!r}, now {identity.get(key)!r}",
                               path=self.path, hint="resume with the same options, or start over with --force")

    def remove(self) -> None:
        if self.path.exists():
            shutil.rmtree(self.path)

    # ------------------------------------------------------------------ phases

    def save(self, phase: str, tensors: dict[str, torch.Tensor], state: dict) -> None:
        """Write `<phase>.safetensors` (tensors + JSON state in its metadata) atomically."""
        from safetensors.torch import save_file
        target = self.path / f"{phase}.safetensors"
        tmp = target.with_name(target.name + ".tmp")
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
                  metadata={"state": json.dumps(state, default=_json_default)})
        os.replace(tmp, target)

    def load(self, phase: str) -> tuple[dict[str, torch.Tensor], dict] | None:
        """(tensors, state) of a saved phase, or None when the phase was not reached."""
        from safetensors import safe_open
        target = self.path / f"{phase}.safetensors"
        if not target.is_file():
            return None
        try:
            with safe_open(str(target), framework="pt", device="cpu") as handle:
                state = json.loads(handle.metadata()["state"])
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except Exception as exc:  # noqa: BLE001  a damaged checkpoint is the user's problem, on one line
            raise RunError(f"damaged checkpoint ({exc})", path=target, hint="start over with --force") from None
        return tensors, state


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


# ---------------------------------------------------------------------- optimizer and random state


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state_dict as (tensors, JSON) for safetensors."""
    state_dict = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state_dict["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def random_state(rng: np.random.Generator, generator: torch.Generator) -> tuple[dict[str, torch.Tensor], dict]:
    """numpy, explicit torch and global torch random states, so a resumed training draws what it would have."""
    tensors = {"rng.generator": generator.get_state(), "rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = cuda_state
    return tensors, {"numpy": rng.bit_generator.state}


def restore_random_state(rng: np.random.Generator, generator: torch.Generator, tensors: dict, meta: dict) -> None:
    rng.bit_generator.state = meta["numpy"]
    generator.set_state(tensors["rng.generator"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(t for t in tensors if t.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
