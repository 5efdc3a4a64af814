"""``correct`` across ranks (real gloo worlds of two): tensor, expert and data parallelism give the
predictions file of one process byte for byte (ids, order, text, per-record routing) and the same
routing summary; a killed data-parallel run's part files are merged on the next run; a layout the
world or the model cannot take is one line before anything is built."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_neko.testing.distributed import run_distributed
from nemo_neko.testing.runs import train_run, write_micro_run

ROOT = Path(__file__).resolve().parents[2]
BATCH = 2  # chunks of 4 records: the 10 records make 3 chunks (4, 4, 2)
pytestmark = pytest.mark.slow


def _correct(rank, world_size, run_dir, out, tensor, expert):
    import torch

    from nemo_neko.inference.correct import correct_records

    torch.set_num_threads(1)  # two ranks on two cores
    correct_records(
        run_dir, out=out, batch_size=BATCH, tensor_parallel=tensor, expert_parallel=expert
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A micro run trained for 3 steps, 10 held-out records; their one-process predictions."""
    run_dir = tmp_path_factory.mktemp("parallel") / "run"
    config = write_micro_run(
        run_dir,
        ["train.max_steps=3", "generate.max_records_per_dataset=5", "generate.max_new_tokens=12"],
    )
    run_distributed(train_run, 1, str(config))
    single = run_dir / "single.jsonl"
    run_distributed(_correct, 1, str(run_dir), str(single), None, None)
    return run_dir, single


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def untimed(path: Path) -> list[dict]:
    """The lines without ``time`` (each batch's decoding seconds: measured, so never equal)."""
    items = lines(path)
    assert all(item["time"] > 0 for item in items)
    return [{k: v for k, v in item.items() if k != "time"} for item in items]


def routing_of(out: Path) -> dict:
    return json.loads(out.with_name(out.stem + ".routing.json").read_text())


@pytest.mark.parametrize("tensor, expert", [(2, 1), (1, 2), (1, 1)], ids=["tp2", "ep2", "dp2"])
def test_two_ranks_write_the_predictions_of_one_process(trained, tensor, expert, tmp_path):
    run_dir, single = trained
    out = tmp_path / "preds.jsonl"
    run_distributed(_correct, 2, str(run_dir), str(out), tensor, expert)
    assert len(lines(single)) == 10 and all(item.get("routing") for item in lines(single))
    assert untimed(out) == untimed(single)  # same ids, order, text, routing, source
    assert routing_of(out) == routing_of(single)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "preds.jsonl",
        "preds.records.jsonl.gz",
        "preds.routing.json",
    ]


def test_a_killed_data_parallel_run_is_merged_and_finished(trained, tmp_path):
    """Parts as a killed DP2 run leaves them (one with a torn last line) and two lines already
    merged: the next run merges them once, in order, and decodes only the rest."""
    run_dir, single = trained
    expected = lines(single)
    out = tmp_path / "preds.jsonl"
    out.write_text("".join(json.dumps(item) + "\n" for item in expected[:2]))
    parts = [tmp_path / "preds.part-001-of-002.jsonl", tmp_path / "preds.part-002-of-002.jsonl"]
    ordered = [dict(item, order=k) for k, item in enumerate(expected)]
    parts[0].write_text(
        "".join(json.dumps(item) + "\n" for item in ordered[:4])  # two of them merged already
        + json.dumps(ordered[8])[:25]  # killed mid-line
    )
    parts[1].write_text("".join(json.dumps(item) + "\n" for item in ordered[4:6]))
    shutil.copy(single.with_name("single.records.jsonl.gz"), tmp_path / "preds.records.jsonl.gz")
    run_distributed(_correct, 2, str(run_dir), str(out), 1, 1)
    got = lines(out)
    assert got[:6] == expected[:6]  # merged once, in order, as written (their times too)
    # the rest in the one-process order (sorted by length), same text; their routing counts
    # the prompt prefix their batch shares, and these 4 records are now batched otherwise
    assert [(i["id"], i["prediction"]) for i in got] == [
        (i["id"], i["prediction"]) for i in expected
    ]
    assert sum(routing_of(out)["records"].values()) == 10
    assert not list(tmp_path.glob("*.part-*"))


def test_a_layout_the_world_cannot_take_is_one_line(trained, tmp_path):
    from nemo_neko.config import load_run_config
    from nemo_neko.inference.sharding import generation_layout
    from nemo_neko.parallel import LayoutError

    run_dir, _ = trained
    model = load_run_config(run_dir / "config.yaml").model
    for world, sizes, start in [
        (1, {"tensor": 2}, "world size 1 is not divisible by TP x EP = 2 x 1 = 2"),
        (6, {"tensor": 2, "expert": 3}, "model 'tiny' cannot be loaded with EP=3: num_experts=8"),
        (4, {"tensor": 4}, "model 'tiny' cannot be loaded with TP=4: key/value heads=2 is not"),
    ]:
        with pytest.raises(LayoutError, match="^" + re.escape(start)):
            generation_layout(model, world, **sizes)
    assert generation_layout(model, 4, tensor=2, expert=2).sequence_parallel is False
    cases = [  # through the CLI: WORLD_SIZE as torchrun sets it, checked before the rendezvous
        ("3", ["--tensor-parallel", "3"], "error: model 'tiny' cannot be loaded with TP=3: "),
        ("2", ["--pipeline-parallel", "2"], "error: pipeline parallel size PP=2: correct does "),
    ]
    for world, options, start in cases:
        done = subprocess.run(
            [sys.executable, "-m", "nemo_neko.eval", "correct", "--run-dir", str(run_dir)]
            + ["--out", str(tmp_path / "preds.jsonl"), *options],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "WORLD_SIZE": world},
        )
        assert done.returncode == 2 and done.stdout == "", done.stderr[-2000:]
        assert done.stderr.startswith(start) and done.stderr.count("\n") == 1, done.stderr
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_parts_of_another_checkpoint_are_moved_aside_not_merged(tmp_path):
    from nemo_neko.data.records import CorrectionRecord
    from nemo_neko.inference.correct import prepare_output

    out = tmp_path / "preds.jsonl"
    old = {"checkpoint": "step_00000002"}
    part = tmp_path / "preds.part-001-of-002.jsonl"
    part.write_text(json.dumps({"id": "a", "prediction": "x", "record": "d", "source": old}) + "\n")
    fresh = tmp_path / "preds.part-002-of-002.jsonl"
    new = {"checkpoint": "step_00000004"}
    fresh.write_text(
        json.dumps({"id": "b", "prediction": "y", "record": "e", "source": new, "order": 0}) + "\n"
    )
    records = [
        CorrectionRecord("a", "asr", "d", "ref", ["h"]),
        CorrectionRecord("b", "asr", "d", "r", ["h"]),
    ]
    assert prepare_output(out, new, {"a": "d", "b": "e"}, records) == {"b"}
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["b"]
    assert (tmp_path / "preds.stale-part-001-of-002.jsonl").read_text().count('"a"') == 1
    assert not part.exists() and not fresh.exists()
