"""The core stays headless (docs/architecture.md §1), `deftrec --help` loads no torch, imports have no side effects."""

import ast
import os
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


def test_importing_the_llm_module_changes_no_environment_and_no_warning_filter():
    """engine.llm sets the offline hub only when a model is loaded, and then before any transformers loading."""
    tree = ast.parse((ROOT / "engine" / "llm.py").read_text())
    third_party = [ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
                   and (getattr(node, "module", None) or node.names[0].name).split(".")[0]
                   not in ("data", "engine", "__future__")]
    code = ("import os, sys, warnings\n" + "\n".join(third_party) + "\n"  # their own variables and filters first
            "before, filters = dict(os.environ), list(warnings.filters)\n"
            "import engine.llm\n"
            "print(dict(os.environ) == before, list(warnings.filters) == filters)\n"
            "engine.llm.tiny_llama()\n"
            "import huggingface_hub.constants as c\n"
            "print(os.environ['HF_HUB_OFFLINE'], os.environ['TRANSFORMERS_OFFLINE'], c.HF_HUB_OFFLINE, c.is_offline_mode())")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True, env=env)
    assert out.stdout.split() == ["True", "True", "1", "1", "True", "True"]


def test_the_cli_entry_point_sets_the_offline_hub_before_any_import_of_huggingface_hub():
    code = ("import os, sys\nfrom unittest import mock\nimport deftrec_tui.cli as cli\n"
            "with mock.patch.object(cli, 'app', lambda: None):\n    cli.main()\n"
            "print(os.environ['HF_HUB_OFFLINE'], os.environ['TRANSFORMERS_OFFLINE'], 'huggingface_hub' in sys.modules)\n"
            "import huggingface_hub.constants as c\nprint(c.HF_HUB_OFFLINE)")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True, env=env)
    assert out.stdout.split() == ["1", "1", "False", "True"]
