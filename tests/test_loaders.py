"""The dataset loaders (amazon, lastfm, csv pair, paper) on small files written here, and their one-line errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from data.amazon import load_amazon
from data.csvpair import load_csv_pair
from data.errors import DataError
from data.lastfm import load_lastfm
from data.paper import load_paper
from data.protocol import prepare
from data.registry import load_dataset

PAPER_DATA = Path("/work/shared/datasets/deftrec-paper")


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8") if isinstance(text, str) else text
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def _error(call, *args) -> str:
    with pytest.raises(DataError) as info:
        call(*args)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def _assert_normalized(raw) -> None:
    assert list(raw.interactions.columns[:3]) == ["user_id", "item_id", "timestamp"]
    assert list(raw.items.columns[:3]) == ["item_id", "title", "category"]
    for frame, columns in ((raw.interactions, ("user_id", "item_id")), (raw.items, ("item_id", "title", "category"))):
        for column in columns:
            assert all(isinstance(v, str) for v in frame[column]), column


# ----------------------------------------------------------------------------------------------------- amazon

REVIEWS = [("u1", "a1", 30), ("u1", "a2", 10), ("u2", "a1", 20), ("u2", "a3", 20), ("u3", "a2", 5)]


def _reviews_text(rows=REVIEWS) -> str:
    return "".join(json.dumps({"reviewerID": u, "asin": a, "unixReviewTime": t, "overall": 5.0,
                               "reviewText": "fine é"}) + "\n" for u, a, t in rows)


def test_amazon_plain_2018_metadata(tmp_path):
    _write(tmp_path / "Software_5.json", _reviews_text())
    meta = [
        {"asin": "a1", "title": "Tax Pro", "brand": "by\n\n    Intuit", "category": ["Software", "Tax"]},
        {"asin": "a2", "title": "Paint", "brand": "", "category": ["Software", "Graphics", "Paint"]},
        {"asin": "a3", "category": []},  # no title -> asin
        {"asin": "zz", "title": "not reviewed"},
        {"asin": "a1", "title": "duplicate record", "brand": "Other"},
    ]
    _write(tmp_path / "meta_Software.json", "".join(json.dumps(m) + "\n" for m in meta))
    raw = load_amazon(tmp_path)
    _assert_normalized(raw)
    assert raw.name == "amazon:Software_5"
    assert raw.source.endswith("Software_5.json")
    assert raw.interactions["user_id"].tolist() == ["u1", "u1", "u2", "u2", "u3"]
    assert raw.interactions["timestamp"].dtype == "int64"
    assert raw.interactions["timestamp"].tolist() == [30, 10, 20, 20, 5]
    items = raw.items.set_index("item_id")
    assert items.loc["a1", "title"] == "Tax Pro" and items.loc["a1", "category"] == "by Intuit"
    assert items.loc["a2", "category"] == "Paint"
    assert items.loc["a3", "title"] == "a3" and items.loc["a3", "category"] == ""
    assert "zz" not in items.index
    assert any("no title" in n for n in raw.notes)


def test_amazon_gz_2014_python_literal_metadata(tmp_path):
    _write(tmp_path / "reviews_Beauty_5.json.gz", _reviews_text())
    meta = [
        "{'asin': 'a1', 'title': \"Rosie's Lipstick\", 'categories': [['Beauty', 'Makeup', 'Lips'], ['Gifts']]}",
        "{'asin': 'a2', 'categories': [['Beauty', 'Skin']], 'brand': 'Nivea'}",
        json.dumps({"asin": "a3", "title": "Strict JSON line", "categories": [["Beauty"]]}),
    ]
    _write(tmp_path / "meta_Beauty.json.gz", "\n".join(meta) + "\n")
    raw = load_amazon(tmp_path)
    _assert_normalized(raw)
    assert raw.name == "amazon:Beauty_5"
    items = raw.items.set_index("item_id")
    assert items.loc["a1", "title"] == "Rosie's Lipstick" and items.loc["a1", "category"] == "Lips"
    assert items.loc["a2", "title"] == "a2" and items.loc["a2", "category"] == "Nivea"
    assert items.loc["a3", "category"] == "Beauty"
    assert len(raw.interactions) == 5


def test_amazon_truncated_gz(tmp_path):
    rows = [(f"u{k}", f"a{k % 9}", 1000 + k) for k in range(3000)]
    data = gzip.compress(_reviews_text(rows).encode())
    (tmp_path / "Software_5.json.gz").write_bytes(data[: len(data) // 2])
    message = _error(load_amazon, tmp_path)
    assert "Software_5.json.gz" in message and "truncated" in message
    assert "after line " in message
    last_good = int(message.split("after line ")[1].split()[0].rstrip(","))
    assert 0 < last_good < 3000


@pytest.mark.parametrize("line3, expected", [
    ('{"reviewerID": "u9", "asin": "a1", "unixReviewTime": 5', "not valid JSON"),
    ('{"reviewerID": "u9", "unixReviewTime": 5}', "'asin'"),
    ('{"reviewerID": "u9", "asin": "a1", "unixReviewTime": "soon"}', "not a whole number"),
    ('{"reviewerID": "u9", "asin": "a1", "unixReviewTime": -7}', "negative"),
])
def test_amazon_bad_review_lines(tmp_path, line3, expected):
    text = _reviews_text(REVIEWS[:2]) + line3 + "\n" + _reviews_text(REVIEWS[2:])
    _write(tmp_path / "Software_5.json", text)
    message = _error(load_amazon, tmp_path)
    assert "Software_5.json:3:" in message and expected in message


def test_amazon_bad_metadata_line(tmp_path):
    _write(tmp_path / "Software_5.json", _reviews_text())
    _write(tmp_path / "meta_Software.json", '{"asin": "a1"}\n{"asin": "a2", broken\n')
    message = _error(load_amazon, tmp_path)
    assert "meta_Software.json:2:" in message


# ----------------------------------------------------------------------------------------------------- lastfm


def _lastfm_files(directory: Path, *, tags: bool = True) -> None:
    _write(directory / "user_artists.dat", "userID\tartistID\tweight\n2\t51\t13883\n2\t52\t11690\n"
                                           "3\t51\t100\n3\t53\t7\n4\t54\t1\n")
    _write(directory / "artists.dat", b"id\tname\turl\tpictureURL\n51\tDuran Duran\thttp://x\thttp://p\n"
                                      b"52\tMorcheeba\thttp://x\thttp://p\n53\tBj\xf6rk\thttp://x\thttp://p\n")
    if tags:
        _write(directory / "user_taggedartists.dat",
               "userID\tartistID\ttagID\tday\tmonth\tyear\n"
               "2\t51\t7\t1\t4\t2009\n3\t51\t7\t1\t4\t2009\n2\t51\t3\t1\t4\t2009\n"  # 51: tag 7 most used
               "2\t52\t9\t1\t4\t2009\n2\t52\t4\t1\t4\t2009\n")  # 52: tie 9 / 4 -> 4
        _write(directory / "tags.dat", "tagID\ttagValue\n3\tmetal\n4\ttrip-hop\n7\tnew wave\n9\tchill\n"
               .encode("latin-1") + b"10\tcaf\xe9\n")


def test_lastfm(tmp_path):
    _lastfm_files(tmp_path)
    raw = load_lastfm(tmp_path, seed=3)
    _assert_normalized(raw)
    assert raw.name == "lastfm" and raw.source.endswith("user_artists.dat")
    assert raw.has_timestamps is False
    assert str(raw.interactions["timestamp"].dtype) == "Int64" and raw.interactions["timestamp"].isna().all()
    assert raw.interactions["item_id"].tolist() == ["51", "52", "51", "53", "54"]
    items = raw.items.set_index("item_id")
    assert items.loc["51", "category"] == "new wave"
    assert items.loc["52", "category"] == "trip-hop"
    assert items.loc["53", "category"] == "" and items.loc["53", "title"] == "Bj\ufffdrk"
    assert items.loc["54", "title"] == "54"  # not in artists.dat
    assert any("artists.dat" in n and "not UTF-8" in n for n in raw.notes)


def test_lastfm_without_tags(tmp_path):
    _lastfm_files(tmp_path, tags=False)
    raw = load_lastfm(tmp_path)
    assert (raw.items["category"] == "").all()
    assert any("user_taggedartists.dat" in n for n in raw.notes)


def test_lastfm_bad_row(tmp_path):
    _lastfm_files(tmp_path)
    _write(tmp_path / "user_artists.dat", "userID\tartistID\tweight\n2\t51\t1\n2 52 1\n")
    message = _error(load_lastfm, tmp_path)
    assert "user_artists.dat:3:" in message


# ----------------------------------------------------------------------------------------------------- csv


def test_csv_pair(tmp_path):
    _write(tmp_path / "shop" / "interactions.csv", "user_id,item_id,timestamp\nu1,i1,5\nu1,i2,3\nu2,i1,9\n")
    _write(tmp_path / "shop" / "items.csv", 'item_id,title,category\ni1,"Book, the",fiction\ni2,Pen,office\n')
    raw = load_csv_pair(tmp_path / "shop")
    _assert_normalized(raw)
    assert raw.name == "csv:shop" and raw.source.endswith("interactions.csv") and raw.has_timestamps
    assert raw.interactions["timestamp"].dtype == "int64"
    assert raw.interactions["timestamp"].tolist() == [5, 3, 9]
    assert raw.items.set_index("item_id").loc["i1", "title"] == "Book, the"
    assert load_dataset(f"csv:{tmp_path / 'shop'}").interactions.equals(raw.interactions)


def test_csv_pair_without_timestamps_or_categories(tmp_path):
    _write(tmp_path / "interactions.csv", "item_id,user_id\ni1,u1\ni2,u1\n")
    _write(tmp_path / "items.csv", "item_id,title\ni1,Book\ni2,Pen\n")
    raw = load_csv_pair(tmp_path)
    assert raw.has_timestamps is False
    assert str(raw.interactions["timestamp"].dtype) == "Int64" and raw.interactions["timestamp"].isna().all()
    assert raw.interactions["user_id"].tolist() == ["u1", "u1"]
    assert (raw.items["category"] == "").all()
    assert any("category" in n for n in raw.notes)


ITEMS_OK = "item_id,title,category\ni1,Book,x\ni2,Pen,y\n"


@pytest.mark.parametrize("interactions, items, where, expected", [
    (None, ITEMS_OK, "interactions.csv", "file not found"),
    ("user_id,item_id\nu1,i1\n", None, "items.csv", "file not found"),
    ("", ITEMS_OK, "interactions.csv", "empty"),
    ("user_id;item_id;timestamp\nu1;i1;5\n", ITEMS_OK, "interactions.csv:1:", "';'"),
    ("user_id\titem_id\nu1\ti1\n", ITEMS_OK, "interactions.csv:1:", "tab"),
    ("user,item_id\nu1,i1\n", ITEMS_OK, "interactions.csv:1:", "found columns: 'user', 'item_id'"),
    ("user_id,item_id\nu1,i1\n", "item_id,name\ni1,Book\n", "items.csv:1:", "title"),
    ("user_id,item_id,timestamp\nu1,i1,5\nu1,i2,yesterday\n", ITEMS_OK, "interactions.csv:3:", "not a whole number"),
    ("user_id,item_id,timestamp\nu1,i1,5\n\nu1,i2,-4\n", ITEMS_OK, "interactions.csv:4:", "negative"),
    ("user_id,item_id\nu1,i1\nu1,i2\nu2,i9\nu3,i8\n", ITEMS_OK, "interactions.csv:4:", "'i9'"),
    (b"user_id,item_id\nu1,i1\nu\xe9,i2\n", ITEMS_OK, "interactions.csv:3:", "not UTF-8"),
    ("user_id,item_id\nu1,i1\n", b"item_id,title\ni1,Book\ni2,P\xe9n\n", "items.csv:3:", "not UTF-8"),
])
def test_csv_pair_errors(tmp_path, interactions, items, where, expected):
    if interactions is not None:
        _write(tmp_path / "interactions.csv", interactions)
    if items is not None:
        _write(tmp_path / "items.csv", items)
    message = _error(load_csv_pair, tmp_path)
    assert where in message and expected in message, message


def test_csv_five_core_empty_is_a_data_error(tmp_path):
    rows = "".join(f"u{k},i{k % 3},{k}\n" for k in range(12))
    _write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\n" + rows)
    _write(tmp_path / "items.csv", "item_id,title\ni0,a\ni1,b\ni2,c\n")
    raw = load_csv_pair(tmp_path)
    message = _error(prepare, raw)
    assert "5-core" in message and "interactions.csv" in message


# ----------------------------------------------------------------------------------------------------- paper


def _paper_files(directory: Path, *, header: str = "org_id category remap_id title") -> None:
    columns = header.split()
    records = [
        {"org_id": "B01", "remap_id": "0", "title": '"Tax Pro 2015"', "category": "Intuit"},
        {"org_id": "B02", "remap_id": "1", "title": "Paint", "category": '"by\n\n    Her Interactive"'},
        {"org_id": "B03", "remap_id": "2", "title": '"Say ""hi"" there"', "category": '""'},
        {"org_id": "B04", "remap_id": "3", "title": '"Office, home"', "category": "Microsoft"},
    ]
    _write(directory / "item_list.txt", header + "\n" + "".join(
        " ".join(r[c] for c in columns) + "\n" for r in records))
    _write(directory / "user_list.txt", "org_id remap_id\nA_ALICE 0\nA_BOB 1\n")
    _write(directory / "train.txt", "0 0 1 2\n1 3 3 0\n")
    _write(directory / "test.txt", "0 0 1 2 3\n1 3 3 0 3\n")


def test_paper_tiny(tmp_path):
    _paper_files(tmp_path / "tiny")
    raw = load_paper(tmp_path / "tiny")
    _assert_normalized(raw)
    assert raw.name == "paper:tiny" and raw.source.endswith("test.txt") and raw.has_timestamps is False
    assert raw.interactions["user_id"].tolist() == ["A_ALICE"] * 4 + ["A_BOB"] * 4
    assert raw.interactions["item_id"].tolist() == ["B01", "B02", "B03", "B04", "B04", "B04", "B01", "B04"]
    assert raw.predefined_split.tolist() == ["train", "train", "valid", "test"] * 2
    assert raw.predefined_split.index.equals(raw.interactions.index)
    assert raw.interactions["timestamp"].isna().all() and str(raw.interactions["timestamp"].dtype) == "Int64"
    items = raw.items.set_index("item_id")
    assert items.loc["B02", "category"] == "by Her Interactive"
    assert items.loc["B03", "title"] == 'Say "hi" there' and items.loc["B03", "category"] == ""
    assert items.loc["B04", "title"] == "Office, home"
    split = prepare(raw)
    assert (split.n_users, split.n_items, split.after.interactions) == (2, 4, 8)
    assert split.items.set_index("item_id").loc["B03", "title"] == 'Say "hi" there'


def test_paper_without_category(tmp_path):
    _paper_files(tmp_path, header="remap_id org_id title")
    raw = load_paper(tmp_path)
    assert (raw.items["category"] == "").all()
    assert "no category column: the π-bonus does not apply" in raw.notes
    assert raw.items["title"].tolist()[0] == "Tax Pro 2015"


def test_paper_test_line_must_extend_train_line(tmp_path):
    _paper_files(tmp_path)
    _write(tmp_path / "test.txt", "0 0 1 2 3\n1 3 0 3 3\n")
    message = _error(load_paper, tmp_path)
    assert "test.txt:2:" in message and "train.txt line 2" in message


def test_paper_unknown_item(tmp_path):
    _paper_files(tmp_path)
    _write(tmp_path / "train.txt", "0 0 1 2\n1 3 3 7\n")
    _write(tmp_path / "test.txt", "0 0 1 2 3\n1 3 3 7 3\n")
    message = _error(load_paper, tmp_path)
    assert "test.txt:2:" in message and "item 7" in message


@pytest.mark.skipif(not (PAPER_DATA / "software").is_dir(), reason="the paper's software data is not present")
def test_paper_software_in_place():
    raw = load_paper(PAPER_DATA / "software")
    split = prepare(raw)
    assert raw.name == "paper:software"
    assert (split.after.users, split.after.items, split.after.interactions) == (1351, 778, 9322)
    assert (raw.predefined_split == "test").sum() == 1351
    assert (split.valid_item == split.test_item).sum() == 234
    assert raw.interactions["item_id"].iloc[0] == "B005S4Y65I"  # org_id of remap_id 0, not "0"
    assert raw.interactions["user_id"].iloc[0] == "A100UD67AHFODS"


@pytest.mark.skipif(not (PAPER_DATA / "lastfm").is_dir(), reason="the paper's lastfm data is not present")
def test_paper_lastfm_in_place_category_before_title():
    raw = load_paper(PAPER_DATA / "lastfm")
    split = prepare(raw)
    assert (split.after.users, split.after.items, split.after.interactions) == (1091, 3685, 52670)
    header = (PAPER_DATA / "lastfm" / "item_list.txt").read_text(encoding="utf-8").splitlines()[0].split()
    assert header.index("category") < header.index("title")  # the column order differs from software's
    items = raw.items.set_index("item_id")
    assert (items["title"] != "").all() and (items["category"] != "").mean() > 0.9
    assert not raw.notes or all("category" not in note for note in raw.notes)


@pytest.mark.parametrize("name,counts", [("beauty", (22363, 12101, 198502)), ("industrial", (9791, 5317, 68186)),
                                         ("ml1m", (6038, 3307, 835789))])
def test_paper_datasets_have_the_paper_counts(name, counts):
    if not (PAPER_DATA / name).is_dir():
        pytest.skip(f"the paper's {name} data is not present")
    split = prepare(load_paper(PAPER_DATA / name))
    assert (split.after.users, split.after.items, split.after.interactions) == counts
    assert len(split.test_item) == counts[0]
