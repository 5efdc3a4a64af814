"""BTX's merge, read back tensor by tensor: experts are the branches' FFNs, the rest their mean."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from nemo_neko.config import load_run_config, save_run_config
from nemo_neko.convert.megatron_io import (
    ChunkIndex,
    meta_model,
    read_param,
    single_process_world,
    write_checkpoint,
)
from nemo_neko.experiment.btx import expert_branches, merge_branches
from nemo_neko.testing.distributed import run_distributed
from nemo_neko.testing.runs import compose_run

VOCAB = 512


def _dense_branch(tmp_path, g):
    """A dense run directory whose only checkpoint holds seeded random tensors."""
    branch = tmp_path / f"branch{g}"
    cfg = compose_run(
        branch, ["model.num_experts=0", "model.moe_ffn_hidden_size=128"], data_root=tmp_path / "d"
    )
    save_run_config(cfg, branch / "config.yaml")
    model = load_run_config(branch / "config.yaml").model
    step = branch / "checkpoints" / "step_00000003"
    step.mkdir(parents=True)
    with single_process_world() as parallel:
        index = ChunkIndex(meta_model(model, VOCAB, parallel))

        def produce(param, start, stop):
            gen = torch.Generator().manual_seed(100 * g + sorted(index.shapes).index(param))
            full = torch.randn(index.shapes[param], generator=gen)
            return full[start:stop].to(index.dtype)

        write_checkpoint(index, step, produce)
    torch.save({"step": 3}, step / "trainer_state.pt")
    (branch / "checkpoints" / "latest").write_text(step.name + "\n")
    return branch, model, index


def _merge_and_check(rank, world_size, root):
    tmp_path = Path(root)
    branches = [_dense_branch(tmp_path, g) for g in range(2)]
    dense = branches[0][1]
    moe = dataclasses.replace(dense, num_experts=4, moe_router_topk=2, moe_layers=[1])
    out = merge_branches(moe, [b[0] for b in branches], tmp_path / "merged", VOCAB,
                         router_std=0.5, seed=7, log=lambda _: None)  # fmt: skip
    record = json.loads((out / "merge.json").read_text())
    assert record["expert_branch"] == expert_branches(4, 2) == [0, 1, 0, 1]
    with single_process_world(num_experts=4, num_layers=moe.num_layers) as parallel:
        moe_index = ChunkIndex(meta_model(moe, VOCAB, parallel))
        dense_index = ChunkIndex(meta_model(dense, VOCAB, parallel))

        def merged(name):
            return read_param(moe_index, out, name)

        def branch(g, name):
            return read_param(dense_index, branches[g][0] / "checkpoints" / "step_00000003", name)

        for e in range(4):
            for leaf in ("linear_fc1.weight", "linear_fc2.weight"):
                expert = merged(f"decoder.layers.1.mlp.experts.local_experts.{e}.{leaf}")
                assert torch.equal(expert, branch(e % 2, f"decoder.layers.1.mlp.{leaf}"))
        dense_fc1 = "decoder.layers.0.mlp.linear_fc1.weight"  # layer 0 stays dense: the mean
        for name in (dense_fc1, "embedding.word_embeddings.weight",
                     "decoder.layers.1.self_attention.linear_qkv.weight"):  # fmt: skip
            mean = (branch(0, name).double() + branch(1, name).double()) / 2
            torch.testing.assert_close(merged(name).double(), mean)
        router = merged("decoder.layers.1.mlp.router.weight")
        assert router.shape == (4, dense.hidden_size)
        assert 0.3 < router.std().item() < 0.7  # normal(0, 0.5), seeded
    again = merge_branches(moe, [b[0] for b in branches], out, VOCAB, log=lambda _: None)
    assert again == out and json.loads((out / "merge.json").read_text()) == record  # kept


def test_experts_are_the_branches_ffns_and_the_rest_is_their_mean(tmp_path):
    run_distributed(_merge_and_check, 1, str(tmp_path))  # Megatron's state in a process of its own


def test_a_branch_with_experts_is_refused(tmp_path):
    branch = tmp_path / "moe_branch"
    save_run_config(compose_run(branch, [], data_root=tmp_path / "d"), branch / "config.yaml")
    model = load_run_config(branch / "config.yaml").model
    with pytest.raises(ValueError, match="is not a dense model"):
        merge_branches(model, [branch], tmp_path / "merged", VOCAB)
