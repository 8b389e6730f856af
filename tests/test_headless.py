"""The core stays headless (docs/architecture.md §1), `deftrec --help` loads no torch, imports have no side effects."""

import ast
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def imported_names(file: pathlib.Path, root: pathlib.Path = ROOT) -> list[str]:
    """Every module a file imports, at the top or inside a function: `import a.b` gives a.b, `from a import b`
    gives a and a.b (b may be a module), a relative import is resolved against the file's package."""
    package = file.relative_to(root).parent.parts
    names = []
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] if node.level else ())
            module = ".".join(p for p in (base, node.module or "") if p)
            names += [module] + [f"{module}.{a.name}" for a in node.names]
    return names


# each layer and what it must never import (docs/architecture.md §1): nothing climbs back up
LAYERS = {
    "data": ("engine", "train", "deftrec_tui", "textual"),
    "engine/model": ("engine.services", "train", "deftrec_tui", "textual"),
    "engine/services": ("train", "deftrec_tui", "textual"),
    "train": ("deftrec_tui", "textual"),
}


def test_no_import_climbs_back_up_a_layer():
    offenders = []
    for folder, forbidden in LAYERS.items():
        files = sorted((ROOT / folder).rglob("*.py"))
        assert files, folder
        for file in files:
            offenders += [f"{file.relative_to(ROOT)}: {name}" for name in imported_names(file)
                          if any(name == f or name.startswith(f + ".") for f in forbidden)]
    assert offenders == []


def test_engine_is_the_model_and_the_services():
    """Every module of engine/ lives in one of its two rooms, engine/model and engine/services."""
    loose = sorted(p.name for p in (ROOT / "engine").glob("*.py") if p.name != "__init__.py")
    assert loose == []
    assert {p.name for p in (ROOT / "engine").iterdir() if p.is_dir() and p.name != "__pycache__"} == \
        {"model", "services"}


def test_the_layer_check_sees_a_model_module_that_imports_a_service(tmp_path):
    """The check above on a planted offender: a lazy import inside a function, and a relative one."""
    planted = tmp_path / "engine" / "model" / "offender.py"
    planted.parent.mkdir(parents=True)
    planted.write_text("def f():\n    from engine.services.run import Run\n    from ..services import session\n"
                       "    import engine.model.ranking\n")
    forbidden = LAYERS["engine/model"]
    bad = [n for n in imported_names(planted, tmp_path) if any(n == f or n.startswith(f + ".") for f in forbidden)]
    assert bad == ["engine.services.run", "engine.services.run.Run", "engine.services", "engine.services.session"]


def test_importing_the_core_does_not_load_textual():
    code = ("import sys, data.protocol, data.catalog, engine.model.ranking, engine.model.cf, train.pipeline; "
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


def test_importing_the_llm_modules_changes_no_environment_and_no_warning_filter():
    """engine.model.llm.* set the offline hub only when a model is loaded, and then before any transformers loading."""
    files = sorted((ROOT / "engine" / "model" / "llm").glob("*.py"))
    assert {f.stem for f in files} >= {"convert", "loading", "lora", "tiny", "batches", "forward", "generation"}
    third_party = sorted({ast.unparse(node) for file in files for node in ast.parse(file.read_text()).body
                          if isinstance(node, (ast.Import, ast.ImportFrom))
                          and (getattr(node, "module", None) or node.names[0].name).split(".")[0]
                          not in ("data", "engine", "__future__")})
    modules = ", ".join(f"engine.model.llm.{f.stem}" for f in files if f.stem != "__init__")
    code = ("import os, sys, warnings\n" + "\n".join(third_party) + "\n"  # their own variables and filters first
            "before, filters = dict(os.environ), list(warnings.filters)\n"
            f"import {modules}\n"
            "print(dict(os.environ) == before, list(warnings.filters) == filters)\n"
            "engine.model.llm.tiny.tiny_llama()\n"
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
