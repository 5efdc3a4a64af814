"""The memory plan against what the micro model really holds on CPU (``nemo_neko.testing.memory``;
``benchmarks/memory_plan.py`` prints the same figures for more cases).

Tolerances:

* weights, gradients, optimizer state: within 5 % (they are counted exactly; what is left is
  the DDP buffers' padding and Adam's ``step`` scalars);
* activations: the estimate within 0.5x - 2x of the measured peak. The plan counts what the
  GPU path (Transformer Engine, THD, bf16) keeps; the CPU path differs: the local spec's
  attention gets the packed batch's block-diagonal mask, which SDPA turns into an additive
  float copy per layer; our ``RMSNorm`` (``F.rms_norm``) also keeps its normalised input, an
  extra ``h`` per norm; the grouped CPU experts stack the expert weights per micro-batch and keep
  the stack for the backward GEMMs, and one more expert intermediate; RoPE's cos/sin tables are
  kept per layer; and the output layer runs on the loss positions only, where the plan counts
  every position. Measured on this model (``benchmarks/memory_plan.py``): estimate / measured
  from 0.65 (PP2's first stage, two micro-batches of the CPU extras in flight) to 0.96 (full
  recomputation).
"""

import pytest

from nemo_neko.testing.distributed import run_distributed
from nemo_neko.testing.memory import measure

STATE_TOLERANCE = 0.05
ACTIVATION_RANGE = (0.5, 2.0)

CASES = {
    "fp32": ([], 1),
    "bf16, distributed optimizer": (
        ["model.params_dtype=bfloat16", "train.use_distributed_optimizer=true"],
        1,
    ),
    "frozen layer 0 and embeddings": (
        ["train.freeze_layers_below=1", "train.freeze_embeddings=true"],
        1,
    ),
    "full recompute (uniform, 1 layer)": (
        [
            "model.recompute_granularity=full",
            "model.recompute_method=uniform",
            "model.recompute_num_layers=1",
        ],
        1,
    ),
    "PP2": (["model.parallel.pipeline=2"], 2),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_the_plan_matches_what_a_training_rank_holds(case):
    overrides, world_size = CASES[case]
    for result in measure(overrides, world_size, steps=1):
        estimate, measured = result["estimate"], result["measured"]
        for figure in ("weights", "grads", "optimizer"):
            assert estimate[figure] == pytest.approx(measured[figure], rel=STATE_TOLERANCE), figure
        low, high = ACTIVATION_RANGE
        assert low <= estimate["activations"] / measured["activations"] <= high


def _inventory_is_the_built_model(rank, world_size, tied):
    from nemo_neko.config import to_run_config
    from nemo_neko.model.memory_plan import parameter_inventory
    from nemo_neko.parallel import initialize_parallel
    from nemo_neko.testing.runs import MICRO_OVERRIDES
    from tests.launch.test_config import compose_config

    overrides = [*MICRO_OVERRIDES, f"model.share_embeddings_and_output_weights={tied}"]
    overrides += ["model.moe_layers=[1]", "model.qk_layernorm=true", "model.add_qkv_bias=true"]
    run = to_run_config(compose_config(overrides))
    ctx = initialize_parallel(run.model.parallel, num_experts=run.model.num_experts)
    built = run.model.build(
        routing=run.task_routing(), parallel=ctx, tokenizer_vocab=500, max_sequence_length=64
    )
    names = {n: p.numel() for c in built.chunks for n, p in c.named_parameters()}
    planned = {p.name: p.numel for p in parameter_inventory(run.model, built.vocab_size)}
    assert names == planned


@pytest.mark.slow
@pytest.mark.parametrize("tied", [True, False])
def test_the_parameter_inventory_names_and_sizes_what_megatron_builds(tied):
    run_distributed(_inventory_is_the_built_model, 1, tied)
