"""Mistakes a user makes on the launcher's command line: one line, exit status 2, before
anything is written or started (also with ``dry_run=true``); tracebacks stay for bugs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_neko.config import ClusterConfig
from nemo_neko.launch.errors import report_user_errors
from nemo_neko.launch.preflight import host_path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "nemo_neko" / "assets" / "hyporadise"


def launch(tmp_path, *overrides):
    """``python launch/run.py run_dir=<tmp>/run OVERRIDES``: (status, stdout, stderr)."""
    done = subprocess.run(
        [sys.executable, "launch/run.py", f"run_dir={tmp_path / 'run'}", *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.returncode, done.stdout, done.stderr


def one_line(tmp_path, *overrides) -> str:
    """The launch's only output line; checks status 2 and that nothing was written."""
    status, out, err = launch(tmp_path, *overrides)
    assert status == 2, (out, err)
    assert out == "" and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run").exists(), "nothing may be written before the checks pass"
    return err.rstrip("\n")


def atis(split="train"):
    return SAMPLE / split / "atis.jsonl.gz"


@pytest.mark.parametrize("dry_run", ["dry_run=true", "dry_run=false"])
def test_missing_data_file(tmp_path, dry_run):
    data = f"data.train=[{{name: atis, paths: ['{atis()}', '{tmp_path}/cv.jsonl']}}]"
    assert one_line(tmp_path, dry_run, data) == (
        f"error: {tmp_path}/cv.jsonl: no such record file (data.train dataset 'atis')"
    )


def test_a_published_file_that_was_never_imported(tmp_path):
    raw = tmp_path / "test_cv.json"
    raw.write_text(json.dumps([{"input": ["a"], "output": "a"}]))
    line = one_line(tmp_path, "dry_run=true", f"data.test=[{{name: cv, paths: ['{raw}']}}]")
    assert line.startswith(f"error: {raw}:1: expected a JSON object, got list (data.test dataset")
    assert line.endswith("import it first: python -m nemo_neko.data import")


def test_missing_tokenizer_and_init_checkpoint(tmp_path):
    assert one_line(tmp_path, "dry_run=true", f"data.tokenizer.path={tmp_path}/tok") == (
        f"error: {tmp_path}/tok: no such tokenizer folder (data.tokenizer.path)"
    )
    (tmp_path / "tok").mkdir()
    assert one_line(tmp_path, "dry_run=true", f"data.tokenizer.path={tmp_path}/tok") == (
        f"error: {tmp_path}/tok: no tokenizer.json in this folder (data.tokenizer.path must be a "
        f"Hugging Face tokenizer folder)"
    )
    assert one_line(tmp_path, "dry_run=true", f"train.init_from={tmp_path}/mixtral") == (
        f"error: {tmp_path}/mixtral: no such checkpoint folder (train.init_from)"
    )
    (tmp_path / "mixtral").mkdir()
    assert one_line(tmp_path, "dry_run=true", f"train.init_from={tmp_path}/mixtral").startswith(
        f"error: {tmp_path}/mixtral: not a distributed checkpoint nor a checkpoint folder"
    )


@pytest.mark.parametrize("form", ["+train.save_intervall=5", "train.save_intervall=5"])
def test_misspelt_key_in_either_form(tmp_path, form):
    for dry_run in ("dry_run=true", "dry_run=false"):
        assert one_line(tmp_path, dry_run, form) == (
            f"error: override '{form}': train.save_intervall: no such key in TrainConfig "
            f"(did you mean 'save_interval'?)"
        )


def test_layout_and_value_errors_are_one_line(tmp_path):
    assert one_line(tmp_path, "dry_run=true", "model.parallel.tensor=3").startswith(
        "error: model smollm2-8x's layout does not fit cluster local (1 node(s) x 1 processes = 1): "
        "world size 1 is not divisible by TP x PP x CP = 3 x 1 x 1 = 3"
    )
    assert one_line(tmp_path, "train.warmup_fraction=2") == (
        "error: override 'train.warmup_fraction=2': train.warmup_fraction must be in [0, 1), "
        "got 2.0"
    )
    assert one_line(tmp_path, "model=nosuch").startswith(
        "error: In 'config': Could not find 'model/nosuch' Available options in 'model':"
    )


def test_stages_that_need_earlier_stages(tmp_path):
    assert one_line(tmp_path, "dry_run=true", "stages=[correct,report]") == (
        f"error: {tmp_path}/run/checkpoints: no checkpoint to correct with "
        f"(stages=[correct,report] without train; train the run first)"
    )
    assert one_line(tmp_path, "dry_run=true", "stages=[report]") == (
        f"error: {tmp_path}/run/predictions.jsonl: nothing to report (stages=[report] without "
        f"correct; run the correct stage first)"
    )


def test_the_leaderboard_stages_inputs_are_checked_before_training_starts(tmp_path):
    missing = tmp_path / "ls_cuts_test.jsonl.gz"
    assert one_line(tmp_path, "model=tiny", f"leaderboard.sets=['ls_test={missing}']") == (
        f"error: leaderboard.sets: ls_test={missing}: no such cut manifest '{missing}'"
    )
    missing.write_bytes(b"")
    sets = f"leaderboard.sets=[{tmp_path}]"
    assert one_line(tmp_path, "model=tiny", sets, "leaderboard.first_pass=whisper") == (
        "error: leaderboard.first_pass: 'whisper' is neither a backend (canary, pocketsphinx) "
        "nor a folder or file of result manifests"
    )
    assert one_line(tmp_path, "model=tiny", sets, "leaderboard.protocol=oal2027") == (
        "error: leaderboard: unknown protocol 'oal2027' (known: esb2024, oal2026)"
    )
    assert one_line(tmp_path, "model=tiny", sets, "+leaderboard.nbest_options.beam=3") == (
        "error: leaderboard: backend 'canary': unknown option(s) beam (known: beam_size, device, "
        "dtype, method, model, n, pnc, source_lang, target_lang, temperature, threads)"
    )
    assert one_line(tmp_path, "model=tiny", sets, "leaderboard.n=0") == (
        "error: leaderboard.n (0) and leaderboard.batch_size (16) must be >= 1"
    )
    assert one_line(tmp_path, "model=tiny", sets, "stages=[leaderboard]") == (
        f"error: {tmp_path}/run/checkpoints: no checkpoint for the leaderboard stage "
        "(stages=[leaderboard] without train; train the run first)"
    )
    status, out, err = launch(tmp_path, "model=tiny", sets, "dry_run=true")
    assert status == 0, err
    assert f"[leaderboard] {sys.executable} -m nemo_neko.eval leaderboard --run-dir" in out


def test_the_correct_stage_runs_on_generate_nproc_ranks(tmp_path):
    status, out, err = launch(tmp_path, "model=tiny", "generate.nproc=2", "dry_run=true")
    assert status == 0, err
    torchrun = f"{sys.executable} -m torch.distributed.run --standalone --nproc_per_node 2"
    assert f"[correct] {torchrun} -m nemo_neko.eval correct --run-dir" in out
    bad = ["model=tiny", "generate.nproc=3", "generate.expert_parallel=2", "dry_run=true"]
    assert one_line(tmp_path, *bad) == (
        "error: override 'generate.nproc=3': generate.nproc=3 must be a positive multiple of "
        "tensor_parallel x "
        "expert_parallel = 2"
    )


def test_stages_without_train_do_not_need_the_training_layouts_world(tmp_path):
    """8x7b trains on 64 ranks; correcting its checkpoint on one node is not refused for that."""
    one_node = ["model=8x7b", "cluster.nnodes=1", "cluster.nproc_per_node=8", "dry_run=true"]
    assert one_line(tmp_path, *one_node, "stages=[correct]") == (
        f"error: {tmp_path}/run/checkpoints: no checkpoint to correct with "
        f"(stages=[correct] without train; train the run first)"
    )
    assert "layout does not fit cluster" in one_line(tmp_path, *one_node)


def test_a_good_dry_run_still_passes_and_writes_nothing(tmp_path):
    status, out, err = launch(tmp_path, "dry_run=true")
    assert status == 0, err
    assert "layout: TP=1 PP=1" in out and not (tmp_path / "run").exists()


def test_container_mounts_are_undone_to_check_paths_on_this_machine(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jsonl.gz").write_bytes(atis("test").read_bytes())
    cluster = ClusterConfig(
        name="s", kind="slurm", container_image="img", container_mounts=[f"{tmp_path}/data:/d"]
    )
    assert host_path("/d/a.jsonl.gz", cluster) == tmp_path / "data" / "a.jsonl.gz"
    assert host_path("/dx/a.jsonl", cluster) == Path("/dx/a.jsonl")
    mounted = [
        "dry_run=true",
        "cluster=slurm",
        "cluster.container_image=img",
        f"cluster.container_mounts=['{tmp_path}/data:/d']",
        "data.train=[{name: atis, paths: [/d/a.jsonl.gz]}]",
        "data.test=[{name: atis, paths: [/d/a.jsonl.gz]}]",
    ]
    status, out, err = launch(tmp_path, *mounted)
    assert status == 0, err
    assert one_line(tmp_path, *mounted[:-2], "data.train=[{name: atis, paths: [/d/b.jsonl]}]") == (
        "error: /d/b.jsonl: no such record file (data.train dataset 'atis')"
    )


def test_bugs_keep_their_traceback_user_errors_do_not(capsys):
    def bug():
        raise KeyError("a real bug")

    with pytest.raises(KeyError, match="a real bug"):
        report_user_errors(bug, overrides=[])

    def user_error():
        raise FileNotFoundError("x.jsonl: no such record file")

    assert report_user_errors(user_error, overrides=[]) == 2
    assert capsys.readouterr().err == "error: x.jsonl: no such record file\n"


def test_train_entry_names_a_hand_edited_config(tmp_path):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    from nemo_neko.config import CONF_DIR, register_configs, save_run_config

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="config", overrides=[f"run_dir={tmp_path}"])
    path = tmp_path / "config.yaml"
    save_run_config(cfg, path)
    edited = OmegaConf.load(path)
    with open_dict(edited):
        edited.train.save_intervall = 5
    path.write_text(OmegaConf.to_yaml(edited))
    done = subprocess.run(
        [sys.executable, "-m", "nemo_neko.train", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and done.stderr == (
        f"error: {path}: train.save_intervall: no such key in TrainConfig "
        f"(did you mean 'save_interval'?)\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]
