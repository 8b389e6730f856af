"""`--dataset` values: ml-100k | amazon:DIR | lastfm:DIR | csv:DIR | paper:DIR."""

from __future__ import annotations

from pathlib import Path

from data.dataset import RawDataset
from data.errors import DataError

DATASET_HELP = "ml-100k (embedded default) | amazon:DIR | lastfm:DIR | csv:DIR | paper:DIR"
_KINDS = ("amazon", "lastfm", "csv", "paper")


def parse_spec(spec: str) -> tuple[str, Path | None]:
    """Split a dataset spec into its kind and directory, or raise a one-line DataError."""
    spec = spec.strip()
    if spec in ("ml-100k", "ml100k", "movielens-100k"):
        return "ml-100k", None
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in _KINDS or not rest:
        raise DataError(f"unknown dataset {spec!r}", hint=f"use one of: {DATASET_HELP}")
    directory = Path(rest).expanduser()
    if not directory.is_dir():
        raise DataError("dataset directory does not exist", path=directory)
    return kind, directory


def load_dataset(spec: str) -> RawDataset:
    """Load any supported dataset into the normalized form."""
    kind, directory = parse_spec(spec)
    if kind == "ml-100k":
        from data.movielens import load_movielens_100k
        return load_movielens_100k()
    assert directory is not None
    if kind == "amazon":
        from data.amazon import load_amazon
        return load_amazon(directory)
    if kind == "lastfm":
        from data.lastfm import load_lastfm
        return load_lastfm(directory)
    if kind == "csv":
        from data.csvpair import load_csv_pair
        return load_csv_pair(directory)
    from data.paper import load_paper
    return load_paper(directory)
