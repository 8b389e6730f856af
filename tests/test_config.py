"""The run's settings (engine/model/config.py): one nested config saved whole in config.json, read back strictly, and
format-1 runs migrated on load with the values their code used, whatever the defaults become."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deftrec_tui.cli import app
from engine.model.config import (
    FORMAT_VERSION,
    PROFILES,
    SECTIONS,
    DeftRecConfig,
    DiffusionConfig,
    Profile,
    TokenizerConfig,
    config_from_v1,
    migrate,
)
from engine.services.run import Run

ROOT = Path(__file__).resolve().parents[1]
FORMAT1 = Path(__file__).parent / "data" / "config_format1.json"  # runs/q-recent-s0's config.json, records trimmed

# what the format-1 fixture migrates to: its stored values, and the format-1 code's values of what it left out
# (decoding, inference_precision, n_blocks, out_norm, beta_start, beta_end, time_embed_dim)
FORMAT1_EXPECTED = {
    "variant": "deftrec",
    "llm": {"name": "smollm2", "fingerprint": "92ee9f1af837189d", "hidden": 576, "lora_r": 16, "lora_alpha": 32,
            "lora_dropout": 0.05, "max_new_tokens": 24, "decoding": "full", "inference_precision": "float32"},
    "prompt": {"history": "recent", "max_history": 8, "max_length": 160, "max_title_chars": 40,
               "title_year": "keep", "item_text": "title", "response": "history"},
    "tokenizer": {"out_dim": 576, "in_dim": 64, "k": 2, "n_blocks": 2, "dropout": 0.1, "mask_ratio": 0.2,
                  "kind": "kway", "out_scale": 0.13557852804660797, "out_norm": True, "sigma_scale": 0.5,
                  "pretrain_epochs": 0},
    "condition": {"norm": "sigmoid", "source": "hidden", "pool": "response"},
    "diffusion": {"cond_dim": 576, "num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02,
                  "num_inference_steps": 100, "item_dim": 64, "hidden_dim": 512, "time_embed_dim": 64,
                  "dropout": 0.1, "n_layers": 3, "cond_standardize": True, "prediction": "eps", "cond_dropout": 0.0,
                  "enabled": True, "target_scale": 0.3927879333496094, "aux_loss": "bpr", "neg_norm": "sum",
                  "dispersive_tau": 0.5, "sampling_temperature": 0.0, "guidance": 1.0},
    "retrieval": {"pi": 0.1, "pi_match": "exact", "item_norm": 0.0},
    "training": {"cf": "lightgcn", "gamma1": 0.5, "gamma2": 0.1, "gamma3": 0.5, "dispersive_weight": 0.5,
                 "n_negatives": 10, "distinct_positives": True, "refine_targets": 5, "refine_init": "joint",
                 "align_weight": 0.0},
    "profile": {"name": "quick", "steps": 60, "batch_size": 8, "grad_accum": 1, "lr": 0.001, "weight_decay": 1e-05,
                "max_history": 8, "max_length": 160, "refine_epochs": 30, "diffusion_repeats": 8,
                "describe_batch": 48, "checkpoint_every": 20, "val_every": 0, "val_users": 0, "val_patience": 0,
                "refine_patience": 4, "cpu_bf16": True, "refine_seconds": 0.0},
}

# a value other than the default for every leaf (kept valid: D, d and the enumerations agree)
CHANGED = {
    "variant": "custom",
    "llm": {"name": "tiny", "fingerprint": "abc", "hidden": 64, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.2,
            "max_new_tokens": 12, "decoding": "full", "inference_precision": "bfloat16"},
    "prompt": {"history": "random", "max_history": 5, "max_length": 128, "max_title_chars": 60, "title_year": "keep",
               "item_text": "title", "response": "target"},
    "tokenizer": {"out_dim": 64, "in_dim": 32, "k": 3, "n_blocks": 1, "dropout": 0.2, "mask_ratio": 0.0,
                  "kind": "sigma-vae", "out_scale": 0.5, "out_norm": False, "sigma_scale": 0.25, "pretrain_epochs": 7},
    "condition": {"norm": "layernorm", "source": "embedding", "pool": "response+user"},
    "diffusion": {"cond_dim": 64, "num_train_timesteps": 500, "beta_start": 2e-4, "beta_end": 0.03,
                  "num_inference_steps": 50, "item_dim": 32, "hidden_dim": 128, "time_embed_dim": 32, "dropout": 0.0,
                  "n_layers": 2, "cond_standardize": False, "prediction": "x0", "cond_dropout": 0.1, "enabled": False,
                  "target_scale": 0.7, "aux_loss": "dispersive", "neg_norm": "mean", "dispersive_tau": 2.0,
                  "sampling_temperature": 0.0, "guidance": 2.0},
    "retrieval": {"pi": 0.2, "pi_match": "overlap", "item_norm": 0.5},
    "training": {"cf": "random", "gamma1": 0.25, "gamma2": 0.2, "gamma3": 1.0, "dispersive_weight": 0.1,
                 "n_negatives": 5, "distinct_positives": False, "refine_targets": 4, "refine_init": "fresh",
                 "align_weight": 0.5},
    "profile": {"name": "custom", "steps": 3, "batch_size": 2, "grad_accum": 2, "lr": 0.01, "weight_decay": 0.0,
                "max_history": 4, "max_length": 64, "refine_epochs": 1, "diffusion_repeats": 1, "describe_batch": 2,
                "checkpoint_every": 2, "val_every": 1, "val_users": 3, "val_patience": 1, "refine_patience": 0,
                "cpu_bf16": False, "refine_seconds": 12.5},
}


def _leaves(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        out.update(_leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
    return out


def _fake_run(tmp_path: Path, config: dict) -> Path:
    """A run directory holding config.json only (opened with verify=False: its recorded files are absent)."""
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    (run / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return run


def _current(settings: dict | None) -> dict:
    """A config.json of the current format around DeftRec settings (the fixture's run-level values)."""
    old = json.loads(FORMAT1.read_text(encoding="utf-8"))
    new = migrate(old)
    new["deftrec"] = None if settings is None else {**new["deftrec"], "config": settings}
    return new


def test_config_module_imports_no_torch():
    code = ("import sys, engine.model.config, engine.model.variants, engine.services.run; "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_changed_table_covers_every_setting_and_differs_from_every_default():
    defaults = _leaves(DeftRecConfig().to_dict())
    changed = _leaves(CHANGED)
    assert set(changed) == set(defaults)  # a new setting must be added here (and to the migration)
    assert [path for path in defaults if changed[path] == defaults[path]] == []


def test_every_setting_round_trips_through_config_json(tmp_path):
    config = DeftRecConfig.from_dict(CHANGED)
    assert config.to_dict() == CHANGED
    run = Run.open(_fake_run(tmp_path, _current(config.to_dict())), verify=False)
    assert run.deftrec_config == config
    assert json.loads((run.path / "config.json").read_text())["format_version"] == FORMAT_VERSION


def test_the_model_parts_take_the_config_sections_themselves():
    from engine.model.deftrec import ConditionConfig, DeftRecHeads  # the one the condition head takes
    from engine.model.diffusion import DiffusionConfig as ModelDiffusionConfig
    from engine.model.tokenizer import TokenizerConfig as ModelTokenizerConfig
    assert ModelDiffusionConfig is DiffusionConfig and ModelTokenizerConfig is TokenizerConfig
    assert ConditionConfig is SECTIONS["ConditionConfig"]
    config = DeftRecConfig().with_llm_hidden(64).updated({"diffusion.beta_end": 0.03, "tokenizer.n_blocks": 1})
    heads = DeftRecHeads(config)
    assert heads.tokenizer.config is config.tokenizer and heads.denoiser.config is config.diffusion
    assert heads.condition.config is config.condition
    assert float(heads.schedule().betas[-1]) == pytest.approx(0.03)


def test_a_trained_run_saves_every_setting(tiny_run):
    stored = json.loads((tiny_run / "config.json").read_text())
    assert stored["format_version"] == FORMAT_VERSION and "format" not in stored
    settings = stored["deftrec"]["config"]
    assert set(_leaves(settings)) == set(_leaves(DeftRecConfig().to_dict()))
    assert Run.open(tiny_run).deftrec_config.to_dict() == settings
    assert settings["diffusion"]["beta_start"] == 1e-4 and settings["tokenizer"]["n_blocks"] == 2


def test_format1_fixture_migrates_to_the_expected_config(tmp_path):
    old = json.loads(FORMAT1.read_text(encoding="utf-8"))
    assert old["format"] == 1 and "beta_start" not in old["deftrec"]
    run = Run.open(_fake_run(tmp_path, old), verify=False)
    assert run.deftrec_config.to_dict() == FORMAT1_EXPECTED
    assert run.config["format_version"] == FORMAT_VERSION and "format" not in run.config
    # the training's records are kept beside the settings, unchanged
    assert {k: run.config["deftrec"][k] for k in ("tokenizer", "refine", "loss_log", "diagnostics")} == {
        k: old["deftrec"][k] for k in ("tokenizer", "refine", "loss_log", "diagnostics")}
    assert json.loads((run.path / "config.json").read_text()) == old  # migrated in memory, the file untouched


@pytest.mark.parametrize("flat, path, value", [
    ({"negative_loss": False}, "diffusion.aux_loss", "none"),
    ({"negative_loss": False, "diffusion_loss": "dispersive"}, "diffusion.aux_loss", "dispersive"),
    ({"diffusion": False}, "diffusion.enabled", False),
    ({"encoder": "linear"}, "tokenizer.kind", "linear"),
    ({}, "prompt.history", "random"),  # format 1's default, before `deftrec train` chose recent
    ({}, "llm.decoding", "full"),
])
def test_format1_choices_map_to_one_setting(flat, path, value):
    assert config_from_v1({"llm_hidden": 64, **flat}).get(path) == value


def _patch_every_default(monkeypatch) -> None:
    """Every default of every section replaced by CHANGED's value (D and d kept consistent)."""
    for name, section in CHANGED.items():
        if not isinstance(section, dict):
            continue
        kind = {f.name: f.type for f in dataclasses.fields(DeftRecConfig)}[name]
        cls = SECTIONS[kind]
        init = cls.__init__
        names = [f.name for f in dataclasses.fields(cls)]
        defaults = init.__defaults__ or ()
        with_default = names[len(names) - len(defaults):]
        monkeypatch.setattr(init, "__defaults__", tuple(section[n] for n in with_default))
    monkeypatch.setitem(PROFILES, "quick", Profile(**CHANGED["profile"]))  # the root's default profile


def test_an_old_run_reloads_unchanged_when_every_default_changes(tmp_path, monkeypatch):
    before = DeftRecConfig()
    _patch_every_default(monkeypatch)
    after = DeftRecConfig()
    changed = [path for path, value in _leaves(before.to_dict()).items() if _leaves(after.to_dict())[path] != value]
    assert len(changed) == len(_leaves(before.to_dict())) - 1  # every default but the variant's name changed
    run = Run.open(_fake_run(tmp_path, json.loads(FORMAT1.read_text(encoding="utf-8"))), verify=False)
    assert run.deftrec_config.to_dict() == FORMAT1_EXPECTED  # the migrated old values, not the new defaults
    # and a format-2 run written before the change keeps every stored value
    (tmp_path / "new").mkdir()
    run2 = Run.open(_fake_run(tmp_path / "new", _current(FORMAT1_EXPECTED)), verify=False)
    assert run2.deftrec_config.to_dict() == FORMAT1_EXPECTED


def _edited(settings_edit) -> dict:
    settings = json.loads(json.dumps(FORMAT1_EXPECTED))
    settings_edit(settings)
    return _current(settings)


@pytest.mark.parametrize("config, words", [
    (_edited(lambda s: s["diffusion"].update(beta_mid=0.01)), "unknown setting 'deftrec.config.diffusion.beta_mid'"),
    (_edited(lambda s: s["tokenizer"].pop("n_blocks")), "missing setting 'deftrec.config.tokenizer.n_blocks'"),
    (_edited(lambda s: s.pop("retrieval")), "missing setting 'deftrec.config.retrieval'"),
    (_edited(lambda s: s["diffusion"].update(aux_loss="mse")), "aux_loss must be one of"),
    (_edited(lambda s: s["llm"].update(hidden=64)), "must be equal"),
    ({**_current(FORMAT1_EXPECTED), "extra": 1}, "unknown key 'extra'"),
    ({k: v for k, v in _current(FORMAT1_EXPECTED).items() if k != "models"}, "missing key 'models'"),
    ({**_current(FORMAT1_EXPECTED), "format_version": 11}, "format 10"),
    (_edited(lambda s: s["training"].update(refine_init="warm")), "refine_init must be one of joint, fresh"),
    (_edited(lambda s: s["retrieval"].update(item_norm=-1.0)), "item_norm must be a finite number >= 0"),
    (_edited(lambda s: s["training"].update(align_weight=-0.5)), "align_weight must be >= 0"),
])
def test_strict_loading_refuses_in_one_line(tmp_path, config, words):
    run = _fake_run(tmp_path, config)
    result = CliRunner().invoke(app, ["eval", str(run)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and str(run / "config.json") in lines[0], result.output


def test_format1_unknown_setting_is_refused(tmp_path):
    old = json.loads(FORMAT1.read_text(encoding="utf-8"))
    old["deftrec"]["beta_mid"] = 0.01
    result = CliRunner().invoke(app, ["eval", str(_fake_run(tmp_path, old))])
    assert result.exit_code == 2 and "unknown setting 'deftrec.beta_mid' (format 1)" in result.output


def test_a_real_old_run_migrates_like_the_fixture(tmp_path):
    source = ROOT / "runs" / "q-recent-s0" / "config.json"
    if not source.is_file():
        pytest.skip("runs/q-recent-s0 is not on this machine")
    copy = tmp_path / "q"
    copy.mkdir()
    shutil.copy(source, copy / "config.json")  # never opened in runs/: a copy
    assert Run.open(copy, verify=False).deftrec_config.to_dict() == FORMAT1_EXPECTED


def test_a_format2_run_migrates_with_the_titles_it_was_trained_on(tmp_path):
    settings = json.loads(json.dumps(FORMAT1_EXPECTED))
    del settings["prompt"]["title_year"]  # format 2 had no such setting: titles were shown whole
    del settings["training"]["refine_targets"]  # nor this one: the refinement targeted the 5 latest items
    old = {**_current(settings), "format_version": 2}
    run = Run.open(_fake_run(tmp_path, old), verify=False)
    assert run.deftrec_config.prompt.title_year == "keep" and run.config["format_version"] == FORMAT_VERSION
    assert run.deftrec_config.to_dict() == FORMAT1_EXPECTED


def test_a_format3_run_migrates_with_the_refinement_targets_it_was_trained_with(tmp_path):
    settings = json.loads(json.dumps(FORMAT1_EXPECTED))
    settings["prompt"]["title_year"] = "drop"
    del settings["training"]["refine_targets"]  # format 3 had no such setting: the 5 latest train items
    run = Run.open(_fake_run(tmp_path, {**_current(settings), "format_version": 3}), verify=False)
    assert run.deftrec_config.training.refine_targets == 5 and run.deftrec_config.prompt.title_year == "drop"
    assert run.config["format_version"] == FORMAT_VERSION


def test_a_format4_run_migrates_showing_titles_alone(tmp_path):
    settings = json.loads(json.dumps(FORMAT1_EXPECTED))
    del settings["prompt"]["item_text"]  # format 4 had no such setting: items were shown by their titles
    settings["training"]["refine_targets"] = 3
    run = Run.open(_fake_run(tmp_path, {**_current(settings), "format_version": 4}), verify=False)
    assert run.deftrec_config.prompt.item_text == "title" and run.deftrec_config.training.refine_targets == 3
    assert run.config["format_version"] == FORMAT_VERSION


def test_a_format5_run_migrates_pooling_c_over_the_response(tmp_path):
    settings = json.loads(json.dumps(FORMAT1_EXPECTED))
    del settings["condition"]["pool"]  # format 5 had no such setting: c was the response's mean alone
    settings["prompt"]["item_text"] = "title-category"
    run = Run.open(_fake_run(tmp_path, {**_current(settings), "format_version": 5}), verify=False)
    assert run.deftrec_config.condition.pool == "response" and run.deftrec_config.prompt.item_text == "title-category"
    assert run.config["format_version"] == FORMAT_VERSION


def test_a_format6_run_migrates_ranking_by_the_cosine(tmp_path):
    settings = json.loads(json.dumps(FORMAT1_EXPECTED))
    del settings["retrieval"]["item_norm"]  # format 6 had no such setting: Eq. 14's cosine, α = 0
    settings["condition"]["pool"] = "response+user"
    run = Run.open(_fake_run(tmp_path, {**_current(settings), "format_version": 6}), verify=False)
    assert run.deftrec_config.retrieval.item_norm == 0.0 and run.deftrec_config.condition.pool == "response+user"
    assert run.config["format_version"] == FORMAT_VERSION


def test_a_format7_run_migrates_refining_the_jointly_trained_denoiser(tmp_path):
    settings = json.loads(json.dumps(FORMAT1_EXPECTED))
    del settings["training"]["refine_init"]  # format 7 had no such setting: the refinement went on from the joint one
    settings["retrieval"]["item_norm"] = 0.5
    run = Run.open(_fake_run(tmp_path, {**_current(settings), "format_version": 7}), verify=False)
    assert run.deftrec_config.training.refine_init == "joint" and run.deftrec_config.retrieval.item_norm == 0.5
    assert run.config["format_version"] == FORMAT_VERSION


def test_a_format8_run_migrates_without_the_alignment_loss(tmp_path):
    settings = json.loads(json.dumps(FORMAT1_EXPECTED))
    del settings["training"]["align_weight"]  # format 8 had no such setting: Eq. 15 as written
    settings["training"]["refine_init"] = "fresh"
    run = Run.open(_fake_run(tmp_path, {**_current(settings), "format_version": 8}), verify=False)
    assert run.deftrec_config.training.align_weight == 0.0 and run.deftrec_config.training.refine_init == "fresh"
    assert run.config["format_version"] == FORMAT_VERSION


def test_a_format9_run_migrates_without_a_refinement_time_bound(tmp_path):
    settings = json.loads(json.dumps(FORMAT1_EXPECTED))
    del settings["profile"]["refine_seconds"]  # format 9 had no such setting: the refinement ran unbounded
    run = Run.open(_fake_run(tmp_path, {**_current(settings), "format_version": 9}), verify=False)
    assert run.deftrec_config.profile.refine_seconds == 0.0 and run.deftrec_config.profile.refine_epochs == 30
    assert run.config["format_version"] == FORMAT_VERSION


def test_title_category_items_show_their_category_after_the_title():
    from engine.model.prompts import build_prompt
    prompt = build_prompt(0, ["Toy Story (1995)", "Heat (1995)", "Kolya (1996)"], 2, drop_year=True,
                          categories=["Animation|Children's|Comedy", None, "Comedy"])
    assert "history: Toy Story (Animation|Children's|Comedy) <ct><ct>, Heat <ct><ct>, Kolya (Comedy) <ct><ct>." in prompt
    assert build_prompt(0, ["Heat (1995)"], 1, categories=["Action"]).count("(") == 2  # year kept, then the category
    assert "Enigma <ct>" in build_prompt(0, ["Enigma"], 1, categories=["Enigma"])  # LastFM: the artist twice
    with pytest.raises(ValueError, match="2 titles but 1 categories"):
        build_prompt(0, ["Heat", "Kolya"], 1, categories=["Action"])
    with pytest.raises(ValueError, match="item_text"):
        DeftRecConfig().updated({"prompt.item_text": "category"})


def test_a_dropped_year_leaves_the_rest_of_the_title():
    from engine.model.prompts import build_prompt, trim_title
    assert trim_title("Toy Story (1995)", drop_year=True) == "Toy Story"
    assert trim_title("Toy Story (1995)") == "Toy Story (1995)"
    assert trim_title("(1995)", drop_year=True) == "(1995)"  # never an empty title
    assert trim_title("1984 (1984)", 40, drop_year=True) == "1984"
    assert trim_title("Lorem (1999) ipsum", drop_year=True) == "Lorem (1999) ipsum"  # only a trailing year
    assert "Heat <ct>" in build_prompt(0, ["Heat (1995)"], 1, drop_year=True)
    with pytest.raises(ValueError, match="title_year"):
        DeftRecConfig().updated({"prompt.title_year": "strip"})


def test_max_history_replaces_only_the_profiles_history_length():
    from engine.model.config import PROFILES
    from train.pipeline import TrainRequest, deftrec_config
    assert deftrec_config(TrainRequest(profile="quick")).profile == PROFILES["quick"]
    profile = deftrec_config(TrainRequest(profile="quick", max_history=5)).profile
    assert profile.max_history == 5 and profile.steps == PROFILES["quick"].steps and profile.name == "quick"


def test_refine_patience_replaces_only_the_profiles_patience():
    from dataclasses import replace

    from engine.model.config import PROFILES
    from train.pipeline import TrainRequest, deftrec_config
    assert PROFILES["cpu"].refine_patience == 0 and PROFILES["quick"].refine_patience == 4
    profile = deftrec_config(TrainRequest(profile="cpu", refine_patience=4)).profile
    assert profile == replace(PROFILES["cpu"], refine_patience=4)
    assert deftrec_config(TrainRequest(profile="cpu")).profile == PROFILES["cpu"]


def test_refine_epochs_replaces_only_the_profiles_epochs():
    from dataclasses import replace

    from engine.model.config import PROFILES
    from train.pipeline import TrainRequest, deftrec_config
    profile = deftrec_config(TrainRequest(profile="quick", refine_epochs=45)).profile
    assert profile == replace(PROFILES["quick"], refine_epochs=45) and profile.name == "quick"
    both = deftrec_config(TrainRequest(profile="quick", refine_epochs=45, refine_patience=0)).profile
    assert both == replace(PROFILES["quick"], refine_epochs=45, refine_patience=0)
    assert PROFILES["quick"].refine_seconds == 360.0 and PROFILES["cpu"].refine_seconds == 0.0
    unbounded = deftrec_config(TrainRequest(profile="quick", refine_seconds=0.0)).profile
    assert unbounded == replace(PROFILES["quick"], refine_seconds=0.0)  # 0 is a value, not "the profile's"
