"""Untrusted files never run code: safetensors only, no pickle, no remote code; a run from elsewhere is
validated before anything loads; names cannot escape the run directory; spreadsheet formulas are escaped."""

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deftrec_tui.cli import app
from tests.reliability import tally

ROOT = Path(__file__).resolve().parents[2]


def test_no_code_runs_from_files():
    sources = [p for folder in ("engine", "train", "data", "deftrec_tui") for p in (ROOT / folder).rglob("*.py")]
    assert len(sources) > 20
    forbidden = [r"torch\.load\(", r"\bpickle\b", r"trust_remote_code\s*=\s*True", r"(?<![\w.])eval\(", r"(?<![\w.])exec\(",
                 r"allow_pickle\s*=\s*True"]
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for pattern in forbidden:
            assert not re.search(pattern, text), f"{path.relative_to(ROOT)} matches {pattern}"
    tally("untrusted-file checks passed")


def _damaged(tiny_run, tmp_path, change) -> Path:
    run = shutil.copytree(tiny_run, tmp_path / "run")
    change(run)
    return run


def _edit_config(update):
    def change(run):
        config = json.loads((run / "config.json").read_text())
        update(config)
        (run / "config.json").write_text(json.dumps(config))
    return change


@pytest.mark.parametrize("case,change,words", [
    ("escaping file name", _edit_config(lambda c: c["files"].update({"../../outside": "0" * 64})), "escapes"),
    ("unknown format", _edit_config(lambda c: c.update(format=99)), "format"),
    ("no checksums", _edit_config(lambda c: c.pop("files")), "format"),
    ("changed weights", lambda run: (run / "denoiser.safetensors").write_bytes(b"\0" * 64), "checksum"),
    ("missing weights", lambda run: (run / "tokenizer.safetensors").unlink(), "missing"),
    ("config not json", lambda run: (run / "config.json").write_text("{"), "JSON"),
])
def test_a_run_from_elsewhere_is_validated_before_loading(tiny_run, tmp_path, case, change, words):
    run = _damaged(tiny_run, tmp_path, change)
    for command in (["eval", str(run)], ["export", str(run), "--out", str(tmp_path / "x.csv")]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2 and words in result.output, (case, result.output)
        assert not (tmp_path / "x.csv").exists()
    tally("untrusted-file checks passed")


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", ".."])
def test_run_names_cannot_escape_the_runs_folder(tmp_path, name):
    result = CliRunner().invoke(app, ["train", "--stage", "cf", "--out", str(tmp_path / "runs"), "--name", name])
    assert result.exit_code == 2 and "invalid run name" in result.output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "escape").exists()
    tally("untrusted-file checks passed")


def test_exported_formulas_are_escaped(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    titles = ["=HYPERLINK(\"http://x\")", "+1+1", "-2", "@SUM(A1)", "plain"]
    (data / "items.csv").write_text("item_id,title,category\n" + "".join(
        f'i{i},"{t.replace(chr(34), chr(34) * 2)}",=c{i % 2}\n' for i, t in enumerate(titles * 2)))
    (data / "interactions.csv").write_text("user_id,item_id,timestamp\n" + "".join(
        f"=u{u},i{(u + j) % 10},{10 * u + j}\n" for u in range(10) for j in range(6)))
    trained = CliRunner().invoke(app, ["train", "--stage", "cf", "--dataset", f"csv:{data}", "--out",
                                       str(tmp_path / "runs"), "--name", "f", "--cf-epochs", "5"])
    assert trained.exit_code == 0, trained.output
    out = tmp_path / "top.csv"
    assert CliRunner().invoke(app, ["export", str(tmp_path / "runs" / "f"), "--out", str(out), "--model",
                                    "lightgcn", "--k", "3"]).exit_code == 0
    rows = list(csv.reader(out.open()))[1:]
    cells = [cell for row in rows for cell in (row[0], row[2], row[3], row[4])]
    assert all(cell[:1] not in ("=", "+", "-", "@") for cell in cells)
    assert "'=u1" in {row[0] for row in rows}
    tally("untrusted-file checks passed")


def test_sql_never_interpolates_text():
    """Every f-string handed to SQLite interpolates only '?' placeholders or constants; user text (ids, the
    explorer's filter, titles) travels as parameters."""
    allowed = {"marks", "BUSY_TIMEOUT_MS", "','.join('?' * len(users))"}
    statement = re.compile(r"""(?:execute|query)\(\s*f(["'])(.*?)\1""", re.S)
    found = 0
    for folder in ("engine", "train", "data", "deftrec_tui"):
        for path in (ROOT / folder).rglob("*.py"):
            for match in statement.finditer(path.read_text(encoding="utf-8")):
                found += 1
                for name in re.findall(r"\{([^}]*)\}", match.group(2)):
                    assert name in allowed, f"{path.relative_to(ROOT)} interpolates {{{name}}} into SQL"
    assert found >= 3
    tally("untrusted-file checks passed")
