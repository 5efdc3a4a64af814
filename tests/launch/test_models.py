"""conf/model and conf/cluster: every model x cluster dry-runs with its published dimensions and
parameter counts, its default layout fits its cluster, too-small clusters fail clearly, and the
counts from the config equal those of the Megatron model it builds."""

import math
import re

import pytest
from hydra.errors import ConfigCompositionException

from nemo_neko.config import to_run_config
from nemo_neko.launch import launch
from nemo_neko.parallel import LayoutError
from nemo_neko.testing.distributed import run_distributed
from tests.launch.test_config import compose_config

MODELS = ("tiny", "8x2b", "8x7b", "8x22b", "qwen_moe")
CLUSTERS = ("local", "slurm", "slurm_local")

PUBLISHED = {"8x7b": (46.7e9, 12.9e9), "8x22b": (141e9, 39e9), "qwen_moe": (14.3e9, 2.7e9)}
"""Total and active parameters as published (Mistral AI, Qwen model cards)."""

HF = {
    "8x7b": dict(  # mistralai/Mixtral-8x7B-v0.1 config.json
        hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
        head_dim=128, intermediate_size=14336, num_local_experts=8, num_experts_per_tok=2,
        vocab_size=32000, rope_theta=1e6, rms_norm_eps=1e-5, max_position_embeddings=32768,
        hidden_act="silu", tie_word_embeddings=False,
    ),
    "8x22b": dict(  # mistralai/Mixtral-8x22B-v0.1 config.json
        hidden_size=6144, num_hidden_layers=56, num_attention_heads=48, num_key_value_heads=8,
        head_dim=128, intermediate_size=16384, num_local_experts=8, num_experts_per_tok=2,
        vocab_size=32768, rope_theta=1e6, rms_norm_eps=1e-5, max_position_embeddings=65536,
        hidden_act="silu", tie_word_embeddings=False,
    ),
    "8x2b": dict(  # google/gemma-2b config.json, its FFN as 8 experts (top-2)
        hidden_size=2048, num_hidden_layers=18, num_attention_heads=8, num_key_value_heads=1,
        head_dim=256, intermediate_size=16384, num_local_experts=8, num_experts_per_tok=2,
        vocab_size=256000, rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=8192,
        hidden_act="gelu_pytorch_tanh", tie_word_embeddings=True,
    ),
    "qwen_moe": dict(  # Qwen/Qwen1.5-MoE-A2.7B config.json
        hidden_size=2048, num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=16,
        head_dim=128, intermediate_size=5632, moe_intermediate_size=1408,
        shared_expert_intermediate_size=5632, num_local_experts=60, num_experts_per_tok=4,
        vocab_size=151936, rope_theta=1e6, rms_norm_eps=1e-6, max_position_embeddings=8192,
        hidden_act="silu", tie_word_embeddings=False, norm_topk_prob=False,
    ),
}  # fmt: skip

PARTICULARS = {
    "8x7b": dict(add_qkv_bias=False, layernorm_zero_centered_gamma=False, embedding_multiplier=None),
    "8x22b": dict(add_qkv_bias=False, layernorm_zero_centered_gamma=False, embedding_multiplier=None),
    "8x2b": dict(add_qkv_bias=False, layernorm_zero_centered_gamma=True,
                 embedding_multiplier=pytest.approx(math.sqrt(2048))),
    "qwen_moe": dict(add_qkv_bias=True, moe_shared_expert_gate=True, moe_router_pre_softmax=True,
                     moe_shared_expert_intermediate_size=5632),
}  # fmt: skip
"""What the Hugging Face configs imply without naming it: Gemma's scaled embeddings and (1 + w)
RMSNorm, Qwen's QKV bias, gated shared expert and softmax over all experts before top-k."""

LAYOUTS = {  # (TP, PP, VPP, EP, SP, GPUs) after Megatron-Core's MoE recipes
    "tiny": (1, 1, None, 1, False, 1),
    "8x2b": (1, 1, None, 8, False, 8),
    "8x7b": (1, 4, 8, 8, False, 64),
    "8x22b": (2, 8, None, 8, True, 128),
    "qwen_moe": (1, 1, None, 4, False, 16),
}
COUNT = re.compile(r"model (\S+): .*?\(([\d,]+) / ([\d,]+); vocabulary (\d+)")


def run_of(model, cluster="local", *overrides):
    return to_run_config(compose_config([f"model={model}", f"cluster={cluster}", *overrides]))


def dry_run(capsys, tmp_path, model, cluster, *overrides) -> str:
    cfg = compose_config(
        [
            f"model={model}",
            f"cluster={cluster}",
            "dry_run=true",
            f"run_dir={tmp_path / 'run'}",
            *overrides,
        ]
    )
    assert launch(cfg) == 0
    assert not (tmp_path / "run").exists(), "a dry run writes nothing"
    return capsys.readouterr().out


def hand_count(h, layers, heads, kv_heads, head_dim, expert_ffn, experts, topk, vocab, tied):
    """Mixtral-style decoder, gated FFN experts, no biases, counted by hand (not by num_params)."""
    query, keys_values, out = (
        h * heads * head_dim,
        2 * h * kv_heads * head_dim,
        heads * head_dim * h,
    )
    expert = 3 * h * expert_ffn  # gate, up, down
    shared = query + keys_values + out + h * experts + 2 * h  # attention, router, two norms
    embeddings = vocab * h * (1 if tied else 2) + h  # + final norm
    return (
        layers * (shared + experts * expert) + embeddings,
        layers * (shared + topk * expert) + embeddings,
    )


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("cluster", CLUSTERS)
def test_every_model_dry_runs_on_every_cluster_with_its_parameter_counts(
    capsys, tmp_path, model, cluster
):
    run = run_of(model, cluster)
    overrides = []
    too_small = cluster == "slurm_local" and model != "tiny"  # one node of 2 CPUs
    if too_small:  # the big models do not fit it ...
        with pytest.raises(LayoutError, match=rf"model {model}'s layout does not fit cluster"):
            dry_run(capsys, tmp_path, model, cluster)
        # ... but they dry-run on it resized to their size
        overrides = [f"cluster.nnodes={run_of(model).cluster.nnodes}", "cluster.nproc_per_node=8"]
    out = dry_run(capsys, tmp_path, model, cluster, *overrides)
    name, total, active, vocab = COUNT.search(out).groups()
    total, active = int(total.replace(",", "")), int(active.replace(",", ""))
    assert name == model
    if model in PUBLISHED:
        published_total, published_active = PUBLISHED[model]
        assert abs(total - published_total) / published_total < 0.01, (total, published_total)
        assert abs(active - published_active) / published_active < 0.01, (active, published_active)
    elif model == "8x2b":  # Gemma-2B with its FFN as 8 experts, top-2
        assert (total, active) == hand_count(2048, 18, 8, 1, 256, 16384, 8, 2, 256000, True)
        assert (total, active) == (15_190_042_624, 4_318_406_656)
    else:  # tiny, with the tokenizer trained on the data (4096)
        assert int(vocab) == 4096
        assert (total, active) == hand_count(128, 4, 2, 2, 64, 256, 8, 2, 4096, True)
    tp, pp, vpp, ep, sp, gpus = LAYOUTS[model]
    assert f"layout: TP={tp} PP={pp} VPP={vpp} CP=1 EP={ep}" in out
    gpus = 2 if cluster == "slurm_local" and model == "tiny" else gpus  # its two CPUs
    assert f"SP={sp} on " in out and f"= {gpus} processes" in out
    if cluster == "local":
        assert "-m torch.distributed.run" in out
        assert ("--standalone" in out) == (run.cluster.nnodes == 1)
    else:
        assert "#SBATCH --nodes=" in out and "not submitted" in out


@pytest.mark.parametrize("model", [m for m in MODELS if m != "tiny"])
def test_models_have_the_published_dimensions_and_recipe_defaults(model):
    run = run_of(model, "slurm")
    m, hf = run.model, HF[model]
    assert (m.hidden_size, m.num_layers) == (hf["hidden_size"], hf["num_hidden_layers"])
    assert (m.num_attention_heads, m.query_groups) == (
        hf["num_attention_heads"],
        hf["num_key_value_heads"],
    )
    assert m.head_dim == hf["head_dim"]
    assert m.ffn_hidden_size == hf["intermediate_size"]
    assert m.moe_ffn_hidden_size == hf.get("moe_intermediate_size", hf["intermediate_size"])
    assert (m.num_experts, m.moe_router_topk) == (
        hf["num_local_experts"],
        hf["num_experts_per_tok"],
    )
    assert m.vocab_size == hf["vocab_size"] and m.rotary_base == hf["rope_theta"]
    assert m.layernorm_epsilon == hf["rms_norm_eps"] and m.normalization == "RMSNorm"
    assert m.max_position_embeddings == hf["max_position_embeddings"]
    assert m.share_embeddings_and_output_weights == hf["tie_word_embeddings"]
    assert m.activation == {"silu": "swiglu", "gelu_pytorch_tanh": "geglu_tanh"}[hf["hidden_act"]]
    assert m.moe_router_pre_softmax == (not hf.get("norm_topk_prob", True))
    assert m.moe_shared_expert_intermediate_size == hf.get("shared_expert_intermediate_size")
    for key, value in PARTICULARS[model].items():
        assert getattr(m, key) == value, key
    # the paper's batch (2M tokens), micro-batch 1, bf16 with the distributed optimizer
    assert run.data.seq_length * 512 == run.train.global_batch_tokens == 2**21
    assert run.train.micro_batch_size == 1 and run.train.use_distributed_optimizer
    assert m.params_dtype == "bfloat16"
    assert run.cluster.gpus_per_node == run.cluster.nproc_per_node == 8


def test_a_layout_that_does_not_fit_the_cluster_fails_before_anything_is_written(tmp_path):
    cfg = compose_config(
        ["model=8x22b", "cluster=slurm", "cluster.nnodes=2", f"run_dir={tmp_path / 'run'}"]
    )
    message = (
        r"model 8x22b's layout does not fit cluster slurm \(2 node\(s\) x 8 processes = 16\): "
        r"world size 16 is not divisible by ETP x EP x PP = 2 x 8 x 8 = 128"
    )
    with pytest.raises(LayoutError, match=message):
        launch(cfg)
    with pytest.raises(ValueError, match="8 GPUs per node but nproc_per_node=4"):
        launch(
            compose_config(
                [
                    "model=8x7b",
                    "cluster=slurm",
                    "cluster.nproc_per_node=4",
                    "cluster.gpus_per_node=8",
                ]
            )
        )
    with pytest.raises(LayoutError, match="num_moe_experts=60 is not divisible by .* EP=8"):
        launch(compose_config(["model=qwen_moe", "model.parallel.expert=8"]))
    with pytest.raises(ConfigCompositionException, match="cluster.launcher=mpirun") as error:
        launch(compose_config(["cluster=slurm", "cluster.launcher=mpirun"]))
    assert "Invalid value 'mpirun', expected one of [srun, torchrun]" in str(error.value.__cause__)
    assert not (tmp_path / "run").exists()


def test_tiny_is_a_delta_over_the_shared_base():
    tiny = run_of("tiny")
    assert tiny.model.params_dtype == "float32" and tiny.model.rotary_base == 10000
    assert tiny.model.share_embeddings_and_output_weights
    assert (tiny.data.seq_length, tiny.train.global_batch_tokens) == (512, 2048)
    assert tiny.cluster.world_size == 1 and not tiny.train.use_distributed_optimizer


SMALL = [
    "model.num_layers=2",
    "model.hidden_size=64",
    "model.kv_channels=16",
    "model.ffn_hidden_size=48",
    "model.moe_ffn_hidden_size=32",
    "model.vocab_size=200",  # padded to 256 in the built model
    "model.params_dtype=float32",
    "model.transformer_impl=local",
    "model.parallel={tensor: 1, pipeline: 1, virtual_pipeline: null, expert: 1, sequence_parallel: false}",
]
"""Every model shrunk, keeping what sets its parameter count apart: heads and KV heads, experts
and top-k, tied embeddings, QKV bias, the gated shared expert."""


def _count_built_models(rank, world_size, runs):
    from nemo_neko.parallel import ParallelLayout, initialize_parallel

    for run in runs:
        model = run.model
        parallel = initialize_parallel(
            ParallelLayout(), num_experts=model.num_experts, num_layers=2
        )
        chunks = model.build(
            routing=run.task_routing(), parallel=parallel, max_sequence_length=64
        ).chunks
        built = sum(p.numel() for chunk in chunks for p in chunk.parameters())
        counts = model.num_params(padded=True)
        assert built == counts["total"], (model.name, built, counts)
        expert = 3 * model.hidden_size * model.moe_ffn_hidden_size
        idle = model.num_layers * (model.num_experts - model.moe_router_topk) * expert
        assert counts["total"] - counts["active"] == idle, model.name
        assert model.num_params()["total"] == counts["total"] - 56 * model.hidden_size * (
            1 if model.share_embeddings_and_output_weights else 2
        )  # 200 -> 256 padded rows


def test_parameter_counts_equal_those_of_the_built_megatron_models():
    runs = []
    for name in MODELS:
        model = run_of(name).model
        shrink = ["model.num_attention_heads=4"]
        shrink.append(
            f"model.num_query_groups={4 if model.query_groups == model.num_attention_heads else 1}"
        )
        if model.moe_shared_expert_intermediate_size:
            shrink.append("model.moe_shared_expert_intermediate_size=40")
        runs.append(run_of(name, "local", *SMALL, *shrink))
    run_distributed(_count_built_models, 1, runs)
