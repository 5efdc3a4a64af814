"""Activation recomputation with task-guided forcing: the recomputed forward routes as the first.

Megatron re-runs a checkpointed layer in the backward pass, outside the micro-batch's task scope
(and, with pipelining, after other micro-batches' forwards); :class:`~nemo_neko.moe.layer.
NeKoMoELayer` replays the first pass's task ids. Each setting trains the micro run from the
shared initial checkpoint and must give the run without recomputation's gradients (every
parameter, first step), losses, grad norms and routing counts; ``replayed`` shows the routers
really ran again.
"""

import pytest
import torch

from nemo_neko.testing.layouts import max_differences, train_layout, write_layout_runs

SETTINGS = {
    "full_uniform_1": [
        "model.recompute_granularity=full",
        "model.recompute_method=uniform",
        "model.recompute_num_layers=1",
    ],
    "full_uniform_2": [
        "model.recompute_granularity=full",
        "model.recompute_method=uniform",
        "model.recompute_num_layers=2",
    ],
    "full_block_3": [
        "model.recompute_granularity=full",
        "model.recompute_method=block",
        "model.recompute_num_layers=3",
    ],
    "selective_moe": ["model.recompute_granularity=selective", "model.recompute_modules=[moe]"],
    "selective_attention_moe": [
        "model.recompute_granularity=selective",
        "model.recompute_modules=[core_attn,moe]",
    ],
}
REPLAYS_PER_STEP = {  # MoE forwards re-run per step: 4 micro-batches x recomputed MoE layers
    "full_uniform_1": 4 * 4,
    "full_uniform_2": 4 * 4,
    "full_block_3": 4 * 3,
    "selective_moe": 4 * 4,
    "selective_attention_moe": 4 * 4,
}


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    root = tmp_path_factory.mktemp("recompute")
    shared = write_layout_runs(root)
    records = train_layout(root, "plain", 1, [], shared=shared)
    return root, shared, records


def _grads(root, name):
    return torch.load(root / name / "records_4.json.grads.pt")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_recomputed_forward_routes_and_trains_as_the_first(plain, name):
    root, shared, reference = plain
    assert all(r["replayed"] == 0 for r in reference)
    records = train_layout(root, name, 1, SETTINGS[name], shared=shared)
    assert [r["replayed"] for r in records] == [
        REPLAYS_PER_STEP[name] * (i + 1) for i in range(4)
    ], "the routers must run again in the backward pass, from the queue"
    diff = max_differences(records, reference)
    print(f"recompute {name}: max differences {diff}")
    assert diff["routing"] == 0 and diff["loss"] < 1e-6 and diff["grad_norm"] < 1e-6, diff
    want, got = _grads(root, "plain"), _grads(root, name)
    assert sorted(got) == sorted(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-7, msg=key)


def test_recomputing_norms_without_transformer_engine_is_refused(tmp_path):
    """Megatron recomputes only Transformer Engine's norms; local layers would fail mid-step."""
    from nemo_neko.compat.megatron import transformer_engine_available

    if transformer_engine_available():
        pytest.skip("Transformer Engine is installed: norms recompute")
    from nemo_neko.testing.distributed import run_distributed

    run_distributed(_build_with_norm_recompute, 1)


def _build_with_norm_recompute(rank, world_size):
    from nemo_neko.model import ModelConfig
    from nemo_neko.moe.config import TaskRoutingConfig
    from nemo_neko.parallel import ParallelLayout, initialize_parallel

    ctx = initialize_parallel(ParallelLayout(), num_experts=8)
    model = ModelConfig(
        num_layers=1,
        hidden_size=32,
        num_attention_heads=2,
        ffn_hidden_size=64,
        vocab_size=64,
        recompute_granularity="selective",
        recompute_modules=["layernorm"],
    )
    with pytest.raises(ValueError, match="'layernorm' needs Transformer Engine"):
        model.build(
            routing=TaskRoutingConfig(task_to_expert=[0]), parallel=ctx, max_sequence_length=16
        )


@pytest.mark.slow
def test_recompute_under_an_interleaved_pipeline(plain):
    """PP2 x VPP2, full recomputation: backwards of several micro-batches in flight replay in
    order on every stage."""
    root, shared, reference = plain
    layout = ["model.parallel.pipeline=2", "model.parallel.virtual_pipeline=2"]
    records = train_layout(
        root, "pp2_vpp2_full", 2, [*layout, *SETTINGS["full_uniform_1"]], shared=shared
    )
    assert records[-1]["replayed"] > 0  # this rank's (the last stage's) layers
    diff = max_differences(records, reference)
    print(f"recompute under PP2 x VPP2: max differences {diff}")
    assert diff["routing"] == 0 and diff["loss"] < 2e-5 and diff["grad_norm"] < 1e-4, diff
