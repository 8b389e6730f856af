"""Approximate inner-product search for catalogs of millions of items (FAISS IVF-Flat or HNSW over L2-normalized
vectors), with recall@K against exact search; the exact IndexFlatIP stays the default everywhere."""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

INDEX_KINDS = ("exact", "ivf", "hnsw")


@dataclass(frozen=True)
class AnnSettings:
    """How the approximate index is built and searched."""

    kind: str = "ivf"
    nlist: int = 0  # IVF cells (0: 4·sqrt(n), a common rule)
    nprobe: int = 32  # IVF cells visited per query
    hnsw_m: int = 32  # HNSW links per node
    ef_search: int = 128  # HNSW candidate list at query time
    train_size: int = 100_000  # vectors used to train the IVF quantizer


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, float32 C-contiguous (zero rows stay zero)."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def build_index(unit_vectors: np.ndarray, settings: AnnSettings, seed: int = 0) -> faiss.Index:
    """An inner-product index over unit vectors [n, d]: exact, IVF-Flat or HNSW-Flat."""
    n, d = unit_vectors.shape
    if settings.kind not in INDEX_KINDS:
        raise ValueError(f"index kind must be one of {INDEX_KINDS}, got {settings.kind!r}")
    if settings.kind == "exact":
        index = faiss.IndexFlatIP(d)
    elif settings.kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = settings.ef_search
    else:
        nlist = settings.nlist or max(1, min(n // 39, int(4 * np.sqrt(n))))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = unit_vectors[rng.choice(n, size=min(n, max(settings.train_size, 39 * nlist)), replace=False)]
        index.cp.seed = seed
        index.train(sample)
        index.nprobe = min(settings.nprobe, nlist)
    index.add(unit_vectors)
    return index


def search(index: faiss.Index, unit_queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores [B,k], ids [B,k]) by inner product."""
    scores, ids = index.search(np.ascontiguousarray(unit_queries, dtype=np.float32), k)
    return scores, ids


def recall_at_k(exact_ids: np.ndarray, approx_ids: np.ndarray) -> float:
    """Mean over queries of |approx ∩ exact| / k for top-k id lists [B,k]."""
    if exact_ids.shape != approx_ids.shape:
        raise ValueError(f"shapes differ: {exact_ids.shape} vs {approx_ids.shape}")
    k = exact_ids.shape[1]
    hits = [len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx_ids, exact_ids)]
    return float(np.mean(hits) / k) if len(hits) else 1.0


def synthetic_catalog(n_items: int, n_users: int, dim: int = 64, n_clusters: int = 1024,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clustered item and user vectors (a Gaussian mixture, like CF embeddings: many near-duplicates in a few
    directions), float32 [n_items,d] and [n_users,d]; built in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    def draw(n: int) -> np.ndarray:
        out = np.empty((n, dim), np.float32)
        for start in range(0, n, 262_144):
            size = min(262_144, n - start)
            which = rng.integers(0, n_clusters, size)
            out[start:start + size] = centers[which] + 1.0 * rng.standard_normal((size, dim), dtype=np.float32)
        return out
    return draw(n_items), draw(n_users)
