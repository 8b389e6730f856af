"""HetRec-2011 LastFM: `user_artists.dat` (the interactions), `artists.dat` (names), and optionally
`user_taggedartists.dat` + `tags.dat` (an artist's category = its most used tag). No timestamps."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd

from data.dataset import RawDataset
from data.errors import DataError

USER_ARTISTS = "user_artists.dat"
ARTISTS = "artists.dat"
TAGGINGS = "user_taggedartists.dat"
TAGS = "tags.dat"


def _read_text(path: Path, *, encoding: str = "utf-8", fallback: str | None = None,
               replace: bool = False) -> tuple[list[str], str, int]:
    """(lines, encoding used, number of lines with replaced bytes). The HetRec files are a few MB at most."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", path=path,
                        hint=f"a lastfm directory needs {USER_ARTISTS} and {ARTISTS} "
                             f"(and optionally {TAGGINGS} + {TAGS}) from hetrec2011-lastfm-2k") from None
    except OSError as exc:
        raise DataError(f"cannot read the file: {exc.strerror or exc}", path=path) from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    raw_lines = data.splitlines()
    lines: list[str] = []
    replaced = 0
    try:
        for number, raw in enumerate(raw_lines, start=1):
            try:
                lines.append(raw.decode(encoding))
            except UnicodeDecodeError:
                if fallback is not None:
                    raise
                if not replace:
                    raise DataError(f"bytes that are not {encoding}", path=path, line=number,
                                    hint=f"save the file as {encoding}") from None
                lines.append(raw.decode(encoding, errors="replace"))
                replaced += 1
    except UnicodeDecodeError:
        assert fallback is not None
        return [raw.decode(fallback) for raw in raw_lines], fallback, 0
    return lines, encoding, replaced


def _table(path: Path, required: tuple[str, ...], **read) -> tuple[list[tuple[int, list[str]]], dict[str, int], str,
                                                                  int]:
    """Tab-separated rows with their line numbers (header = line 1), the column index, encoding, replaced lines."""
    lines, encoding, replaced = _read_text(path, **read)
    if not lines or not lines[0].strip():
        raise DataError("the file is empty or has no header", path=path, line=1,
                        hint=f"the first line must be the tab-separated header {' '.join(required)}")
    header = [c.strip() for c in lines[0].split("\t")]
    index = {name: k for k, name in reversed(list(enumerate(header)))}
    missing = [c for c in required if c not in index]
    if missing:
        raise DataError(f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}; found columns: "
                        f"{', '.join(repr(c) for c in header)}", path=path, line=1,
                        hint=f"the first line must be the tab-separated header {' '.join(required)}")
    width = max(index[c] for c in required) + 1
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) < width:
            raise DataError(f"the row has {len(fields)} tab-separated fields, expected at least {width}", path=path,
                            line=number, hint="fields must be separated by tabs")
        for name in required:
            if not fields[index[name]].strip():
                raise DataError(f"empty {name}", path=path, line=number)
        rows.append((number, fields))
    return rows, index, encoding, replaced


def _id_key(value: str) -> tuple:
    text = value.strip()
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def load_lastfm(directory: Path, seed: int = 0) -> RawDataset:
    """Every (user, artist) row of user_artists.dat as an implicit interaction (listening counts ignored).

    `seed` is accepted for the registry's signature only: with no timestamps, the protocol orders each user's
    history by its own seeded shuffle (`prepare(..., seed=)`).
    """
    del seed
    directory = Path(directory)
    notes: list[str] = []
    pairs_path = directory / USER_ARTISTS
    pairs, index, _, _ = _table(pairs_path, ("userID", "artistID"))
    if not pairs:
        raise DataError("the file has a header but no rows", path=pairs_path)
    users = [fields[index["userID"]].strip() for _, fields in pairs]
    artists = [fields[index["artistID"]].strip() for _, fields in pairs]

    artists_path = directory / ARTISTS
    rows, a_index, _, replaced = _table(artists_path, ("id", "name"), replace=True)
    if replaced:
        notes.append(f"{ARTISTS}: {replaced} lines held bytes that are not UTF-8 (replaced with U+FFFD)")
    names: dict[str, str] = {}
    for _, fields in rows:
        names.setdefault(fields[a_index["id"]].strip(), " ".join(fields[a_index["name"]].split()))

    top_tag = _top_tags(directory, notes)

    item_ids = list(dict.fromkeys(artists))
    unnamed = [a for a in item_ids if not names.get(a)]
    if unnamed:
        notes.append(f"{len(unnamed)} artists are not named in {ARTISTS}: the artist id is used as the title")
    items = pd.DataFrame({
        "item_id": item_ids,
        "title": [names.get(a) or a for a in item_ids],
        "category": [top_tag.get(a, "") for a in item_ids],
    }, dtype=object)
    interactions = pd.DataFrame({
        "user_id": pd.Series(users, dtype=object),
        "item_id": pd.Series(artists, dtype=object),
        "timestamp": pd.Series(pd.NA, index=range(len(users)), dtype="Int64"),
    })
    notes.append("no timestamps: histories are ordered by a seeded shuffle")
    return RawDataset(name="lastfm", interactions=interactions, items=items, source=str(pairs_path),
                      has_timestamps=False, notes=notes)


def _top_tags(directory: Path, notes: list[str]) -> dict[str, str]:
    """artistID -> its most used tag's text (ties: the smallest tagID)."""
    taggings_path, tags_path = directory / TAGGINGS, directory / TAGS
    if not taggings_path.is_file():
        notes.append(f"no {TAGGINGS}: artists have no category (the π-bonus does not apply)")
        return {}
    rows, index, _, _ = _table(taggings_path, ("userID", "artistID", "tagID"))
    counts: dict[str, Counter] = defaultdict(Counter)
    for _, fields in rows:
        counts[fields[index["artistID"]].strip()][fields[index["tagID"]].strip()] += 1
    tag_text: dict[str, str] = {}
    if tags_path.is_file():
        # the HetRec dump is latin-1; a UTF-8 re-encoded copy is read as UTF-8
        tag_rows, t_index, encoding, _ = _table(tags_path, ("tagID", "tagValue"), fallback="latin-1")
        for _, fields in tag_rows:
            tag_text.setdefault(fields[t_index["tagID"]].strip(), " ".join(fields[t_index["tagValue"]].split()))
        if encoding != "utf-8":
            notes.append(f"{TAGS} read as {encoding}")
    else:
        notes.append(f"no {TAGS}: categories are tag ids")
    top: dict[str, str] = {}
    untexted = 0
    for artist, counter in counts.items():
        best = max(counter.values())
        tag = min((t for t, c in counter.items() if c == best), key=_id_key)
        if tag_text and tag not in tag_text:
            untexted += 1
        top[artist] = tag_text.get(tag) or tag
    if untexted:
        notes.append(f"{untexted} artists' top tag is missing from {TAGS}: the tag id is used")
    return top
