"""The one normalized form every loader returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp")
ITEM_COLUMNS = ("item_id", "title", "category")


@dataclass
class RawDataset:
    """Interactions (user_id, item_id, timestamp; row order = source order) and items (item_id, title, category).

    Ids are strings (the dataset's own ids). `timestamp` is int64 seconds, or all-NA when the source has none
    (then the protocol orders each history by a seeded shuffle). `predefined_split`, when set, maps each
    interaction row to 'train'/'valid'/'test' and bypasses 5-core and ordering (the paper's own files).
    """

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    source: str = ""
    has_timestamps: bool = True
    notes: list[str] = field(default_factory=list)
    predefined_split: pd.Series | None = None

    def __post_init__(self) -> None:
        missing = [c for c in INTERACTION_COLUMNS if c not in self.interactions.columns]
        missing += [c for c in ITEM_COLUMNS if c not in self.items.columns]
        if missing:
            raise ValueError(f"loader for {self.name} did not produce columns {missing}")
