"""Generation: the KV-cached decoder equals full recomputation; ``correct`` resumes after a kill."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nemo_neko.inference.correct import done_ids, select_records
from nemo_neko.testing.distributed import run_distributed
from nemo_neko.testing.runs import write_micro_run

ROOT = Path(__file__).resolve().parents[2]


def _cached_equals_recomputed(rank, world_size):
    from nemo_neko.inference.generate import KVCacheDecoder, RecomputeDecoder
    from nemo_neko.testing.models import tiny_decoding_gpt

    model = tiny_decoding_gpt()
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 64, (n,), generator=gen).tolist() for n in (5, 9, 12, 12, 20, 3)]
    limits = [10, 4, 12, 0, 8, 16]
    cached = KVCacheDecoder(model, eos_id=2, pad_id=0).generate(prompts, limits, batch_size=4)
    recomputed = RecomputeDecoder(model, eos_id=2, pad_id=0).generate(prompts, limits, batch_size=3)
    assert [c.tokens for c in cached] == [r.tokens for r in recomputed]
    assert [len(c.tokens) for c in cached][3] == 0
    assert all(len(c.tokens) <= n for c, n in zip(cached, limits))
    assert any(len(c.tokens) == n for c, n in zip(cached, limits) if n)


def test_kv_cache_decoding_equals_recomputation():
    run_distributed(_cached_equals_recomputed, 1)


def _train_two_steps(rank, world_size, config_path):
    from nemo_neko.config import load_run_config
    from nemo_neko.train.loop import train

    train(load_run_config(config_path), Path(config_path).parent)


def _correct(run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nemo_neko.eval", "correct", "--run-dir", str(run_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def read_predictions(path: Path) -> dict[str, str]:
    items = [json.loads(line) for line in path.read_text().splitlines()]
    ids = [item["id"] for item in items]
    assert len(ids) == len(set(ids)), "duplicated predictions"
    return {item["id"]: item["prediction"] for item in items}


@pytest.mark.slow
def test_correct_writes_predictions_and_a_rerun_finishes_a_killed_one(tmp_path):
    run_dir = tmp_path / "run"
    config = write_micro_run(run_dir, ["train.max_steps=2", "generate.max_records_per_dataset=6"])
    run_distributed(_train_two_steps, 1, str(config))
    first = _correct(run_dir)
    assert first.returncode == 0, first.stderr[-3000:]
    out = run_dir / "predictions.jsonl"
    complete = read_predictions(out)
    assert len(complete) == 12  # 6 records of each of the 2 held-out datasets
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:5]) + lines[5][: len(lines[5]) // 2])  # killed mid-write
    assert done_ids(out) == {json.loads(line)["id"] for line in lines[:5]}
    second = _correct(run_dir)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "correcting 7 records (5 already done) with step_00000002" in second.stdout
    assert read_predictions(out) == complete
    # the prompts' routing, both parts of the run together: every prompt token of every layer
    # went to top_k experts, counted under its own dataset
    routing = json.loads((run_dir / "predictions.routing.json").read_text())
    assert routing["datasets"] == ["atis", "td3"] and routing["records"] == {"atis": 6, "td3": 6}
    top_k = 2
    for table in routing["counts"].values():
        assert len(table) == 2 and all(len(row) == routing["experts"] for row in table)
        assert all(sum(row) > 0 and sum(row) % top_k == 0 for row in table)
    assert len({sum(map(sum, table)) for table in routing["counts"].values()}) == 1
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "nemo_neko.eval",
            "report",
            str(run_dir / "predictions.records.jsonl.gz"),
            "--predictions",
            str(out),
            "--routing",
            str(run_dir / "predictions.routing.json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr
    assert "atis" in report.stdout and "td3" in report.stdout
    assert "routing at inference" in report.stdout and "6 records per held-out set" in report.stdout


def test_select_records_takes_the_first_n_of_each_dataset():
    from nemo_neko.data.records import CorrectionRecord

    records = [
        CorrectionRecord(f"{d}{i}", "asr", d, "x", hypotheses=["x"]) for d in "ab" for i in range(4)
    ]
    assert [r.id for r in select_records(records, 2)] == ["a0", "a1", "b0", "b1"]
    assert select_records(records, None) == records and select_records(records, 0) == records
