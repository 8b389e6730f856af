"""Amazon review 5-core dumps (2014 and 2018 releases): one review file plus one metadata file.

Reviews: JSON lines with `reviewerID`, `asin`, `unixReviewTime` (plain `.json`/`.jsonl` or gzipped).
Metadata: lines whose name starts with `meta`; strict JSON (2018) or Python-literal dicts (2014), fields `asin`,
`title`, `category` (list, 2018) or `categories` (list of lists, 2014), `brand`.
Both files are streamed line by line; only the columns we need are kept, in lists.
"""

from __future__ import annotations

import ast
import gzip
import json
import re
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from data.dataset import RawDataset
from data.errors import DataError

_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")
_REQUIRED = ("reviewerID", "asin", "unixReviewTime")
_INT64_MAX = np.iinfo(np.int64).max
_ASIN = re.compile(r"""[{,]\s*['"]asin['"]\s*:\s*['"]([^'"\\]*)['"]\s*[,}]""")


def _is_json_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(_SUFFIXES)


def find_files(directory: Path) -> tuple[Path, Path | None]:
    """The review file and the metadata file (None when absent) of an Amazon dataset directory."""
    candidates = sorted(p for p in directory.iterdir() if _is_json_file(p))
    meta = [p for p in candidates if p.name.lower().startswith("meta")]
    reviews = [p for p in candidates if not p.name.lower().startswith("meta")]
    if not reviews:
        raise DataError("no Amazon review file found", path=directory,
                        hint="put one 5-core review file (e.g. Software_5.json.gz or reviews_Software_5.json.gz) "
                             "in the directory")
    if len(reviews) > 1:
        raise DataError(f"several review files found: {', '.join(p.name for p in reviews)}", path=directory,
                        hint="keep one review file per dataset directory")
    if len(meta) > 1:
        raise DataError(f"several metadata files found: {', '.join(p.name for p in meta)}", path=directory,
                        hint="keep one meta*.json[l][.gz] file per dataset directory")
    return reviews[0], (meta[0] if meta else None)


def dataset_name(review_file: Path) -> str:
    """`reviews_Software_5.json.gz` and `Software_5.json.gz` both give `amazon:Software_5`."""
    stem = review_file.name
    for suffix in (".gz", ".jsonl", ".json"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    stem = stem.removeprefix("reviews_")
    return f"amazon:{stem}"


def _lines(path: Path, counter: dict[str, int]) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) for each non-blank line; gzip faults become a DataError naming the last good
    line. Bytes that are not UTF-8 are replaced (counted in counter['replaced'])."""
    gz = path.name.lower().endswith(".gz")
    number = 0
    try:
        handle = gzip.open(path, "rb") if gz else open(path, "rb")  # noqa: SIM115 (closed by the with below)
    except OSError as exc:
        raise DataError(f"cannot open the file: {exc.strerror or exc}", path=path) from None
    with handle:
        iterator = iter(handle)
        while True:
            try:
                raw = next(iterator)
            except StopIteration:
                return
            except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
                if number == 0 and isinstance(exc, gzip.BadGzipFile):
                    raise DataError(f"not a gzip file ({exc})", path=path,
                                    hint="decompress it or rename it without .gz") from None
                raise DataError(f"compressed file is truncated or corrupt after line {number}, the last good line: "
                                f"{exc}", path=path, hint="download the file again") from None
            except OSError as exc:
                raise DataError(f"cannot read the file after line {number}: {exc}", path=path) from None
            number += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("utf-8", errors="replace")
                counter["replaced"] = counter.get("replaced", 0) + 1
            if text.strip():
                yield number, text


def _timestamp(value: object, path: Path, number: int) -> int:
    if isinstance(value, bool):
        value = None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise DataError(f"unixReviewTime {value!r} is not a whole number", path=path, line=number,
                        hint="it must be seconds since 1970")
    if value < 0:
        raise DataError(f"unixReviewTime {value} is negative", path=path, line=number,
                        hint="it must be seconds since 1970")
    if value > _INT64_MAX:
        raise DataError(f"unixReviewTime {value} is out of range", path=path, line=number)
    return value


def _clean(text: object) -> str:
    """One line of text: whitespace runs (including the newlines of some brands) collapsed to one space."""
    if text is None:
        return ""
    return " ".join(str(text).split())


def _category(record: dict) -> str:
    """Brand when present, else the most specific (last) entry of `category` (2018) or of the first path of
    `categories` (2014)."""
    brand = _clean(record.get("brand"))
    if brand:
        return brand
    category = record.get("category")
    if isinstance(category, list):
        entries = [_clean(c) for c in category if not isinstance(c, (list, dict))]
        entries = [c for c in entries if c]
        if entries:
            return entries[-1]
    elif isinstance(category, str) and _clean(category):
        return _clean(category)
    categories = record.get("categories")
    if isinstance(categories, list) and categories:
        first = categories[0]
        path = first if isinstance(first, list) else categories
        entries = [_clean(c) for c in path if isinstance(c, str) and _clean(c)]
        if entries:
            return entries[-1]
    return ""


def _read_reviews(path: Path, notes: list[str]) -> tuple[list[str], list[str], list[int]]:
    users: list[str] = []
    items: list[str] = []
    times: list[int] = []
    counter: dict[str, int] = {}
    for number, text in _lines(path, counter):
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"line is not valid JSON ({exc.msg} at character {exc.pos + 1})", path=path, line=number,
                            hint="the review file must hold one JSON object per line") from None
        if not isinstance(record, dict):
            raise DataError(f"line is a JSON {type(record).__name__}, not an object", path=path, line=number,
                            hint="the review file must hold one JSON object per line")
        for name in _REQUIRED:
            if name not in record or record[name] is None:
                raise DataError(f"missing field {name!r}", path=path, line=number,
                                hint=f"every review needs {', '.join(_REQUIRED)}")
        user, item = str(record["reviewerID"]).strip(), str(record["asin"]).strip()
        for name, value in (("reviewerID", user), ("asin", item)):
            if not value:
                raise DataError(f"field {name!r} is empty", path=path, line=number,
                                hint=f"every review needs {', '.join(_REQUIRED)}")
        times.append(_timestamp(record["unixReviewTime"], path, number))
        users.append(user)
        items.append(item)
    if counter.get("replaced"):
        notes.append(f"{path.name}: {counter['replaced']} lines held bytes that are not UTF-8 (replaced)")
    return users, items, times


def _parse_meta(text: str, path: Path, number: int) -> dict:
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        try:
            record = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise DataError("line is neither JSON nor a Python dict literal", path=path, line=number,
                            hint="the metadata file must hold one object per line") from None
    if not isinstance(record, dict):
        raise DataError(f"line is a {type(record).__name__}, not an object", path=path, line=number,
                        hint="the metadata file must hold one object per line")
    return record


def _read_meta(path: Path, wanted: set[str], notes: list[str]) -> dict[str, tuple[str, str]]:
    """asin -> (title, category) for the asins in `wanted` (first record of an asin wins)."""
    found: dict[str, tuple[str, str]] = {}
    counter: dict[str, int] = {}
    for number, text in _lines(path, counter):
        quick = _ASIN.findall(text)  # skip the (slow) parse of records of items that were not reviewed
        if len(quick) == 1 and quick[0].strip() not in wanted:
            continue
        record = _parse_meta(text, path, number)
        if record.get("asin") is None:
            raise DataError("missing field 'asin'", path=path, line=number,
                            hint="every metadata record needs an asin")
        asin = str(record["asin"]).strip()
        if asin in wanted and asin not in found:
            found[asin] = (_clean(record.get("title")), _category(record))
    if counter.get("replaced"):
        notes.append(f"{path.name}: {counter['replaced']} lines held bytes that are not UTF-8 (replaced)")
    return found


def load_amazon(directory: Path) -> RawDataset:
    """Every review as an implicit interaction (file order); items with title and category (brand, else the
    most specific category)."""
    directory = Path(directory)
    review_file, meta_file = find_files(directory)
    notes: list[str] = []
    users, items, times = _read_reviews(review_file, notes)
    if not users:
        raise DataError("the review file holds no reviews", path=review_file)
    asins = list(dict.fromkeys(items))
    if meta_file is None:
        notes.append("no metadata file (meta*.json[l][.gz]): titles are the asins and categories are empty")
        meta: dict[str, tuple[str, str]] = {}
    else:
        meta = _read_meta(meta_file, set(asins), notes)
        absent = sum(1 for a in asins if a not in meta)
        if absent:
            notes.append(f"{absent} of {len(asins)} items have no metadata record: title = asin, no category")
    titles, categories = [], []
    untitled = 0
    for asin in asins:
        title, category = meta.get(asin, ("", ""))
        if not title:
            title = asin
            untitled += 1
        titles.append(title)
        categories.append(category)
    if untitled and meta_file is not None:
        notes.append(f"{untitled} of {len(asins)} items have no title: the asin is used as the title")
    interactions = pd.DataFrame({
        "user_id": pd.Series(users, dtype=object),
        "item_id": pd.Series(items, dtype=object),
        "timestamp": np.asarray(times, dtype=np.int64),
    })
    item_frame = pd.DataFrame({"item_id": asins, "title": titles, "category": categories}, dtype=object)
    return RawDataset(name=dataset_name(review_file), interactions=interactions, items=item_frame,
                      source=str(review_file), has_timestamps=True, notes=notes)
