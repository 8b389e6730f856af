"""The DeftRec authors' preprocessed files (`item_list.txt`, `user_list.txt`, `train.txt`, `test.txt`) with their
own split: per user, test = the last item of the test.txt line, validation = the last item of the train.txt line,
train = the rest. Ids shown and exported are the files' `org_id`s, not the `remap_id`s."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from data.csvpair import Records, utf8_lines
from data.dataset import RawDataset
from data.errors import DataError

ITEM_LIST = "item_list.txt"
USER_LIST = "user_list.txt"
TRAIN = "train.txt"
TEST = "test.txt"
_LAYOUT_HINT = f"a paper directory needs {ITEM_LIST}, {USER_LIST}, {TRAIN} and {TEST} (the DeftRec repository's data/)"


def _require(path: Path) -> Path:
    if not path.is_file():
        raise DataError("file not found", path=path, hint=_LAYOUT_HINT)
    return path


def _read_items(path: Path, notes: list[str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Items in file order and remap_id -> org_id. The header names the columns (order varies)."""
    records = iter(Records(_require(path), delimiter=" ", quotechar='"'))
    first = next(records, None)
    if first is None:
        raise DataError("the file is empty", path=path, hint="the first line must name the columns, e.g. "
                                                             "org_id remap_id title category")
    header = [c.strip() for c in first[1] if c.strip()]
    missing = [c for c in ("org_id", "remap_id") if c not in header]
    if missing:
        raise DataError(f"the header lacks {', '.join(missing)}; found columns: {', '.join(header)}", path=path,
                        line=1, hint="the first line must name the columns, e.g. org_id remap_id title category")
    col = {name: header.index(name) for name in header}
    has_title, has_category = "title" in col, "category" in col
    if not has_category:
        notes.append("no category column: the π-bonus does not apply")
    ids, titles, categories = [], [], []
    remap: dict[str, str] = {}
    seen: dict[str, int] = {}
    untitled = 0
    for line, row in records:
        while len(row) > len(header) and row[-1] == "":  # a trailing space
            row = row[:-1]
        if len(row) != len(header):
            raise DataError(f"the record has {len(row)} fields but the header names {len(header)}", path=path,
                            line=line, hint="fields are separated by one space; quote fields that contain spaces")
        org, rid = row[col["org_id"]].strip(), row[col["remap_id"]].strip()
        if not org or not rid:
            raise DataError("empty org_id or remap_id", path=path, line=line)
        if rid in remap:
            raise DataError(f"remap_id {rid} appears twice", path=path, line=line)
        if org in seen:
            raise DataError(f"org_id {org} appears twice (first on line {seen[org]})", path=path, line=line)
        seen[org] = line
        remap[rid] = org
        title = " ".join(row[col["title"]].split()) if has_title else ""
        if not title:
            title = org
            untitled += 1
        ids.append(org)
        titles.append(title)
        categories.append(" ".join(row[col["category"]].split()) if has_category else "")
    if not ids:
        raise DataError("the file lists no items", path=path)
    if not has_title:
        notes.append(f"{ITEM_LIST} has no title column: the org_id is used as the title")
    elif untitled:
        notes.append(f"{untitled} items have an empty title: the org_id is used as the title")
    return pd.DataFrame({"item_id": ids, "title": titles, "category": categories}, dtype=object), remap


def _read_users(path: Path) -> dict[str, str]:
    """remap_id -> org_id."""
    users: dict[str, str] = {}
    for number, line in enumerate(utf8_lines(_require(path)), start=1):
        fields = line.split()
        if not fields:
            continue
        if number == 1 and fields[0] == "org_id":
            if fields[:2] != ["org_id", "remap_id"]:
                raise DataError(f"the header is {' '.join(fields)!r}", path=path, line=1,
                                hint="expected the header: org_id remap_id")
            continue
        if len(fields) != 2:
            raise DataError(f"the line has {len(fields)} fields", path=path, line=number,
                            hint="each line is: org_id remap_id")
        org, rid = fields
        if rid in users:
            raise DataError(f"remap_id {rid} appears twice", path=path, line=number)
        users[rid] = org
    return users


def _read_sequences(path: Path) -> dict[str, tuple[int, list[str]]]:
    """user remap_id -> (line number, item remap_ids)."""
    sequences: dict[str, tuple[int, list[str]]] = {}
    for number, line in enumerate(utf8_lines(_require(path)), start=1):
        fields = line.split()
        if not fields:
            continue
        user = fields[0]
        if user in sequences:
            raise DataError(f"user {user} has a second line (the first is line {sequences[user][0]})", path=path,
                            line=number, hint="each user has exactly one line")
        sequences[user] = (number, fields[1:])
    return sequences


def load_paper(directory: Path) -> RawDataset:
    """One interaction row per item occurrence of each test.txt line (repeats kept), with the authors' split."""
    directory = Path(directory)
    notes: list[str] = []
    items, item_org = _read_items(directory / ITEM_LIST, notes)
    user_org = _read_users(directory / USER_LIST)
    train_path, test_path = directory / TRAIN, directory / TEST
    train = _read_sequences(train_path)

    users: list[str] = []
    item_ids: list[str] = []
    splits: list[str] = []
    tested: set[str] = set()
    repeats = 0
    for number, line in enumerate(utf8_lines(_require(test_path)), start=1):
        fields = line.split()
        if not fields:
            continue
        user, sequence = fields[0], fields[1:]
        if user in tested:
            raise DataError(f"user {user} has a second line", path=test_path, line=number,
                            hint="each user has exactly one line")
        tested.add(user)
        if user not in train:
            raise DataError(f"user {user} has no line in {TRAIN}", path=test_path, line=number,
                            hint=f"{TEST} must repeat each {TRAIN} line with the test item appended")
        train_line, history = train[user]
        if len(sequence) != len(history) + 1 or sequence[:-1] != history:
            raise DataError(f"the line is not {TRAIN} line {train_line} plus one test item", path=test_path,
                            line=number, hint=f"{TEST} must repeat each {TRAIN} line with the test item appended")
        if not history:
            raise DataError(f"user {user} has no item in {TRAIN}, so no validation item", path=train_path,
                            line=train_line, hint="every user needs at least one train.txt item")
        org_user = user_org.get(user)
        if org_user is None:
            raise DataError(f"user {user} is not in {USER_LIST}", path=test_path, line=number,
                            hint=f"{USER_LIST} must list every user's org_id and remap_id")
        for item in sequence:
            org_item = item_org.get(item)
            if org_item is None:
                raise DataError(f"item {item} is not in {ITEM_LIST}", path=test_path, line=number,
                                hint=f"{ITEM_LIST} must list every item's org_id and remap_id")
            item_ids.append(org_item)
        n = len(sequence)
        users.extend([org_user] * n)
        splits.extend(["train"] * (n - 2) + ["valid", "test"])
        repeats += n - len(set(sequence))
    if not users:
        raise DataError("the file holds no users", path=test_path)
    untested = [u for u in train if u not in tested]
    if untested:
        raise DataError(f"{len(untested)} users of {TRAIN} have no line in {TEST}", path=train_path,
                        line=train[untested[0]][0], hint=f"{TEST} must repeat each {TRAIN} line with the test item "
                                                         f"appended")
    if repeats:
        notes.append(f"{repeats} repeated items inside users' lines are kept as in the files")
    interactions = pd.DataFrame({
        "user_id": pd.Series(users, dtype=object),
        "item_id": pd.Series(item_ids, dtype=object),
        "timestamp": pd.Series(pd.NA, index=range(len(users)), dtype="Int64"),
    })
    split = pd.Series(splits, index=interactions.index, dtype=object, name="split")
    return RawDataset(name=f"paper:{directory.resolve().name}", interactions=interactions, items=items,
                      source=str(test_path), has_timestamps=False, notes=notes, predefined_split=split)
