"""The core stays headless (DESIGN.md §1) and `deftrec --help` loads no torch."""

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_core_packages_never_import_textual_or_the_tui():
    offenders = []
    for package in ("engine", "train", "data"):
        for file in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(file.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                offenders += [f"{file.relative_to(ROOT)}: {n}" for n in names
                              if n.split(".")[0] in ("textual", "deftrec_tui")]
    assert offenders == []


def test_importing_the_core_does_not_load_textual():
    code = ("import sys, data.protocol, data.catalog, engine.ranking, engine.cf, train.pipeline; "
            "print(any(m.split('.')[0] in ('textual', 'deftrec_tui') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_help_imports_no_torch():
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom deftrec_tui.cli import app\n"
            "for args in (['--help'], ['train', '--help'], ['export', '--help'], ['data', 'info', '--help']):\n"
            "    assert CliRunner().invoke(app, args).exit_code == 0, args\n"
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False False"
