"""The memory and FLOPs plan (``nemo_neko.model.memory_plan``): hand-computed small cases, and
Megatron-LM's own formulas (``megatron/training/theoretical_memory_usage.py`` and
``num_floating_point_operations`` in ``megatron/training/training.py``, Megatron-LM d98e8a64)
written out again here, independently of the module, for the configs they cover."""

import pytest

from nemo_neko.model import activation_memory as am
from nemo_neko.model.config import ModelConfig
from nemo_neko.model.memory_plan import (
    TrainingShape,
    flops_per_token,
    format_memory_plan,
    in_flight_chunks,
    parameter_inventory,
    plan_memory,
    stage_layers,
)
from nemo_neko.parallel.layout import ParallelLayout

GIB = 1024**3


def small(**overrides) -> ModelConfig:
    """2 layers, h 8, 2 heads of 4 with 1 KV group, 4 experts of 8, top-2, untied."""
    settings = dict(
        num_layers=2, hidden_size=8, num_attention_heads=2, num_query_groups=1,
        ffn_hidden_size=16, num_experts=4, moe_ffn_hidden_size=8, moe_router_topk=2,
        vocab_size=32, share_embeddings_and_output_weights=False,
    )  # fmt: skip
    settings.update(overrides)
    return ModelConfig(**settings)


def mixtral(name: str) -> ModelConfig:
    """Mixtral 8x7B / 8x22B as conf/model has them (bf16), with their recipe layouts."""
    if name == "8x7b":
        dims = dict(num_layers=32, hidden_size=4096, num_attention_heads=32, ffn_hidden_size=14336,
                    moe_ffn_hidden_size=14336, vocab_size=32000,
                    parallel=ParallelLayout(pipeline=4, virtual_pipeline=8, expert=8))  # fmt: skip
    else:
        dims = dict(num_layers=56, hidden_size=6144, num_attention_heads=48, ffn_hidden_size=16384,
                    moe_ffn_hidden_size=16384, vocab_size=32768,
                    parallel=ParallelLayout(tensor=2, pipeline=8, expert=8, sequence_parallel=True))  # fmt: skip
    return ModelConfig(name=name, num_query_groups=8, params_dtype="bfloat16", **dims)


# -- weights, gradients, optimizer: hand counts ----------------------------------------------------

# per layer: QKV 8 x (8 + 2 x 4) = 128, projection 64, norms 16, router 32, experts 4 x 192 = 768
SMALL_LAYER, SMALL_EXPERTS, SMALL_EXTRA = 1008, 768, 32 * 8 * 2 + 8


def test_the_inventory_counts_what_num_params_counts():
    model = small()
    params = parameter_inventory(model, 32)
    assert sum(p.numel for p in params) == 2 * SMALL_LAYER + SMALL_EXTRA == 2536
    assert sum(p.numel for p in params) == model.num_params(padded=False)["total"]
    assert sum(p.numel for p in params if p.kind == "expert") == 2 * SMALL_EXPERTS
    names = {p.name for p in params}
    assert "decoder.layers.1.mlp.experts.local_experts.3.linear_fc2.weight" in names
    for qwen in (dict(moe_shared_expert_intermediate_size=8, moe_shared_expert_gate=True,
                      add_qkv_bias=True, qk_layernorm=True), dict(moe_layers=[1])):  # fmt: skip
        model = small(**qwen)
        total = sum(p.numel for p in parameter_inventory(model, 32))
        assert total == model.num_params(padded=False)["total"]


def shape(**overrides) -> TrainingShape:
    settings = dict(world_size=1, seq_length=16, micro_batch_size=2, micro_batches=1, vocab=32)
    settings.update(overrides)
    return TrainingShape(**settings)


def test_fp32_weights_grads_adam_are_4_4_8_bytes_per_parameter():
    rank = plan_memory(small(), shape()).ranks[0]
    assert (rank.parameters, rank.trainable) == (2536, 2536)
    assert (rank.weights, rank.grads, rank.optimizer) == (2536 * 4, 2536 * 4, 2536 * 8)


def test_bf16_with_the_distributed_optimizer_shards_dense_over_dp_and_experts_over_expert_dp():
    model = small(params_dtype="bfloat16", parallel=ParallelLayout(expert=2))
    rank = plan_memory(model, shape(world_size=4, distributed_optimizer=True)).ranks[0]
    experts, dense = 2 * SMALL_EXPERTS / 2, 2536 - 2 * SMALL_EXPERTS  # EP 2 halves the experts
    assert rank.parameters == dense + experts
    assert (rank.weights, rank.grads) == ((dense + experts) * 2, (dense + experts) * 4)
    # main weights + moments: 12 bytes, over DP 4 (dense) and expert DP 4 / EP 2 = 2
    assert rank.optimizer == pytest.approx(dense * 12 / 4 + experts * 12 / 2)
    plain = plan_memory(model, shape(world_size=4)).ranks[0]
    assert plain.weights + plain.grads + plain.optimizer == (dense + experts) * 18  # Megatron's 18


def test_frozen_parameters_keep_their_weights_only():
    frozen = shape(frozen=lambda name: name.startswith("decoder.layers.0."))
    rank = plan_memory(small(), frozen).ranks[0]
    assert rank.trainable == 2536 - SMALL_LAYER
    assert (rank.weights, rank.grads, rank.optimizer) == (
        2536 * 4,
        (2536 - SMALL_LAYER) * 4,
        (2536 - SMALL_LAYER) * 8,
    )


def test_pipeline_stages_hold_their_layers_and_a_tied_model_copies_its_embedding_last():
    model = small(share_embeddings_and_output_weights=True, parallel=ParallelLayout(pipeline=2))
    first, last = plan_memory(model, shape(world_size=2)).ranks
    assert first.parameters == SMALL_LAYER + 32 * 8  # layer 0 + embedding
    assert last.parameters == SMALL_LAYER + 32 * 8 + 8  # layer 1 + output copy + final norm
    assert stage_layers(8, 2, 2) == [[[0, 1], [4, 5]], [[2, 3], [6, 7]]]


def test_micro_batches_in_flight_follow_megatrons_schedules():
    assert in_flight_chunks(1, None, 0, 8) == [0]
    assert [len(in_flight_chunks(4, None, r, 8)) for r in range(4)] == [4, 3, 2, 1]
    assert len(in_flight_chunks(4, None, 0, 2)) == 2
    interleaved = in_flight_chunks(4, 2, 0, 8)  # warm-up 2 x 3 + 1 x 4, plus one
    assert len(interleaved) == 11 and interleaved.count(0) == 7 and interleaved.count(1) == 4
    assert len(in_flight_chunks(4, 2, 3, 8)) == 5


# -- activations: hand counts ------------------------------------------------------------------------


def test_a_small_moe_layer_keeps_its_hand_counted_bytes_per_token():
    model = small()  # fp32: 4 bytes an element; h 8, q 8, kv 4, 2 heads, top-2 of 4 experts of 8
    attention = 32 + 4 + 32 + (8 + 8) * 4 + (8 + 4) * 4 + 8 * 4 + 4 * 2
    mlp = 32 + 4 + 32 + (14 * 4 + 24 * 2) + 2 * 8 * 4 + 2 * 2 * 8 * 4 + 3 * 2 * 8 * 4
    terms = am.layer_terms(model, 0, 16)
    split = dict(tensor=1, expert_tensor=1, sequence_parallel=False)
    assert am.bytes_on_rank(terms, **split) == attention + mlp == 776
    # TP 2 + SP: everything halves but the routed token copies (gathered over ETP = TP)
    tp2 = dict(tensor=2, expert_tensor=2, sequence_parallel=True)
    assert am.bytes_on_rank(terms, **tp2) == (776 - 2 * 8 * 4) / 2 + 2 * 8 * 4
    rank = plan_memory(model, shape()).ranks[0]
    output = 32 + 4 + 32 + 4 * 32 + 12
    assert rank.activations == (2 * 776 + 8 + output) * 32  # 2 x 16 tokens
    full = plan_memory(model, shape(recompute="full")).ranks[0]
    assert full.activations == (2 * 32 + 776 + 8 + output) * 32  # inputs + one layer recomputed


def frozen_stack(name: str) -> bool:
    return name.startswith(("embedding.", "decoder.layers."))


def test_frozen_layers_below_everything_trainable_keep_no_activations():
    def frozen(name):
        return name.startswith(("embedding.", "decoder.layers.0."))

    rank = plan_memory(small(), shape(frozen=frozen)).ranks[0]
    assert rank.activations == (776 + 32 + 4 + 32 + 4 * 32 + 12) * 32
    assert rank.passes_in_flight == 1
    # a pipeline stage receives an activation that asks for its gradient: layer 1 on stage 1
    model = small(parallel=ParallelLayout(pipeline=2))
    first, last = plan_memory(model, shape(world_size=2, frozen=frozen_stack)).ranks
    assert first.activations == 0 and last.passes_in_flight == 1


# -- Megatron-LM's formulas, written out -----------------------------------------------------------


def megatron_weight_and_optimizer_bytes(model: ModelConfig, world: int, distributed: bool) -> float:
    """``compute_weight_and_optimizer_memory`` for a Mixtral-like model (RMSNorm, SwiGLU, GQA,
    every layer MoE, untied), Megatron-LM d98e8a64."""
    h, L, layout = model.hidden_size, model.num_layers, model.parallel
    tp, pp, ep = layout.tensor, layout.pipeline, layout.expert
    etp = layout.expert_tensor or tp
    query_ratio = model.head_dim * model.num_attention_heads / h
    attention = 2 * h * h * ((1 + model.query_groups / model.num_attention_heads) * query_ratio)
    experts = 2 * h * model.moe_ffn_hidden_size * model.num_experts * 3 / 2
    replicated = (2 * h + h * model.num_experts) * L + h
    embedding = h * model.padded_vocab_size()
    tp_shard = (attention * L / pp + embedding) / tp
    replicated_shard = replicated / pp
    expert_shard = experts * L / pp / (etp * ep)
    if pp == 1:
        tp_shard += embedding / tp
    dp, expert_dp = world / (tp * pp), world / (etp * ep * pp)

    def per_parameter(data_parallel):
        return 6 + 12 / data_parallel if distributed else 18

    return (tp_shard + replicated_shard) * per_parameter(dp) + expert_shard * per_parameter(
        expert_dp
    )


@pytest.mark.parametrize("name,world", [("8x7b", 64), ("8x22b", 128)])
@pytest.mark.parametrize("distributed", [True, False])
def test_weights_and_optimizer_equal_megatrons_formula_on_the_mixtral_recipes(
    name, world, distributed
):
    model = mixtral(name)
    plan = plan_memory(
        model,
        TrainingShape(world, 4096, 1, 32, model.padded_vocab_size(), distributed),
    )
    first = plan.ranks[0]  # Megatron's "most loaded shard": the embedding's stage
    ours = first.weights + first.grads + first.optimizer
    # Megatron spreads the final norm (h parameters) over the stages; we put it on the last
    assert ours == pytest.approx(
        megatron_weight_and_optimizer_bytes(model, world, distributed), rel=1e-6
    )


def dense(**overrides) -> ModelConfig:
    """The model of Korthikanti et al.'s derivation: dense GeLU MLP (f = 4h), multi-head
    attention, dropout, bf16."""
    settings = dict(
        num_layers=8, hidden_size=1024, num_attention_heads=16, ffn_hidden_size=4096,
        num_experts=0, activation="gelu", hidden_dropout=0.1, vocab_size=32000,
        params_dtype="bfloat16",
    )  # fmt: skip
    settings.update(overrides)
    return ModelConfig(**settings)


def megatron_activation_bytes(model, s, b, micro_batches, sequence_parallel: bool) -> dict:
    """``compute_activation_memory`` (SP and selective recomputation) or
    ``compute_activation_memory_without_sp``, split into the layers' part and the rest."""
    h, f, L, layout = model.hidden_size, model.ffn_hidden_size, model.num_layers, model.parallel
    tp, pp, vpp = layout.tensor, layout.pipeline, layout.virtual_pipeline
    per_layer = s * b * h * (18 + 4 * f / h) if sequence_parallel else s * b * h * (10 + 24 / tp)
    parts = {"layers": per_layer * L, "embedding": 8 * s * b * pp + s * b * h * pp, "output": 0.0}
    factor = 1.0
    if vpp is not None:
        factor = 1 + (pp - 1) / (pp * vpp)
    elif pp > 1:
        factor = min(1, micro_batches / pp)
    parts = {k: v * factor for k, v in parts.items()}
    vocab = model.padded_vocab_size()
    if pp == 1 and sequence_parallel:
        parts["output"] = s * b * h * 4 * (1 + vocab / h)
    elif pp == 1:
        parts["output"] = (s * b * vocab / tp + s * b * h) * 2
    if sequence_parallel:
        return {k: v / tp for k, v in parts.items()}
    return {k: v * 1.05 for k, v in parts.items()}


def korthikanti_parts(model, shape_) -> dict:
    """Our first rank's activation bytes in the terms Megatron's formula has, by part."""
    first = plan_memory(model, shape_).ranks[0]
    names = {
        "layers": {t.name for t in am.layer_terms(model, 0, shape_.seq_length) if t.megatron},
        "embedding": {t.name for t in am.embedding_terms(model) if t.megatron},
        "output": {t.name for t in am.output_terms(model, shape_.vocab) if t.megatron},
    }
    return {
        part: sum(v for k, v in first.activation_terms.items() if k in terms)
        for part, terms in names.items()
    }


@pytest.mark.parametrize("pp,micro_batches", [(1, 4), (2, 1), (2, 4)])
def test_activations_reduce_to_megatrons_formula_with_sequence_parallelism(pp, micro_batches):
    model = dense(parallel=ParallelLayout(tensor=2, pipeline=pp, sequence_parallel=True))
    s, b = 2048, 2
    shape_ = TrainingShape(
        2 * pp, s, b, micro_batches, model.padded_vocab_size(), recompute="selective"
    )
    ours, megatron = korthikanti_parts(model, shape_), megatron_activation_bytes(
        model, s, b, micro_batches, sequence_parallel=True
    )
    assert ours["layers"] == pytest.approx(megatron["layers"], rel=1e-12)
    assert ours["output"] == pytest.approx(megatron["output"], rel=1e-12)
    # the token ids: each TP rank reads all of them (Megatron divides them by TP too)
    in_flight = min(pp, micro_batches)
    ids = 8 * s * b * in_flight
    assert ours["embedding"] == pytest.approx(megatron["embedding"] - ids / 2 + ids, rel=1e-12)


def test_activations_reduce_to_megatrons_formula_without_sequence_parallelism():
    model = dense(parallel=ParallelLayout(tensor=2, pipeline=2))  # f = 4h, as Megatron assumes
    shape_ = TrainingShape(4, 2048, 1, 4, model.padded_vocab_size())
    ours = korthikanti_parts(model, shape_)
    megatron = megatron_activation_bytes(model, 2048, 1, 4, sequence_parallel=False)
    for part in ("layers", "embedding"):  # Megatron adds 5 % for temporaries
        assert ours[part] * 1.05 == pytest.approx(megatron[part], rel=1e-12)


def test_interleaving_costs_megatrons_penalty_on_the_first_rank():
    model = dense(
        parallel=ParallelLayout(tensor=2, pipeline=4, virtual_pipeline=2, sequence_parallel=True)
    )
    shape_ = TrainingShape(8, 2048, 1, 8, model.padded_vocab_size(), recompute="selective")
    ours = korthikanti_parts(model, shape_)
    megatron = megatron_activation_bytes(model, 2048, 1, 8, sequence_parallel=True)
    assert ours["layers"] == pytest.approx(megatron["layers"], rel=1e-12)  # L x (1 + 3 / 8)
    # the embedding: 7 chunk-0 micro-batches in flight by the schedule, Megatron scales 4 by 1.375
    mask = 2048 * 1024 / 2
    assert ours["embedding"] == pytest.approx(7 * (8 * 2048 + mask))
    assert megatron["embedding"] == pytest.approx(5.5 * (8 * 2048 + 2 * mask) / 2)


def test_moe_activations_exceed_megatrons_dense_formula_by_the_routed_copies():
    """Megatron's formula counts one dense MLP of ``f`` columns per token; a top-2 SwiGLU MoE
    layer keeps 2 routed copies of ``5 x fe`` (fc1's ``2fe``, the gate activation, the scaled
    intermediate, fc2's input) plus the permuted tokens: about 2.5 x for Mixtral 8x7B."""
    model = mixtral("8x7b")
    shape_ = TrainingShape(64, 4096, 1, 32, model.padded_vocab_size())
    first = plan_memory(model, shape_).ranks[0]
    megatron = sum(megatron_activation_bytes(model, 4096, 1, 32, sequence_parallel=False).values())
    assert 2.2 < first.activations / megatron < 2.8


def megatron_flops_per_token(model: ModelConfig, s: int) -> float:
    """``num_floating_point_operations`` (BSHD, no MTP) over ``batch x s`` tokens."""
    h, L = model.hidden_size, model.num_layers
    q, kv = model.head_dim * model.num_attention_heads, model.head_dim * model.query_groups
    ffn = 3 if model.activation in ("swiglu", "geglu", "geglu_tanh") else 2
    moe = sum(model.is_moe_layer(i) for i in range(L))
    routed = model.moe_router_topk if model.num_experts else 0
    batch = 4
    tokens, squares = batch * s, batch * s * s
    attention = 3 * 2 * (h * (q + kv + kv) + q * h) * L
    core = 3 * 2 * q / 2 * 2 * L
    total = (
        tokens
        * (
            3
            * 2
            * h
            * (
                model.ffn_hidden_size * ffn * (L - moe)
                + model.moe_ffn_hidden_size * routed * ffn * moe
            )
            + attention
            + 3 * 2 * h * model.padded_vocab_size()
        )
        + squares * core
    )
    return total / tokens


@pytest.mark.parametrize(
    "model", [mixtral("8x7b"), mixtral("8x22b"), dense(), small(moe_layers=[1])]
)
def test_flops_per_token_equal_megatrons_count(model):
    vocab = model.padded_vocab_size()
    flops = flops_per_token(model, 4096, vocab)
    assert flops["total"] == pytest.approx(megatron_flops_per_token(model, 4096), rel=1e-12)
    # the GEMMs: 6 x the active parameters but the embedding lookup, norms and routers
    counts = model.num_params(padded=True)
    moe = sum(model.is_moe_layer(i) for i in range(model.num_layers))
    others = counts["embedding"] + model.hidden_size * (2 * model.num_layers + 1)
    others += moe * model.hidden_size * model.num_experts
    assert flops["linear"] == pytest.approx(6 * (counts["active"] - others), rel=1e-12)


# -- the dry run's lines -------------------------------------------------------------------------------


def test_the_dry_run_lines_mark_the_run_and_warn_when_the_gpu_is_too_small():
    model = mixtral("8x7b")
    shape_ = TrainingShape(64, 4096, 1, 32, model.padded_vocab_size(), True)
    roomy = format_memory_plan(model, shape_, gpu="h200", gpu_bytes=141 * GIB)
    assert "WARNING" not in roomy and roomy.count("GiB*") == 1
    assert "distributed optimizer" in roomy and "plain optimizer" in roomy
    tight = format_memory_plan(model, shape_, gpu="small", gpu_bytes=40 * GIB).splitlines()
    assert tight[-1].startswith("WARNING: 8x7b needs") and "fits with" in tight[-1]
    hopeless = format_memory_plan(model, shape_, gpu="tiny", gpu_bytes=1 * GIB)
    assert "no setting of the table fits" in hopeless
    assert "GPU memory unknown" in format_memory_plan(model, shape_)
