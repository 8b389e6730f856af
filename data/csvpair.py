"""A plain CSV pair: `interactions.csv` (user_id,item_id[,timestamp]) and `items.csv` (item_id,title[,category]).

Read with the csv module (every value a string), then validated; each problem is a one-line DataError with the
file, the line (the header is line 1) and what to do.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from data.dataset import RawDataset
from data.errors import DataError

INTERACTIONS_FILE = "interactions.csv"
ITEMS_FILE = "items.csv"
_INT64_MAX = np.iinfo(np.int64).max
_LAYOUT_HINT = "a csv dataset directory needs interactions.csv (user_id,item_id[,timestamp]) and items.csv " \
               "(item_id,title[,category])"


def utf8_lines(path: Path) -> Iterator[str]:
    """The file's lines as text (line endings kept, a UTF-8 BOM dropped); bytes that are not UTF-8 raise a
    DataError naming the line. Streams: never holds more than one line."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed by the with below)
    except FileNotFoundError:
        raise DataError("file not found", path=path) from None
    except OSError as exc:
        raise DataError(f"cannot open the file: {exc.strerror or exc}", path=path) from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"bytes that are not UTF-8 (byte {exc.start + 1} of the line: "
                                f"{raw[exc.start:exc.start + 1]!r})", path=path, line=number,
                                hint="save the file as UTF-8") from None


class Records:
    """csv rows with the file line on which each record starts (records may span lines inside quotes)."""

    def __init__(self, path: Path, *, delimiter: str = ",", quotechar: str = '"') -> None:
        self.path = path
        self._lines = utf8_lines(path)
        self._reader = csv.reader(self._lines, delimiter=delimiter, quotechar=quotechar, strict=False)

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        previous = 0
        while True:
            try:
                row = next(self._reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise DataError(f"cannot parse the record: {exc}", path=self.path, line=previous + 1,
                                hint="check the quoting of this record") from None
            start, previous = previous + 1, self._reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            yield start, row


def delimiter_hint(header_line: str, expected: str) -> str:
    if ";" in header_line:
        return "the header contains ';': the file seems to be ';'-separated; save it comma-separated"
    if "\t" in header_line:
        return "the header contains a tab: the file seems to be tab-separated; save it comma-separated"
    return f"the first line must be the header {expected}"


def _open_table(path: Path, required: tuple[str, ...], expected: str) -> tuple[Iterator[tuple[int, list[str]]],
                                                                            dict[str, int]]:
    """Validate the header; return (an iterator over the data records, column -> index)."""
    if not path.is_file():
        raise DataError("file not found", path=path, hint=_LAYOUT_HINT)
    if path.stat().st_size == 0:
        raise DataError("the file is empty", path=path, hint=f"it needs the header {expected} and one row per line")
    records = iter(Records(path))
    first = next(records, None)
    if first is None:
        raise DataError("the file is empty (only blank lines)", path=path,
                        hint=f"it needs the header {expected} and one row per line")
    _, header = first
    columns = [c.strip() for c in header]
    index = {}
    for position, name in enumerate(columns):
        index.setdefault(name, position)
    missing = [c for c in required if c not in index]
    if missing:
        raise DataError(f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}; found columns: "
                        f"{', '.join(repr(c) for c in columns)}", path=path, line=1,
                        hint=delimiter_hint(",".join(header), expected))
    return records, index


def _field_count_error(path: Path, line: int, row: list[str], width: int) -> DataError:
    return DataError(f"the row has {len(row)} fields but the header has {width}", path=path, line=line,
                     hint="quote values that contain commas")


def _parse_timestamp(text: str, path: Path, line: int) -> int:
    value = text.strip()
    body = value[1:] if value[:1] in "+-" else value
    if not body.isdigit() or not body.isascii():
        raise DataError(f"timestamp {text!r} is not a whole number", path=path, line=line,
                        hint="timestamps must be seconds since 1970 (or any increasing integer)")
    number = int(value)
    if number < 0:
        raise DataError(f"timestamp {number} is negative", path=path, line=line,
                        hint="timestamps must be seconds since 1970 (or any non-negative increasing integer)")
    if number > _INT64_MAX:
        raise DataError(f"timestamp {number} is out of range", path=path, line=line)
    return number


def read_items(path: Path, notes: list[str]) -> pd.DataFrame:
    records, index = _open_table(path, ("item_id", "title"), "item_id,title[,category]")
    has_category = "category" in index
    if not has_category:
        notes.append(f"{path.name} has no category column: the π-bonus does not apply")
    width = max(index.values()) + 1
    ids, titles, categories = [], [], []
    seen: dict[str, int] = {}
    for line, row in records:
        if len(row) < width:
            raise _field_count_error(path, line, row, width)
        item = row[index["item_id"]].strip()
        if not item:
            raise DataError("empty item_id", path=path, line=line, hint="every row needs an item_id")
        if item in seen:
            raise DataError(f"item_id {item!r} appears twice (first on line {seen[item]})", path=path, line=line,
                            hint="keep one row per item")
        seen[item] = line
        title = " ".join(row[index["title"]].split())
        if not title:
            raise DataError(f"item {item!r} has no title", path=path, line=line,
                            hint="every item needs a title: the LLM reads it in the prompt")
        ids.append(item)
        titles.append(title)
        categories.append(" ".join(row[index["category"]].split()) if has_category else "")
    return pd.DataFrame({"item_id": ids, "title": titles, "category": categories}, dtype=object)


CHUNK_ROWS = 1 << 20  # interactions collected before a chunk is compacted into arrays


class _InteractionColumns:
    """Interactions as integer codes in numpy chunks (24 bytes a row, not Python strings); each full chunk keeps
    one row per (user, item) pair, the earliest by (timestamp, line), so heavy repetition costs no memory. The
    protocol's own 'earliest duplicate kept' gives the same result on what is left."""

    def __init__(self) -> None:
        self.user_codes: dict[str, int] = {}
        self.pending: list[tuple[int, int, int, int]] = []
        self.chunks: list[np.ndarray] = []
        self.rows_read = 0

    def add(self, user: str, item_code: int, timestamp: int, line: int) -> None:
        code = self.user_codes.setdefault(user, len(self.user_codes))
        self.pending.append((code, item_code, timestamp, line))
        self.rows_read += 1
        if len(self.pending) >= CHUNK_ROWS:
            self._compact()

    def _compact(self) -> None:
        if self.pending:
            self.chunks.append(_earliest_per_pair(np.array(self.pending, dtype=np.int64)))
            self.pending = []
        if len(self.chunks) > 1:
            self.chunks = [_earliest_per_pair(np.concatenate(self.chunks))]

    def table(self) -> np.ndarray:
        """[n, 4] int64 rows (user code, item code, timestamp, line), one per pair, in file order."""
        self._compact()
        rows = self.chunks[0] if self.chunks else np.zeros((0, 4), np.int64)
        return rows[np.argsort(rows[:, 3], kind="stable")]


def _earliest_per_pair(rows: np.ndarray) -> np.ndarray:
    """One row per (user, item): the smallest (timestamp, line)."""
    order = np.lexsort((rows[:, 3], rows[:, 2], rows[:, 1], rows[:, 0]))
    rows = rows[order]
    first = np.ones(len(rows), bool)
    first[1:] = (rows[1:, 0] != rows[:-1, 0]) | (rows[1:, 1] != rows[:-1, 1])
    return rows[first]


def load_csv_pair(directory: Path) -> RawDataset:
    """interactions.csv in file order (timestamps optional) and items.csv; streamed, so memory follows the
    number of distinct (user, item) pairs, not the file's size."""
    directory = Path(directory)
    interactions_path = directory / INTERACTIONS_FILE
    items_path = directory / ITEMS_FILE
    notes: list[str] = []
    records, index = _open_table(interactions_path, ("user_id", "item_id"), "user_id,item_id[,timestamp]")
    if not items_path.is_file():  # fail early, before reading a large interactions file
        raise DataError("file not found", path=items_path, hint=_LAYOUT_HINT)
    item_frame = read_items(items_path, notes)
    item_code = {item: code for code, item in enumerate(item_frame["item_id"])}
    has_timestamps = "timestamp" in index
    width = max(index.values()) + 1
    columns = _InteractionColumns()
    for line, row in records:
        if len(row) < width:
            raise _field_count_error(interactions_path, line, row, width)
        user, item = row[index["user_id"]].strip(), row[index["item_id"]].strip()
        for name, value in (("user_id", user), ("item_id", item)):
            if not value:
                raise DataError(f"empty {name}", path=interactions_path, line=line,
                                hint="every row needs a user_id and an item_id")
        code = item_code.get(item)
        if code is None:
            raise DataError(f"item {item!r} is not in {ITEMS_FILE}", path=interactions_path, line=line,
                            hint=f"add the missing items to {ITEMS_FILE} or remove those rows")
        timestamp = _parse_timestamp(row[index["timestamp"]], interactions_path, line) if has_timestamps else 0
        columns.add(user, code, timestamp, line)
    if not columns.rows_read:
        raise DataError("the file has a header but no rows", path=interactions_path,
                        hint="add one user_id,item_id[,timestamp] row per interaction")
    table = columns.table()
    collapsed = columns.rows_read - len(table)
    if collapsed:
        notes.append(f"{INTERACTIONS_FILE}: {collapsed} repeated (user, item) rows collapsed while reading "
                     f"(the earliest kept, as the protocol does)")
    user_names = np.array(list(columns.user_codes), dtype=object)
    item_names = item_frame["item_id"].to_numpy(dtype=object)
    if has_timestamps:
        timestamp = pd.Series(table[:, 2])
    else:
        timestamp = pd.Series(pd.NA, index=range(len(table)), dtype="Int64")
        notes.append(f"{INTERACTIONS_FILE} has no timestamp column: histories are ordered by a seeded shuffle")
    interactions = pd.DataFrame({
        "user_id": pd.Series(user_names[table[:, 0]], dtype=object),
        "item_id": pd.Series(item_names[table[:, 1]], dtype=object),
        "timestamp": timestamp,
    })
    name = directory.name or directory.resolve().name
    return RawDataset(name=f"csv:{name}", interactions=interactions, items=item_frame,
                      source=str(interactions_path), has_timestamps=has_timestamps, notes=notes)
