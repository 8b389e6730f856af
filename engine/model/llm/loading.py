"""Loading a causal LM and its tokenizer from a model spec (the packaged SmolLM2, a .gguf file or a local
Hugging Face folder), offline, and the fingerprint that ties a run to its LLM."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerFast

from data.errors import DeftrecError
from engine.model.llm.convert import (
    SMOLLM2_SPECS,
    convert_gguf,
    first_line,
    offline_for_loading,
    quiet_transformers,
    smollm2_gguf_path,
)

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """A torch dtype from a dtype or a name ('bf16', 'float32', ...); None means float32."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise DeftrecError(f"unknown dtype {dtype!r}", hint="use one of bf16, fp16, fp32")
    return _DTYPES[key]


def resolve_model_dir(spec: str | Path | None) -> Path:
    """The local HF folder for a model spec (None/'smollm2' = converted default, a .gguf file, or a folder)."""
    offline_for_loading()
    if spec is None or str(spec).strip().lower() in SMOLLM2_SPECS:
        return convert_gguf(smollm2_gguf_path())
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return convert_gguf(path)
    if not path.exists():
        raise DeftrecError("no such model directory", path=path,
                           hint="pass a local Hugging Face model directory, a .gguf file or 'smollm2'")
    if not path.is_dir():
        raise DeftrecError("not a model directory (expected a Hugging Face folder with config.json)", path=path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise DeftrecError("no config.json: not a Hugging Face model directory", path=path)
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DeftrecError(f"config.json is unreadable: {first_line(e)}", path=config_file) from None
    archs = config.get("architectures") if isinstance(config, dict) else None
    if not isinstance(archs, list) or not any(str(a).endswith("ForCausalLM") for a in archs):
        raise DeftrecError(f"not a causal language model: config.json architectures are {archs!r}, "
                           "none is a *ForCausalLM", path=path)
    return path


def llm_fingerprint(spec: str | Path | None) -> str:
    """A short hash that identifies an LLM's files (config, tokenizer, weight names and sizes); 'tiny' is 'tiny'."""
    if spec is not None and str(spec) == "tiny":
        return "tiny"
    path = resolve_model_dir(spec)
    h = hashlib.sha256()
    for file in sorted(path.iterdir()):
        if not file.is_file():
            continue
        h.update(file.name.encode())
        if file.suffix in (".json", ".txt", ".model") and file.stat().st_size < (32 << 20):
            h.update(file.read_bytes())
        else:
            h.update(str(file.stat().st_size).encode())
    return h.hexdigest()[:16]


def prepare_tokenizer(tokenizer):
    """Left padding and a pad token (= eos when the tokenizer has none)."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise DeftrecError("the tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.eos_token is None:
        raise DeftrecError("the tokenizer has no eos token, so responses cannot be terminated")
    tokenizer.padding_side = "left"
    return tokenizer


def load_causal_lm(spec: str | Path | None, *, dtype: torch.dtype | str | None, device: str | torch.device = "cpu",
                   qlora: bool = False) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """(model, tokenizer) for None/'smollm2' (the converted default), a .gguf file or a local HF folder; eval mode."""
    offline_for_loading()
    dtype = resolve_dtype(dtype)
    extra: dict = {}
    if qlora:
        if not torch.cuda.is_available():
            raise DeftrecError("--qlora needs a CUDA GPU and bitsandbytes; this machine has no CUDA device")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise DeftrecError("--qlora needs the bitsandbytes package", hint="pip install bitsandbytes") from None
        from transformers import BitsAndBytesConfig

        dev = torch.device(device)
        extra["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True)
        extra["device_map"] = {"": dev.index if dev.type == "cuda" and dev.index is not None else 0}
        dtype = torch.bfloat16
    path = resolve_model_dir(spec)
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001  any failure here is the folder's problem: one line for the user
        raise DeftrecError(f"cannot load the tokenizer: {first_line(e)}", path=path) from None
    try:
        with quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True,
                                                         trust_remote_code=False, **extra)
    except Exception as e:  # noqa: BLE001
        raise DeftrecError(f"cannot load as a causal LM: {first_line(e)}", path=path) from None
    if not qlora:
        model.to(device)
    prepare_tokenizer(tokenizer)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer
