"""conf/ composes over the typed schema: defaults, validation of keys and types, dry run."""

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from nemo_neko.config import load_run_config, register_configs, save_run_config, to_run_config
from nemo_neko.testing.runs import CONF_DIR

ROOT = Path(__file__).resolve().parents[2]


def compose_config(overrides=()):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name="config", overrides=list(overrides))


def test_defaults_compose_into_the_embedded_default():
    run = to_run_config(compose_config())
    assert (
        run.model.name == "tiny"
        and run.data.name == "hyporadise_sample"
        and run.cluster.kind == "local"
    )
    assert [spec.name for spec in run.data.train] == [
        "atis",
        "cv",
        "lrs2",
        "ls_clean",
        "ls_other",
        "swbd",
        "td3",
    ]
    assert all(Path(p).exists() for spec in run.data.train + run.data.test for p in spec.paths)
    assert run.model.num_experts == 8 and run.model.moe_router_topk == 2
    assert (
        run.train.weight_decay == 0.01
        and run.train.warmup_fraction == 0.1
        and run.train.clip_grad == 1.0
    )
    assert run.stages == ["train", "correct", "report"]


def test_unknown_keys_and_wrong_types_are_rejected():
    with pytest.raises(ConfigCompositionException, match="hidden_sise"):
        compose_config(["model.hidden_sise=12"])
    with pytest.raises((ValidationError, ConfigCompositionException), match="num_layers"):
        to_run_config(compose_config(["model.num_layers=many"]))
    with pytest.raises(ValueError, match=r"stages \['deploy'\] unknown"):
        to_run_config(compose_config(["stages=[train,deploy]"]))


def test_saved_config_reloads_identically(tmp_path):
    cfg = compose_config(["train.epochs=1", "name=x"])
    save_run_config(cfg, tmp_path / "config.yaml")
    reloaded = load_run_config(tmp_path / "config.yaml")
    assert reloaded == to_run_config(cfg)
    assert "${" not in (tmp_path / "config.yaml").read_text(), "interpolations must be resolved"


def test_dry_run_prints_layout_and_parameter_counts(tmp_path):
    out = subprocess.run(
        [sys.executable, "launch/run.py", "dry_run=true", f"run_dir={tmp_path / 'run'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "model tiny:" in out.stdout and "parameters total" in out.stdout
    assert "layout: TP=1 PP=1" in out.stdout
    assert not (tmp_path / "run").exists(), "a dry run writes nothing"
