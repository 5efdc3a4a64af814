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
        run.model.name == "smollm2-8x"
        and run.base.source == "smollm2-135m-instruct"
        and run.data.prompt_format == "chat"
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
    assert run.stages == ["prepare", "train", "correct", "report", "leaderboard"]
    assert run.active_stages() == ["prepare", "train", "correct", "report"]  # no leaderboard.sets
    # the pretrained model is upcycled in its top layers only, and only they train
    moe = [i for i in range(run.model.num_layers) if run.model.is_moe_layer(i)]
    assert moe == list(range(run.train.freeze_layers_below, run.model.num_layers))
    assert run.train.freeze_embeddings
    # tiny stays, from scratch: no base model, so no prepare stage
    tiny = to_run_config(compose_config(["model=tiny"]))
    assert tiny.model.name == "tiny" and tiny.base.source is None
    assert tiny.active_stages() == ["train", "correct", "report"]
    # the leaderboard stage runs once it has test sets
    scored = to_run_config(
        compose_config(["model=tiny", "leaderboard.sets=['ls_test=x.jsonl.gz']"])
    )
    assert scored.active_stages() == ["train", "correct", "report", "leaderboard"]


def test_unknown_keys_and_wrong_types_are_rejected():
    with pytest.raises(ConfigCompositionException, match="hidden_sise"):
        compose_config(["model.hidden_sise=12"])
    with pytest.raises((ValidationError, ConfigCompositionException), match="num_layers"):
        to_run_config(compose_config(["model.num_layers=many"]))
    with pytest.raises(ConfigCompositionException, match=r"stages=\[train,deploy\]") as error:
        to_run_config(compose_config(["stages=[train,deploy]"]))
    assert (
        "Invalid value 'deploy', expected one of [prepare, train, correct, report, leaderboard]"
        in str(error.value.__cause__)
    )


def test_saved_config_reloads_identically(tmp_path):
    cfg = compose_config(["train.epochs=1", "name=x"])
    save_run_config(cfg, tmp_path / "config.yaml")
    reloaded = load_run_config(tmp_path / "config.yaml")
    assert reloaded == to_run_config(cfg)
    assert "${" not in (tmp_path / "config.yaml").read_text(), "interpolations must be resolved"


def test_dry_run_prints_layout_and_parameter_counts(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "launch/run.py",
            "model=tiny",
            "dry_run=true",
            f"run_dir={tmp_path / 'run'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "model tiny:" in out.stdout and "parameters total" in out.stdout
    assert "layout: TP=1 PP=1" in out.stdout
    assert not (tmp_path / "run").exists(), "a dry run writes nothing"


def test_dry_run_of_the_default_names_the_base_models_tokenizer():
    """The default fine-tunes SmolLM2: its tokenizer comes with the weights, not trained on data."""
    from nemo_neko.launch import describe

    run = to_run_config(compose_config([]))
    text = describe(run)
    assert "tokenizer smollm2-135m-instruct's own" in text, text
    assert "but no tokenizer" not in text, text


def _leaves(node, prefix=()):
    """``(key path, value)`` of every scalar or list in a YAML mapping."""
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def _yaml_settings():
    """Every (file, full key path, value) a shipped YAML sets (``defaults`` and ``hydra`` aside)."""
    import yaml

    for path in sorted(CONF_DIR.rglob("*.yaml")):
        text = path.read_text()
        group = path.relative_to(CONF_DIR).parts[0] if path.parent != CONF_DIR else None
        package = () if group is None or "@package _global_" in text else (group,)
        data = yaml.safe_load(text) or {}
        for keys, value in _leaves(
            {k: v for k, v in data.items() if k not in ("defaults", "hydra")}
        ):
            yield path.relative_to(CONF_DIR), (*package, *keys), value


def test_yaml_sets_only_what_differs_from_the_schema():
    from omegaconf import OmegaConf

    from nemo_neko.config import RunConfig

    schema = OmegaConf.to_container(OmegaConf.structured(RunConfig), enum_to_str=True)
    settings = list(_yaml_settings())
    assert len(settings) > 50

    def default(keys):
        node = schema
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                return KeyError
            node = node[key]
        return node

    repeated = []
    for file, keys, value in settings:
        if value != default(keys):
            continue
        # setting a default back is an override only when another file sets it otherwise
        if not any(k == keys and v != value for f, k, v in settings if f != file):
            repeated.append(f"{file}: {'.'.join(keys)} = {value!r} is the schema's default")
    assert not repeated, "\n".join(repeated)
