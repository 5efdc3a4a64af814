"""``correct`` as a user reruns it: predictions of another checkpoint or other settings are never
resumed or mixed, repeated ids are refused before decoding, and a damaged or hand-edited
checkpoint folder is one line naming it and what to do."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from nemo_neko.data.records import read_records, write_records
from nemo_neko.testing.distributed import run_distributed
from nemo_neko.testing.runs import train_run, write_micro_run

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def set_config(folder: Path, **dotted):
    """Edit ``folder/config.yaml`` as a user would (``train__max_steps=4``: train.max_steps)."""
    cfg = OmegaConf.load(folder / "config.yaml")
    for key, value in dotted.items():
        OmegaConf.update(cfg, key.replace("__", "."), value)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(cfg))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One micro run trained for 2 steps (4 held-out records to correct); copied per test."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    config = write_micro_run(run_dir, ["train.max_steps=2", "generate.max_records_per_dataset=2"])
    run_distributed(train_run, 1, str(config))
    return run_dir


@pytest.fixture
def run_dir(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    set_config(copy, run_dir=str(copy))
    return copy


def python_m(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def correct(run_dir, *extra):
    return python_m("nemo_neko.eval", "correct", "--run-dir", run_dir, *extra)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_more_training_or_other_settings_start_new_predictions(run_dir):
    predictions = run_dir / "predictions.jsonl"
    first = correct(run_dir)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "correcting 4 records (0 already done) with step_00000002" in first.stdout
    old = lines(predictions)
    assert {item["source"]["checkpoint"] for item in old} == {"step_00000002"}
    assert {item["source"]["step"] for item in old} == {2}

    again = correct(run_dir)  # same checkpoint, same settings: resumes, nothing to do
    assert again.returncode == 0 and "correcting 0 records (4 already done)" in again.stdout
    assert lines(predictions) == old

    set_config(run_dir, train__max_steps=4)  # train more, then correct again
    run_distributed(train_run, 1, str(run_dir / "config.yaml"))
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step_00000004"
    newer = correct(run_dir)
    assert newer.returncode == 0, newer.stderr[-3000:]
    fingerprint = old[0]["source"]["fingerprint"]
    aside = run_dir / f"predictions.step_00000002-{fingerprint[:8]}.jsonl"
    assert f"{predictions}: its 4 predictions were made by step_00000002" in newer.stdout
    assert f"moved to {aside}; correcting afresh" in newer.stdout
    assert "correcting 4 records (0 already done) with step_00000004" in newer.stdout
    assert lines(aside) == old  # kept, with the records it answered
    assert (run_dir / f"predictions.step_00000002-{fingerprint[:8]}.records.jsonl.gz").exists()
    new = lines(predictions)
    assert {item["source"]["checkpoint"] for item in new} == {"step_00000004"}
    assert new[0]["source"]["fingerprint"] != fingerprint
    report = python_m(
        "nemo_neko.eval",
        "report",
        run_dir / "predictions.records.jsonl.gz",
        "--predictions",
        predictions,
    )
    assert report.returncode == 0, report.stderr
    assert report.stdout.startswith("predictions of step_00000004 (fingerprint")

    set_config(run_dir, generate__max_new_tokens=8)  # other settings: a new file again
    settings = correct(run_dir)
    assert settings.returncode == 0, settings.stderr[-3000:]
    assert "max_new_tokens 24" in settings.stdout and "correcting 4 records (0 already done)" in (
        settings.stdout
    )
    assert {item["source"]["generate"]["max_new_tokens"] for item in lines(predictions)} == {8}
    mixed = run_dir / "mixed.jsonl"  # a hand-made mix of two models cannot be scored
    mixed.write_text(predictions.read_text() + aside.read_text())
    mix_report = python_m(
        "nemo_neko.eval", "report", run_dir / "predictions.records.jsonl.gz", "--predictions", mixed
    )
    assert mix_report.returncode == 2 and len(mix_report.stderr.splitlines()) == 1
    assert mix_report.stderr.startswith(f"error: {mixed}:5: field 'source': made by step_00000002")


def test_repeated_ids_are_refused_before_decoding(run_dir, tmp_path):
    held_out = OmegaConf.load(run_dir / "config.yaml").data.test[0].paths
    records = read_records(list(held_out))[:3]
    assert len(records) == 3
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_records(a, records)
    write_records(b, records[1:])
    out = tmp_path / "preds.jsonl"
    done = correct(run_dir, "--records", a, b, "--out", out)
    assert done.returncode == 2 and done.stdout == "", done.stderr[-2000:]
    ids = ", ".join(repr(r.id) for r in sorted(records[1:], key=lambda r: r.id))
    assert done.stderr == (
        f"error: {a}, {b}: 2 record id(s) appear more than once ({ids}); predictions are joined "
        f"to records by id, so ids must be unique across the files (import them with distinct "
        f"datasets or id prefixes)\n"
    )
    assert not out.exists() and not (tmp_path / "preds.records.jsonl.gz").exists()


def damage(run_dir: Path, how: str) -> str:
    """Damage the run's checkpoints as a user might; returns the expected message's start."""
    checkpoints = run_dir / "checkpoints"
    pointer, step = checkpoints / "latest", checkpoints / "step_00000002"
    if how == "missing target":
        pointer.write_text("step_00000009\n")
        return f"{pointer} names step_00000009, which does not exist; point {pointer} at a "
    if how == "empty latest":
        pointer.write_text("")
        return f"{pointer} is empty; point {pointer} at a complete checkpoint"
    shard = sorted(step.glob("*.distcp"))[-1]  # how many a rank writes depends on Megatron
    if how == "missing shard":
        shard.unlink()
        return f"{step}: shard {shard.name} is missing; no other complete checkpoint there: remove"
    if how == "cut shard":
        shard.write_bytes(shard.read_bytes()[:100])
        return f"{step}: shard {shard.name} is cut short (100 of "
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["missing target", "empty latest", "missing shard", "cut shard"])
def test_a_damaged_latest_is_one_line_naming_the_checkpoint(run_dir, how):
    expected = damage(run_dir, how)
    done = correct(run_dir)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"error: {expected}") and len(done.stderr.splitlines()) == 1
    assert not (run_dir / "predictions.jsonl").exists()


def test_the_launcher_and_the_trainer_refuse_a_damaged_latest_before_starting(run_dir):
    expected = damage(run_dir, "missing target")
    launch = subprocess.run(
        [sys.executable, "launch/run.py", "model=tiny", f"run_dir={run_dir}", "dry_run=true"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert launch.returncode == 2 and launch.stdout == ""
    assert launch.stderr.startswith(f"error: {expected}") and len(launch.stderr.splitlines()) == 1
    trainer = python_m("nemo_neko.train", run_dir / "config.yaml")
    assert trainer.returncode == 2 and trainer.stderr.splitlines()[-1].startswith(
        f"error: {expected}"
    )
    assert "Traceback" not in trainer.stderr
