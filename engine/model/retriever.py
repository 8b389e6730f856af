"""Hybrid item retriever (Eq. 14): s_ij = cos(y_i, q_j)·(1 + π_ij), history masked, top-K with ties by lower index.

Scores are defined so that they do not depend on how or where they are computed: the cosine is a float64 sum, in
dimension order, of exact products of L2-normalized float32 vectors (a float32×float32 product is exact in float64),
and the ranking key s is cos·(1 + π) rounded once to float32, the dtype engine.model.ranking compares in. FAISS only
proposes a candidate pool of the best cosines; the pool doubles until it provably holds the true top-k by s, so
`search` equals brute force over `scores_dense`.

Option (not the paper): `item_norm` α > 0 scores s = cos·‖q_j‖^α·(1 + π), giving back part of the item norm that the
cosine drops (LightGCN's item norm grows with popularity; α = 1 ranks by the dot product up to ‖y_i‖). The weight
w_j = ‖q_j‖^α is a float64 factor of the exact cosine, and FAISS then proposes candidates by cos·w_j over the unit
vectors scaled by w_j. α = 0 is Eq. 14, computed exactly as without the option.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import faiss
import numpy as np
import torch

MATCH_MODES = ("exact", "overlap", "all")
GPU_MAX_POOL = 2048  # the largest k a FAISS GPU flat index can return; beyond it the pool is the whole catalog
ROW_CHUNK = 1024  # query rows scored together in search
DENSE_ELEMENTS = 1 << 23  # float64 elements per dense block (64 MiB)


@dataclass(frozen=True)
class Recommendation:
    """One retrieved item: its cosine, the π it received, s = cos·w·(1+π) (float32), its 1-based rank, and its item
    weight w = ‖q_j‖^α (1 under Eq. 14, α = 0)."""

    item_idx: int
    cosine: float
    pi_bonus: float
    score: float
    rank: int
    weight: float = 1.0


def _fold(text: object) -> str:
    """Case-insensitive comparison key of a category string ("" for anything that is not a string)."""
    return text.strip().casefold() if isinstance(text, str) else ""


def _is_word_char(char: str) -> bool:
    return re.match(r"\w", char) is not None


def extract_category(text: str | None, categories: Sequence[str]) -> str | None:
    """The longest catalog category the text names as a whole phrase (case-insensitive), in the catalog's spelling."""
    if not isinstance(text, str) or not text:
        return None
    folded = text.casefold()
    best: tuple[tuple[int, int, int], str] | None = None  # ((-length, start, catalog order), category)
    seen: set[str] = set()
    for order, category in enumerate(categories):
        key = _fold(category)
        if not key or key in seen:
            continue
        seen.add(key)
        if key not in folded:  # cheap prefilter before the boundary-aware regex
            continue
        pattern = (r"(?<!\w)" if _is_word_char(key[0]) else "") + re.escape(key) + \
                  (r"(?!\w)" if _is_word_char(key[-1]) else "")
        found = re.search(pattern, folded)
        if found is None:
            continue
        rank = (-len(key), found.start(), order)
        if best is None or rank < best[0]:
            best = (rank, category)
    return None if best is None else best[1]


def category_parts(categories: Sequence[object]) -> list[str]:
    """The distinct '|'-separated parts of catalog categories (genres of 'Action|Sci-Fi'), sorted."""
    return sorted({part.strip() for c in categories if isinstance(c, str) for part in c.split("|") if part.strip()})


def extract_parts(text: str | None, parts: Sequence[str]) -> str | None:
    """Every catalog category part the text names as a whole phrase, '|'-joined in order of appearance (a part
    inside a longer named part is not counted); None when it names none. The key of π's 'overlap' match."""
    if not isinstance(text, str) or not text:
        return None
    folded = text.casefold()
    found: list[tuple[int, int, str]] = []  # (start, end, part)
    for part in sorted(parts, key=lambda p: -len(p)):
        key = _fold(part)
        if not key or key not in folded:
            continue
        pattern = (r"(?<!\w)" if _is_word_char(key[0]) else "") + re.escape(key) + \
                  (r"(?!\w)" if _is_word_char(key[-1]) else "")
        for match in re.finditer(pattern, folded):
            if not any(s <= match.start() and match.end() <= e for s, e, _ in found):
                found.append((match.start(), match.end(), part))
                break
    if not found:
        return None
    names: list[str] = []
    for _, _, part in sorted(found):
        if part not in names:
            names.append(part)
    return "|".join(names)


def _category_table(item_categories: Sequence[object]) -> tuple[np.ndarray, np.ndarray]:
    """Distinct folded categories and each item's index into them."""
    folded = [_fold(c) for c in item_categories]
    if not folded:
        return np.array([], dtype=object), np.zeros(0, np.int64)
    distinct, inverse = np.unique(np.array(folded, dtype=str), return_inverse=True)
    return distinct.astype(object), inverse.reshape(-1).astype(np.int64)


def _match_distinct(key: str, distinct: np.ndarray, match: str) -> np.ndarray:
    """Bool [n_distinct]: whether each folded category matches the folded extracted category `key`."""
    if match not in MATCH_MODES:
        raise ValueError(f"match must be one of {MATCH_MODES}, got {match!r}")
    if not key:
        return np.zeros(len(distinct), bool)
    if match == "exact":
        return np.array([c == key for c in distinct], bool)
    wanted = {part.strip() for part in key.split("|")} - {""}
    if match == "all":  # every named part is one of the item's (a named genre "is one of its genres")
        return np.array([wanted <= ({part.strip() for part in c.split("|")} - {""}) for c in distinct], bool)
    return np.array([bool(wanted & ({part.strip() for part in c.split("|")} - {""})) for c in distinct], bool)


def pi_bonus(extracted: str | None, item_categories: Sequence[object], pi: float = 0.1,
             match: str = "exact") -> np.ndarray:
    """π_j [n_items] float32: pi where item j's category matches the extracted one ("exact" or '|'-"overlap"), else 0."""
    distinct, inverse = _category_table(item_categories)
    hits = _match_distinct(_fold(extracted), distinct, match)[inverse]  # [n_items]
    return np.where(hits, np.float32(pi), np.float32(0)).astype(np.float32)


def _normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (computed in float64, zero rows stay zero), as float32 [n, d]."""
    x64 = x.astype(np.float64)  # [n, d]
    norms = np.sqrt((x64 * x64).sum(axis=1, keepdims=True))  # [n, 1]
    return (x64 / np.maximum(norms, 1e-12)).astype(np.float32)  # [n, d]


def item_weights(x: np.ndarray, alpha: float) -> np.ndarray | None:
    """w_j = ‖q_j‖^α in float64 [n] for raw item vectors [n, d]; None for α = 0 (Eq. 14: no weight)."""
    alpha = float(alpha)
    if not np.isfinite(alpha) or alpha < 0:
        raise ValueError(f"item_norm must be a finite number >= 0, got {alpha}")
    if alpha == 0:
        return None
    x64 = x.astype(np.float64)  # [n, d]
    return np.sqrt((x64 * x64).sum(axis=1)) ** alpha  # [n]


def _as_matrix(x: object, name: str) -> np.ndarray:
    """A finite float32 [n, d] numpy copy of a numpy array or torch tensor."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().numpy()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n, d], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains non-finite values")
    return x


def _gpu_available() -> bool:
    return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0 and torch.cuda.is_available()


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    """One warning per process for a missing optional accelerator."""
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


class HybridRetriever:
    """Exact Eq. 14 top-K: FAISS inner-product candidates over normalized item vectors, re-ranked by cos·(1+π)
    (by cos·‖q_j‖^α·(1+π) with item_norm α > 0)."""

    def __init__(self, item_vectors: np.ndarray, item_categories: Sequence[object], device: str = "auto",
                 margin: int = 32, tol: float | None = None, item_norm: float = 0.0) -> None:
        raw = _as_matrix(item_vectors, "item_vectors")
        self._setup(_normalize(raw), item_categories, device, margin, tol, weights=item_weights(raw, item_norm))

    def _setup(self, unit: np.ndarray, item_categories: Sequence[object], device: str, margin: int,
               tol: float | None, index: faiss.Index | None = None, weights: np.ndarray | None = None) -> None:
        n, d = unit.shape
        if n == 0:
            raise ValueError("the catalog is empty")
        if len(item_categories) != n:
            raise ValueError(f"{len(item_categories)} categories for {n} item vectors")
        if device not in ("auto", "cpu", "gpu"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'gpu', got {device!r}")
        if device == "gpu" and not _gpu_available():
            raise RuntimeError("device='gpu' needs faiss with GPU support and CUDA")
        self.device = "gpu" if device == "gpu" or (device == "auto" and _gpu_available()) else "cpu"
        if device == "auto" and self.device == "cpu" and torch.cuda.is_available():
            _warn_once("faiss has no GPU support here (install faiss-gpu): item retrieval runs on the CPU")
        self.n_items, self.dim, self.margin = n, d, int(margin)
        self.item_categories = np.array([c if isinstance(c, str) else "" for c in item_categories], dtype=object)
        self._distinct, self._inverse = _category_table(self.item_categories)
        self._match_cache: dict[tuple[str, str], np.ndarray] = {}
        # FAISS float32 inner products are within d·2⁻²⁴ of exact for unit vectors; doubled for safety, and widened
        # on GPUs where the GEMM may run in reduced precision. Only the pool's size depends on it, never the result.
        cpu_tol = 2.0 * (d + 2) * 2.0 ** -24
        self.tol = float(tol) if tol is not None else (max(cpu_tol, 4e-3) if self.device == "gpu" else cpu_tol)
        self._torch_device = torch.device("cuda" if self.device == "gpu" else "cpu")
        self._columns = torch.from_numpy(unit.T.astype(np.float64)).contiguous().to(self._torch_device)  # [d, n]
        if weights is not None and (len(weights) != n or not np.isfinite(weights).all()):
            raise ValueError(f"item weights must be {n} finite numbers")
        self._weights = None if weights is None else torch.from_numpy(
            np.asarray(weights, np.float64)).to(self._torch_device)  # [n] float64, or None (Eq. 14)
        if weights is not None:  # a FAISS value cos·w_j is off by at most tol·w_j (w_j also rounds into the vector)
            self.tol *= 2.0 * max(1.0, float(np.max(weights)))
        if index is None:
            index = faiss.IndexFlatIP(d)
            index.add(np.ascontiguousarray(self._candidate_vectors(unit)))
        self._cpu_index = index
        self.index = faiss.index_cpu_to_all_gpus(index) if self.device == "gpu" else index
        self._max_pool = min(n, GPU_MAX_POOL) if self.device == "gpu" else n
        self.approximate = False  # True: one candidate pool from an ANN index, re-ranked exactly, no proof

    @property
    def weights(self) -> np.ndarray | None:
        """w_j = ‖q_j‖^α float64 [n], or None under Eq. 14 (α = 0)."""
        return None if self._weights is None else self._weights.cpu().numpy()

    def _candidate_vectors(self, unit: np.ndarray) -> np.ndarray:
        """What FAISS searches: the unit item vectors [n, d], each scaled by its weight w_j when there is one."""
        if self._weights is None:
            return unit
        return (unit.astype(np.float64) * self.weights[:, None]).astype(np.float32)  # [n, d]

    def _unit(self) -> np.ndarray:
        """The unit item vectors, float32 [n, d] (exactly the ones the scores use)."""
        return np.ascontiguousarray(self._columns.T.cpu().numpy().astype(np.float32))  # [n, d]

    def with_ann(self, settings, seed: int = 0) -> HybridRetriever:
        """A copy that takes its candidates from an approximate index (engine.model.ann settings: ivf | hnsw): one pool
        of 4·(k + history) + margin items per user, re-scored exactly; the result may miss items exact search finds."""
        from engine.model.ann import build_index
        unit = self._unit()  # [n, d]
        other = HybridRetriever.__new__(HybridRetriever)
        index = build_index(np.ascontiguousarray(self._candidate_vectors(unit)), settings, seed)
        other._setup(unit, self.item_categories, "cpu", self.margin, None, index=index, weights=self.weights)
        other.tol = self.tol
        other.approximate = True
        return other

    # ---------------------------------------------------------------- exact scores

    def _exact_cosines(self, q64: torch.Tensor, labels: torch.Tensor | None, start: int = 0,
                       stop: int | None = None) -> torch.Tensor:
        """float64 cosines [b, C] of pooled labels, or [b, stop-start] of a column range: identical either way."""
        stop = self.n_items if stop is None else stop
        width = stop - start if labels is None else labels.shape[1]
        acc = torch.zeros(q64.shape[0], width, dtype=torch.float64, device=self._torch_device)  # [b, width]
        for j in range(self.dim):  # dimension order; each product is exact, so only this sum order matters
            column = self._columns[j]  # [n]
            other = column[start:stop].unsqueeze(0) if labels is None else column[labels]  # [1, width] or [b, C]
            acc.addcmul_(q64[:, j:j + 1], other)
        return acc

    def _match_rows(self, extracted: Sequence[str | None], match: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row code [B] into a table [U, n_items] of which items match that row's extracted category."""
        keys = [_fold(c) for c in extracted]
        distinct = sorted(set(keys))
        rows = []
        for key in distinct:
            if (key, match) not in self._match_cache:
                self._match_cache[(key, match)] = _match_distinct(key, self._distinct, match)[self._inverse]
            rows.append(self._match_cache[(key, match)])
        position = {key: i for i, key in enumerate(distinct)}
        codes = torch.tensor([position[key] for key in keys], dtype=torch.long, device=self._torch_device)  # [B]
        table = torch.from_numpy(np.stack(rows) if rows else np.zeros((0, self.n_items), bool))
        return codes, table.to(self._torch_device)  # [B], [U, n]

    def _queries(self, queries: object, extracted: Sequence[str | None]) -> tuple[np.ndarray, torch.Tensor]:
        """Unit float32 queries [B, d] (numpy) and their float64 copy on the scoring device."""
        q32 = _normalize(_as_matrix(queries, "queries"))  # [B, d]
        if q32.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {q32.shape[1]}, the index {self.dim}")
        if len(extracted) != len(q32):
            raise ValueError(f"{len(extracted)} extracted categories for {len(q32)} queries")
        return q32, torch.from_numpy(q32.astype(np.float64)).to(self._torch_device)  # [B, d], [B, d]

    def _dense(self, q64: torch.Tensor, factors: torch.Tensor | None) -> torch.Tensor:
        """float32 [B, n_items] cosines (factors None) or scores cos·factor for factors [B, n_items] or [1, n_items]."""
        out = torch.empty(q64.shape[0], self.n_items, dtype=torch.float32)  # [B, n]
        rows = max(1, DENSE_ELEMENTS // self.n_items)
        cols = min(self.n_items, max(1, DENSE_ELEMENTS // rows))
        for r in range(0, q64.shape[0], rows):
            for c in range(0, self.n_items, cols):
                block = self._exact_cosines(q64[r:r + rows], None, c, c + cols)  # [b, w] float64
                if factors is not None:
                    block = block * (factors[:, c:c + cols] if len(factors) == 1 else factors[r:r + rows, c:c + cols])
                out[r:r + rows, c:c + cols] = block.float().cpu()
        return out

    def cosines(self, queries: object) -> torch.Tensor:
        """Cosine of every query with every item, float32 [B, n_items] on the CPU."""
        q64 = torch.from_numpy(_normalize(_as_matrix(queries, "queries")).astype(np.float64))  # [B, d]
        if q64.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {q64.shape[1]}, the index {self.dim}")
        q64 = q64.to(self._torch_device)
        return self._dense(q64, None)

    def scores_dense(self, queries: object, extracted_categories: Sequence[str | None], pi: float = 0.1,
                     match: str = "exact") -> torch.Tensor:
        """Exact s = cos·w·(1+π) of every item, float32 [B, n_items] on the CPU (the key `search` ranks by)."""
        _check_pi(pi)
        _, q64 = self._queries(queries, extracted_categories)
        codes, table = self._match_rows(extracted_categories, match)
        factors = 1.0 + float(pi) * table[codes].to(torch.float64)  # [B, n]
        if self._weights is not None:
            factors = factors * self._weights.unsqueeze(0)  # [B, n]: (1+π)·w_j, rounded once as the search's key is
        return self._dense(q64, factors)

    # ---------------------------------------------------------------- search

    def search(self, queries: object, history: object, users: np.ndarray,
               extracted_categories: Sequence[str | None], k: int, pi: float = 0.1,
               match: str = "exact") -> list[list[Recommendation]]:
        """Top-k items per query by s = cos·w·(1+π), history masked, ties to the lower index; equal to brute force."""
        _check_pi(pi)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        q32, q64 = self._queries(queries, extracted_categories)
        if history is not None:
            users = np.asarray(users, dtype=np.int64).reshape(-1)
            if len(users) != len(q32):
                raise ValueError(f"{len(users)} users for {len(q32)} queries")
            masks = [np.unique(np.asarray(history.items_of(int(u)), dtype=np.int64)) for u in users]
        else:
            masks = [np.zeros(0, np.int64)] * len(q32)
        codes, table = self._match_rows(extracted_categories, match)
        out: list[list[Recommendation]] = []
        for r in range(0, len(q32), ROW_CHUNK):
            out.extend(self._search_rows(q32[r:r + ROW_CHUNK], q64[r:r + ROW_CHUNK], masks[r:r + ROW_CHUNK],
                                         codes[r:r + ROW_CHUNK], table, k, float(pi)))
        return out

    def _search_rows(self, q32: np.ndarray, q64: torch.Tensor, masks: list[np.ndarray], codes: torch.Tensor,
                     table: torch.Tensor, k: int, pi: float) -> list[list[Recommendation]]:
        """Search for one chunk of rows: grow each row's FAISS pool until it provably holds the top-k by s."""
        any_match = table.any(dim=1).cpu().numpy()[codes.cpu().numpy()]  # [b] whether any item can get π
        results: list[list[Recommendation] | None] = [None] * len(q32)
        active = np.arange(len(q32))
        pool = min(self.n_items, k + max((len(m) for m in masks), default=0) + self.margin)
        if self.approximate:
            short = self._rank_pool(q32, q64, masks, codes, table, any_match, active, min(self.n_items, 4 * pool),
                                    k, pi, results, accept=True)
            if len(short):  # the index returned too few items for these rows: rank them over the whole catalog
                self._rank_pool(q32, q64, masks, codes, table, any_match, short, None, k, pi, results)
            return results  # type: ignore[return-value]
        while len(active):
            if pool >= self._max_pool:  # the whole catalog, exact, in blocks of rows
                step = max(1, DENSE_ELEMENTS // self.n_items)
                for r in range(0, len(active), step):
                    self._rank_pool(q32, q64, masks, codes, table, any_match, active[r:r + step], None, k, pi,
                                    results)
                break
            active = self._rank_pool(q32, q64, masks, codes, table, any_match, active, pool, k, pi, results)
            pool = min(self.n_items, pool * 2)
        return results  # type: ignore[return-value]

    def _rank_pool(self, q32: np.ndarray, q64: torch.Tensor, masks: list[np.ndarray], codes: torch.Tensor,
                   table: torch.Tensor, any_match: np.ndarray, active: np.ndarray, pool: int | None, k: int,
                   pi: float, results: list, accept: bool = False) -> np.ndarray:
        """Rank rows `active` over their top-`pool` FAISS cosines (None: all items); fill the proven rows, return the rest."""
        factor = 1.0 + pi
        act = torch.as_tensor(active, dtype=torch.long, device=self._torch_device)  # [b]
        if pool is None:
            width = self.n_items
            labels = np.broadcast_to(np.arange(width), (len(active), width))  # [b, n]
            cos64 = self._exact_cosines(q64[act], None)  # [b, n]
            hits = table[codes[act]]  # [b, n]
            weight64 = None if self._weights is None else self._weights.unsqueeze(0).expand(len(active), -1)  # [b, n]
        else:
            width = pool
            found, labels = self.index.search(np.ascontiguousarray(q32[active]), pool)  # [b, pool] each
            if accept:  # an ANN index may return fewer than pool ids (-1): repeat a real one, masked below as a copy
                labels = np.where(labels < 0, np.maximum(labels.max(axis=1, keepdims=True), 0), labels)
            labels = np.sort(labels, axis=1)  # label order, so the stable sort below breaks ties by lower index
            label_t = torch.as_tensor(labels, dtype=torch.long, device=self._torch_device)  # [b, pool]
            cos64 = self._exact_cosines(q64[act], label_t)  # [b, pool]
            hits = table[codes[act].unsqueeze(1), label_t]  # [b, pool]
            weight64 = None if self._weights is None else self._weights[label_t]  # [b, pool]
        masked = np.zeros((len(active), width), bool)  # [b, width]
        for row, i in enumerate(active):
            if len(masks[i]):
                masked[row] = np.isin(labels[row], masks[i])
        if accept:
            masked |= np.concatenate([np.zeros((len(active), 1), bool), labels[:, 1:] == labels[:, :-1]], axis=1)
        if weight64 is None:
            score64 = torch.where(hits, cos64 * factor, cos64)  # [b, width]
        else:  # the same products as scores_dense: cos·((1+π)·w_j)
            ones = torch.ones((), dtype=torch.float64, device=self._torch_device)
            score64 = cos64 * (torch.where(hits, ones * factor, ones) * weight64)  # [b, width]
        score32 = score64.float().masked_fill(torch.as_tensor(masked, device=self._torch_device),
                                              float("-inf"))  # [b, width]
        ranked, rank_order = torch.sort(score32, dim=1, descending=True, stable=True)  # [b, width]
        available = (score32 > float("-inf")).sum(dim=1).cpu().numpy()  # [b]
        if pool is None:
            done = np.ones(len(active), bool)
        elif accept:  # approximate: accepted unless the pool held fewer than k rankable items
            done = available >= np.minimum(k, np.array([self.n_items - len(masks[i]) for i in active]))
        else:
            # an unpooled item's FAISS value (cos, or cos·w) is ≤ the pool's last one, so its exact one is ≤ ceiling
            # and its s ≤ bound; (1+π)·c < c when c < 0, hence the max. Strict '>' leaves no tie with an unpooled item.
            ceiling = found[:, -1].astype(np.float64) + self.tol  # [b]
            bound = np.where(any_match[active], np.maximum(ceiling * factor, ceiling), ceiling)  # [b]
            kth = ranked[:, min(k, width) - 1].cpu().numpy()  # [b] float32
            done = (available >= k) & (kth > bound.astype(np.float32))
        take = min(k, width)
        top = rank_order[:, :take]  # [b, take]
        top_items = np.take_along_axis(labels, top.cpu().numpy(), axis=1)  # [b, take]
        top_scores = ranked[:, :take].cpu().numpy()  # [b, take]
        top_cos = torch.gather(cos64, 1, top).float().cpu().numpy()  # [b, take]
        top_hits = torch.gather(hits, 1, top).cpu().numpy()  # [b, take]
        top_weights = np.ones(top_hits.shape) if weight64 is None else \
            torch.gather(weight64, 1, top).cpu().numpy()  # [b, take]
        for row in np.flatnonzero(done):
            count = int(min(take, available[row]))
            results[active[row]] = [
                Recommendation(item_idx=int(top_items[row, j]), cosine=float(top_cos[row, j]),
                               pi_bonus=pi if top_hits[row, j] else 0.0, score=float(top_scores[row, j]),
                               rank=j + 1, weight=float(top_weights[row, j]))
                for j in range(count)]
        return active[~done]

    # ---------------------------------------------------------------- persistence

    def save(self, path: str) -> None:
        """Write a flat FAISS index of the normalized item vectors to path, e.g. <run>/items.faiss (the weights of
        item_norm are not in it: `load` takes them)."""
        index = self._cpu_index
        if self._weights is not None:
            index = faiss.IndexFlatIP(self.dim)
            index.add(self._unit())
        faiss.write_index(index, str(path))

    @classmethod
    def load(cls, path: str, categories: Sequence[object], device: str = "auto", margin: int = 32,
             tol: float | None = None, weights: np.ndarray | None = None) -> HybridRetriever:
        """Read an index written by save (plain data, no code is run) and attach the item categories and, for
        item_norm α > 0, the item weights ‖q_j‖^α (`item_weights` of the raw vectors)."""
        index = faiss.read_index(str(path))
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError(f"{path} is not an inner-product index")
        unit = index.reconstruct_n(0, index.ntotal).astype(np.float32)  # [n, d], already normalized
        self = cls.__new__(cls)
        self._setup(unit, categories, device, margin, tol, index=None if weights is not None else index,
                    weights=weights)
        return self


def _check_pi(pi: float) -> None:
    if not pi > -1.0:
        raise ValueError(f"pi must be greater than -1 so that 1 + π stays positive, got {pi}")
