"""Fine-tuning as the embedded default does it, in miniature: a mixed dense/MoE stack (only the
top layer has experts), the embeddings and the lower layer frozen, task forcing on: frozen
parameters stay bit for bit, trainable ones move, every labelled token reaches its task's
expert in the MoE layer, and a freeze pattern that matches nothing is refused."""

import json
from pathlib import Path

import pytest
import torch

from nemo_neko.testing.distributed import run_distributed
from nemo_neko.testing.runs import write_micro_run

MIXED = [
    "model.moe_layers=[1]",  # of 2 layers: layer 0 dense, layer 1 MoE
    "train.freeze_embeddings=true",
    "train.freeze_layers_below=1",
    "train.max_steps=4",
    "train.lr=3e-3",
]


def _train_and_compare(rank, world_size, config_path, out):
    from nemo_neko.config import load_run_config
    from nemo_neko.moe.layer import NeKoMoELayer
    from nemo_neko.train.freeze import global_parameter_names
    from nemo_neko.train.loop import Trainer

    run = load_run_config(config_path)
    trainer = Trainer(run, Path(config_path).parent)
    (chunk,) = [c.module for c in trainer.chunks]
    before = {n: p.detach().clone() for n, p in global_parameter_names(chunk).items()}
    frozen = sorted(n for n, p in global_parameter_names(chunk).items() if not p.requires_grad)
    moe = [m for m in chunk.modules() if isinstance(m, NeKoMoELayer)]
    trainer.fit()
    after = global_parameter_names(chunk)
    figures = {
        "frozen": frozen,
        "unchanged": sorted(n for n in before if torch.equal(before[n], after[n].detach())),
        "moe_layers": [m.layer_number for m in moe],
        "parameters": trainer.parameters,
    }
    Path(out).write_text(json.dumps(figures))


def metrics(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines if json.loads(x)["kind"] == "train"]


def test_forcing_trains_a_mixed_stack_with_frozen_parameters(tmp_path):
    run_dir = tmp_path / "run"
    config = write_micro_run(run_dir, MIXED)
    out = tmp_path / "figures.json"
    run_distributed(_train_and_compare, 1, str(config), str(out))
    figures = json.loads(out.read_text())
    assert figures["moe_layers"] == [2], "only the second layer (1-based number 2) has experts"
    assert "embedding.word_embeddings.weight" in figures["frozen"]
    assert any(n.startswith("decoder.layers.0.") for n in figures["frozen"])
    assert not any(n.startswith("decoder.layers.1.") for n in figures["frozen"])
    assert figures["unchanged"] == figures["frozen"], "frozen = exactly what did not move"
    assert figures["parameters"]["frozen"] > 0 and figures["parameters"]["trainable"] > 0
    steps = metrics(run_dir)
    assert len(steps) == 4
    names = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    # one of the two experts of every labelled token is forced; padding routes by the gate alone
    assert 0.3 < names["routing/forced_share"] <= 0.5
    tasks = ("atis", "td3")
    for step in steps:
        for task in tasks:
            shares = [step[f"routing/{task}/expert{e}"] for e in range(8)]
            assert max(shares) >= sum(shares) / 2, (task, shares)  # its expert: every token


def test_a_freeze_pattern_that_matches_nothing_is_refused(tmp_path):
    import subprocess
    import sys

    config = write_micro_run(tmp_path / "run", ["train.freeze=[decoder.layer.0]"])
    done = subprocess.run(
        [sys.executable, "-m", "nemo_neko.train", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert "['decoder.layer.0'] freeze no parameter" in done.stderr


@pytest.mark.parametrize(
    "stack",
    [
        ["model.num_experts=0"],  # dense
        ["model.num_experts=0", "train.use_distributed_optimizer=true"],
        [],  # every layer an MoE: experts stacked per layer too
    ],
    ids=["dense", "dense-distributed-optimizer", "all-moe"],
)
def test_a_homogeneous_stack_with_frozen_layers_saves_and_resumes(tmp_path, stack):
    """Homogeneous layers are stored stacked (one key, ``[layers, ...]``): the optimizer's state
    of the trainable layers alone covers part of it, and still saves and loads (resumes)."""
    from nemo_neko.testing.runs import train_run

    run_dir = tmp_path / "run"
    frozen = [*stack, "train.freeze_layers_below=1", "train.max_steps=4", "train.save_interval=2"]
    config = write_micro_run(run_dir, frozen)
    run_distributed(train_run, 1, str(config))
    checkpoints = run_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("step_*")) == ["step_00000002", "step_00000004"]
    (checkpoints / "latest").write_text("step_00000002\n")  # resume from the middle
    first = metrics(run_dir)
    run_distributed(train_run, 1, str(config))
    again = metrics(run_dir)
    assert [m["step"] for m in again] == [1, 2, 3, 4]
    for a, b in zip(first[2:], again[2:]):  # the same steps again, from the loaded state
        assert abs(a["loss"] - b["loss"]) < 1e-5
