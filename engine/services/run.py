"""Reading a run directory (docs/architecture.md §3): validated before anything loads, tensors via safetensors only."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from data.checksum import sha256_file
from data.errors import RunError
from engine.model.config import FORMAT_VERSION, DeftRecConfig, migrate

RUN_FORMAT = FORMAT_VERSION  # config.json's format_version
# the keys of config.json (train/pipeline.py writes them; RunBuilder.commit adds format_version, created, versions
# and files) and of its "deftrec" part: the settings ("config") and the training's records
RUN_KEYS = ("format_version", "created", "versions", "name", "stage", "dataset", "protocol", "seed", "min_count",
            "cf", "models", "deftrec", "best_epochs", "seconds", "files")
DEFTREC_KEYS = ("config", "tokenizer", "refine_epoch", "refine", "selection", "seconds", "loss_log", "diagnostics",
                "kernels")  # kernels: from 2026-12-05 on (engine.model.runtime.kernel_fingerprint)
CONFIG_NAME = "config.json"
CATALOG_NAME = "catalog.sqlite"


def cf_weights_name(cf: str | None) -> str:
    """The weights DeftRec's vectors q come from: `cf_random` for the w/o-CF ablation (cf='random'), else `lightgcn`."""
    return "cf_random" if cf == "random" else "lightgcn"


@dataclass
class Run:
    """A complete, validated run directory."""

    path: Path
    config: dict

    @classmethod
    def open(cls, path: str | Path, *, verify: bool = True) -> Run:
        path = Path(path)
        if not path.is_dir():
            raise RunError("not a run directory (no such directory)", path=path,
                           hint="train one with: deftrec train")
        config_path = path / CONFIG_NAME
        if not config_path.is_file():
            raise RunError("not a run directory (no config.json; an interrupted training leaves none)",
                           path=path, hint="train one with: deftrec train")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunError(f"config.json is not valid JSON ({exc})", path=config_path) from None
        if not isinstance(config, dict):
            raise RunError(f"config.json is not a deftrec run of format {RUN_FORMAT}", path=config_path)
        config = migrate(config, path=config_path)  # an older run, in memory (its file is left as it is)
        if config.get("format_version") != RUN_FORMAT:
            raise RunError(f"config.json is not a deftrec run of format {RUN_FORMAT} "
                           f"(format_version {config.get('format_version', config.get('format'))!r})", path=config_path)
        check_keys(config, RUN_KEYS, "", config_path)
        if config["deftrec"] is not None:
            check_keys(config["deftrec"], DEFTREC_KEYS, "deftrec.", config_path, required=("config",))
        run = cls(path=path, config=config)
        run.deftrec_config  # noqa: B018 -- parsed now: a bad setting is refused before anything loads
        if verify:
            run.verify()
        return run

    def verify(self) -> None:
        """Every file recorded at save time exists and has its recorded sha256."""
        for name, digest in self.config["files"].items():
            file = self._inside(name)
            if not file.exists():
                raise RunError("file recorded in config.json is missing", path=file)
            if file.is_file() and name != CATALOG_NAME and sha256_file(file) != digest:
                raise RunError("checksum mismatch: the file was changed or corrupted after training", path=file)

    def _inside(self, name: str) -> Path:
        """A path inside the run; names that escape the directory are refused."""
        file = (self.path / name).resolve()
        if self.path.resolve() not in file.parents:
            raise RunError(f"file name {name!r} escapes the run directory", path=self.path / CONFIG_NAME)
        return file

    @property
    def catalog_path(self) -> Path:
        return self.path / CATALOG_NAME

    @property
    def models(self) -> list[str]:
        return list(self.config.get("models", []))

    @cached_property
    def deftrec_config(self) -> DeftRecConfig | None:
        """The run's DeftRec settings, read strictly from config.json (None for a CF-only run)."""
        deftrec = self.config.get("deftrec")
        if not deftrec:
            return None
        return DeftRecConfig.from_dict(deftrec.get("config"), path=self.path / CONFIG_NAME, where="deftrec.config")

    @property
    def cf_weights(self) -> str:
        """The name of the CF weights DeftRec retrieves with (cf_weights_name of the run's DeftRec config)."""
        return cf_weights_name(self.deftrec_config.training.cf if self.deftrec_config else None)

    def kernel_drift(self, device: str = "cpu") -> str | None:
        """What differs between the kernels that wrote the run's texts (its `deftrec.kernels` record) and this
        machine's on `device`, in the parts the run's inference precision uses; None when nothing does or the run
        predates the record."""
        record = (self.config.get("deftrec") or {}).get("kernels")
        if not record or self.deftrec_config is None:
            return None
        from engine.model.runtime import kernel_drift, kernel_fingerprint, resolve_precision
        precision = resolve_precision(self.deftrec_config.llm.inference_precision, device)
        return kernel_drift(record, precision, kernel_fingerprint(device))

    def tensors(self, name: str) -> dict:
        """Load `<name>.safetensors` on the CPU."""
        from safetensors.torch import load_file
        file = self._inside(f"{name}.safetensors")
        if not file.is_file():
            raise RunError(f"the run has no {name} weights", path=file)
        try:
            return load_file(str(file), device="cpu")
        except Exception as exc:  # noqa: BLE001  safetensors raises its own error types on corrupt headers
            raise RunError(f"cannot read weights ({exc})", path=file) from None


def check_keys(values: dict, known: tuple[str, ...], prefix: str, path: Path,
               required: tuple[str, ...] | None = None) -> None:
    """A one-line RunError for the first unknown key, or missing required one (default: all known keys)."""
    if not isinstance(values, dict):
        raise RunError(f"'{prefix.rstrip('.') or 'config'}' is not an object (format {RUN_FORMAT})", path=path)
    for key in values:
        if key not in known:
            raise RunError(f"unknown key '{prefix}{key}' (format {RUN_FORMAT})", path=path,
                           hint="a run written by a newer deftrec, or an edited config.json")
    for key in known if required is None else required:
        if key not in values:
            raise RunError(f"missing key '{prefix}{key}' (format {RUN_FORMAT})", path=path,
                           hint="an edited or truncated config.json")


def latest_run(root: str | Path = "runs") -> Path | None:
    """The most recently completed run under `root`, if any."""
    root = Path(root)
    if not root.is_dir():
        return None
    runs = [p for p in root.iterdir() if p.is_dir() and (p / CONFIG_NAME).is_file()]
    return max(runs, key=lambda p: (p / CONFIG_NAME).stat().st_mtime) if runs else None
