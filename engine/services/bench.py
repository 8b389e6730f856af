"""Measurements behind `deftrec bench`: per-user latency split into LLM prefill, generation, denoising and
retrieval (the paper's Table 4 layout), batched throughput, prefill against the bare LLM forward, an
autoregressive beam-search baseline (LlaRA-style: K item titles generated from the same fine-tuned LLM and
mapped to catalog items) and approximate retrieval on a synthetic catalog."""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from engine.model.llm.batches import position_ids_from_mask


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class StageSeconds:
    """Wall seconds of one recommendation call, by stage."""

    prefill: float = 0.0
    generation: float = 0.0
    denoising: float = 0.0
    retrieval: float = 0.0
    forwards: int = 0  # passes through the LLM, the prefill included (not a time: left out of total and shares)

    @property
    def total(self) -> float:
        return self.prefill + self.generation + self.denoising + self.retrieval

    def shares(self) -> dict[str, float]:
        total = self.total or 1.0
        return {name: getattr(self, name) / total for name in STAGES}


STAGES = ("prefill", "generation", "denoising", "retrieval")


@contextmanager
def forward_timer(llm, device: torch.device):
    """Record the wall time of every pass through the LLM's transformer (the first one of a response is the
    prefill); hooked on the decoder, which full and template decoding both call."""
    from engine.model.decoding import decoder_of
    base = decoder_of(llm)
    durations: list[float] = []
    started: list[float] = []

    def before(_module, _args, _kwargs):
        _sync(device)
        started.append(time.perf_counter())

    def after(_module, _args, _kwargs, _out):
        _sync(device)
        durations.append(time.perf_counter() - started[-1])

    handles = [base.register_forward_pre_hook(before, with_kwargs=True),
               base.register_forward_hook(after, with_kwargs=True)]
    try:
        yield durations
    finally:
        for handle in handles:
            handle.remove()


def timed_recommend(model, users: list[int], history, k: int, decoding: str | None = None,
                    precision: str | None = None) -> tuple[list, StageSeconds]:
    """model.recommend split by stage: prefill = the LLM's first forward, generation = the rest of describe
    (decoding steps and template passes, prompt building, condition), denoising = the 100-step sampler,
    retrieval = FAISS + π; `decoding` (full | template | constrained) and `precision` override the run's."""
    device = model.device
    times = StageSeconds()
    with forward_timer(model.llm, device) as forwards:
        _sync(device)
        t0 = time.perf_counter()
        prefs = model.describe(users, decoding=decoding, precision=precision)
        _sync(device)
        describe_seconds = time.perf_counter() - t0
    times.prefill = forwards[0] if forwards else 0.0
    times.forwards = len(forwards)
    times.generation = describe_seconds - times.prefill
    t1 = time.perf_counter()
    paths = model.trajectories(torch.stack([p.condition for p in prefs]), users)  # [S+1,B,d]
    _sync(device)
    times.denoising = time.perf_counter() - t1
    t2 = time.perf_counter()
    lists = model.retriever.search(paths[-1].numpy(), history, np.asarray(users), [p.category for p in prefs], k,
                                   pi=model.config.retrieval.pi, match=model.config.retrieval.pi_match)
    times.retrieval = time.perf_counter() - t2
    return lists, times


@torch.no_grad()
def prefill_throughput(model, users: list[int], repeats: int = 5, precision: str | None = None) -> dict:
    """Tokens/s of the pipeline's prefill (continuous tokens spliced into the embeddings, then the LLM) and of
    the bare LLM forward on the same token ids, same batch, same padding; best of `repeats`."""
    inputs = model.prompt_inputs(users)
    device = model.device
    ids, mask = inputs.input_ids, inputs.attention_mask  # [B,L]
    tokens = int(mask.sum())

    positions = position_ids_from_mask(mask)  # [B,L]

    def pipeline() -> None:
        embeds = model.embed(users, inputs.kept, inputs.template_ids, ids)  # [B,L,D]
        with model.autocast(precision):
            model.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True,
                      logits_to_keep=1)

    def bare() -> None:
        base = model.llm.get_base_model() if hasattr(model.llm, "get_base_model") else model.llm
        with model.autocast(precision):
            base(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)

    def timed(fn) -> float:
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        return time.perf_counter() - t0

    bare(), pipeline()  # warm-up
    # interleaved so that a slow spell of the machine hits both alike; the best of each is compared
    bare_times, pipeline_times = [], []
    for _ in range(repeats):
        bare_times.append(timed(bare))
        pipeline_times.append(timed(pipeline))
    seconds_bare, seconds_pipeline = min(bare_times), min(pipeline_times)
    return {"users": len(users), "tokens": tokens, "bare_tokens_per_s": tokens / seconds_bare,
            "pipeline_tokens_per_s": tokens / seconds_pipeline, "ratio": seconds_bare / seconds_pipeline}


# ------------------------------------------------------------------------------------------ beam-search baseline

TITLE_PROMPT = " Recommend the next movie for this user. Answer with its title only."


def _norm_title(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", " ", text.casefold()).strip()


@dataclass
class TitleMatcher:
    """Maps generated text to catalog items: exact normalized title, else the title sharing most words."""

    titles: list[str]
    exact: dict[str, int] = field(init=False)
    words: list[set[str]] = field(init=False)

    def __post_init__(self) -> None:
        self.exact = {}
        for index, title in enumerate(self.titles):
            self.exact.setdefault(_norm_title(title), index)
        self.words = [set(_norm_title(t).split()) for t in self.titles]

    def match(self, text: str) -> int | None:
        key = _norm_title(text)
        if not key:
            return None
        if key in self.exact:
            return self.exact[key]
        wanted = set(key.split())
        overlap = [len(wanted & w) / (len(wanted | w) or 1) for w in self.words]
        best = int(np.argmax(overlap))
        return best if overlap[best] > 0 else None


@torch.no_grad()
def beam_search_titles(model, user: int, k: int, max_new_tokens: int = 20,
                       precision: str | None = None) -> tuple[list[str], float]:
    """K titles for one user by beam search (num_beams = num_return_sequences = K) from the same fine-tuned LLM
    and the same prompt with its continuous tokens, in the run's precision (or `precision`, as DeftRec is timed);
    returns the texts and the wall seconds."""
    from transformers import GenerationConfig
    inputs = model.prompt_inputs([user], suffix=TITLE_PROMPT, extra_length=32)
    device = model.device
    embeds, mask = inputs.embeds, inputs.attention_mask  # [1,L,D], [1,L]
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=k, num_return_sequences=k,
                              early_stopping=True, pad_token_id=model.tokenizer.pad_token_id,
                              eos_token_id=model.tokenizer.eos_token_id)
    _sync(device)
    t0 = time.perf_counter()
    with model.autocast(precision):
        out = model.llm.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=config)  # [K,new]
    _sync(device)
    seconds = time.perf_counter() - t0
    texts = [model.tokenizer.decode(row, skip_special_tokens=True).strip() for row in out]
    return texts, seconds


def beam_search_recommend(model, matcher: TitleMatcher, user: int, k: int, masked: set[int],
                          precision: str | None = None) -> tuple[list[int], float]:
    """The baseline's top-K item ids (generated titles mapped to the catalog, history removed) and its seconds."""
    texts, seconds = beam_search_titles(model, user, k, precision=precision)
    t0 = time.perf_counter()
    items: list[int] = []
    for text in texts:
        item = matcher.match(text)
        if item is not None and item not in masked and item not in items:
            items.append(item)
    return items, seconds + time.perf_counter() - t0


def _mean_stages(samples: list[StageSeconds]) -> StageSeconds:
    means = {name: float(np.mean([getattr(s, name) for s in samples])) for name in STAGES}
    return StageSeconds(**means, forwards=round(float(np.mean([s.forwards for s in samples]))))


def bench_run(run, n_users: int = 16, k: int = 20, batch_sizes: tuple[int, ...] = (1, 8, 32),
              baseline: bool = True, seed: int = 0, on_step=None, decoding: str | None = None,
              compare_full: bool = True, precision: str | None = None) -> dict:
    """Every figure of `deftrec bench RUN` as a JSON-ready dict; the same users go through DeftRec (decoded as the
    run says, or as `decoding` says), full greedy decoding (compare_full) and the beam-search baseline in this one
    process."""
    from data.errors import RunError
    from engine.services.contract import TEXT, TRAJECTORY, explaining, recommenders
    from engine.services.export import test_history
    step = on_step or (lambda _text: None)
    timed = explaining(recommenders(run), TEXT, TRAJECTORY)  # the stages timed: LLM, denoising, retrieval
    if timed is None:
        raise RunError("the run has no DeftRec model (trained with --stage cf)", path=run.path)
    t0 = time.perf_counter()
    model = timed.model()
    load_seconds = time.perf_counter() - t0
    history, tables = test_history(run)
    n_total = len(tables["users"])
    rng = np.random.default_rng(seed)
    sample = rng.permutation(n_total)[: max(n_users, max(batch_sizes))].tolist()
    users = sample[:n_users]
    decoding = decoding or model.config.llm.decoding
    precision = precision or model.config.llm.inference_precision
    timed_recommend(model, users[:1], history, k, decoding, precision)  # warm-up (allocations, kernels), not counted
    step(f"single-user latency ({decoding} decoding, {precision})")
    singles, full_singles, deftrec_lists, same_lists = [], [], {}, 0
    for user in users:
        lists, stages = timed_recommend(model, [user], history, k, decoding, precision)
        singles.append(stages)
        deftrec_lists[user] = [r.item_idx for r in lists[0]]
        if compare_full and decoding != "full":  # interleaved: a slow spell hits both; the same precision
            full_lists, full_stages = timed_recommend(model, [user], history, k, "full", precision)
            full_singles.append(full_stages)
            same_lists += [r.item_idx for r in full_lists[0]] == deftrec_lists[user]
    latency = _mean_stages(singles)
    throughput = []
    for size in batch_sizes:
        step(f"throughput at batch {size}")
        chunk_users = sample[: max(size, min(len(sample), 2 * size))] if size > 1 else users[:4]
        start = time.perf_counter()
        for offset in range(0, len(chunk_users), size):
            timed_recommend(model, chunk_users[offset:offset + size], history, k, decoding, precision)
        seconds = time.perf_counter() - start
        throughput.append({"batch_size": size, "users": len(chunk_users), "seconds": seconds,
                           "users_per_s": len(chunk_users) / seconds})
    step("prefill against the bare LLM")
    prefill = prefill_throughput(model, sample[: max(batch_sizes)], precision=precision)
    from data.catalog import Catalog
    with Catalog.open(run.catalog_path, readonly=True) as catalog:
        targets = dict(enumerate(catalog.held_out()[:, 1].tolist()))
    result = {
        "run": str(run.path), "device": str(model.device), "torch_threads": torch.get_num_threads(),
        "llm": model.config.llm.name, "k": k, "users": len(users), "model_load_s": load_seconds, "decoding": decoding,
        "precision": precision,
        "latency_s": {**asdict(latency), "total": latency.total}, "latency_share": latency.shares(),
        "throughput": throughput, "prefill": prefill,
        "deftrec_hits": sum(targets[u] in deftrec_lists[u] for u in users),
    }
    if full_singles:
        full = _mean_stages(full_singles)
        result["full_decoding"] = {"latency_s": {**asdict(full), "total": full.total},
                                   "speedup": full.total / latency.total, "same_lists": same_lists}
    if baseline:
        step("beam-search baseline")
        matcher = TitleMatcher(model.titles)
        seconds, hits, matched = [], 0, 0
        for user in users:
            masked = set(history.items_of(user).tolist())
            items, took = beam_search_recommend(model, matcher, user, k, masked, precision)
            seconds.append(took)
            matched += len(items)
            hits += targets[user] in items
        result["baseline"] = {"method": f"beam search, {k} beams, {k} titles, mapped to catalog titles",
                              "seconds_per_user": float(np.mean(seconds)), "items_per_user": matched / len(users),
                              "hits": hits}
        result["speedup"] = result["baseline"]["seconds_per_user"] / latency.total
    return result


def bench_ann(n_items: int, n_users: int, n_queries: int = 1000, k: int = 20, kind: str = "ivf",
              settings=None, seed: int = 0, on_step=None) -> dict:
    """Recall@k of an approximate index against exact search on a synthetic clustered catalog, with timings."""
    from engine.model.ann import AnnSettings, build_index, recall_at_k, search, synthetic_catalog, unit_rows
    step = on_step or (lambda _text: None)
    settings = settings or AnnSettings(kind=kind)
    step(f"synthetic catalog: {n_items:,} items, {n_users:,} users")
    items, users = synthetic_catalog(n_items, n_users, seed=seed)
    items = unit_rows(items)
    queries = unit_rows(users[np.random.default_rng(seed + 1).choice(n_users, n_queries, replace=False)])
    del users
    step("exact index")
    exact = build_index(items, AnnSettings(kind="exact"))
    t0 = time.perf_counter()
    _, exact_ids = search(exact, queries, k)
    exact_seconds = time.perf_counter() - t0
    del exact
    step(f"{settings.kind} index")
    t1 = time.perf_counter()
    approx = build_index(items, settings, seed)
    build_seconds = time.perf_counter() - t1
    t2 = time.perf_counter()
    _, approx_ids = search(approx, queries, k)
    approx_seconds = time.perf_counter() - t2
    return {"items": n_items, "users": n_users, "queries": n_queries, "k": k, "index": asdict(settings),
            "recall_at_k": recall_at_k(exact_ids, approx_ids), "exact_search_s": exact_seconds,
            "approx_build_s": build_seconds, "approx_search_s": approx_seconds,
            "speedup": exact_seconds / approx_seconds if approx_seconds else float("inf")}
