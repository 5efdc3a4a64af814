"""Tiny Megatron configs and builders for tests, benchmarks and demos (CPU, fp32).

Call these inside a process whose parallel state is initialised
(:func:`nemo_neko.parallel.initialize_parallel`, e.g. under
:func:`nemo_neko.testing.distributed.run_distributed`).
"""

from __future__ import annotations

import torch

from nemo_neko.compat import megatron as mc
from nemo_neko.moe.config import TaskRoutingConfig
from nemo_neko.moe.spec import neko_decoder_block_spec, neko_moe_spec


def tiny_moe_config(**overrides) -> mc.TransformerConfig:
    """A small Mixtral-style MoE ``TransformerConfig`` (8 experts, top-2, SwiGLU, RMSNorm)."""
    settings = dict(
        num_layers=2,
        hidden_size=32,
        num_attention_heads=4,
        ffn_hidden_size=64,
        num_moe_experts=8,
        moe_router_topk=2,
        moe_ffn_hidden_size=64,
        moe_token_dispatcher_type="alltoall",
        moe_router_load_balancing_type="aux_loss",
        moe_aux_loss_coeff=0.01,
        use_cpu_initialization=True,
        add_bias_linear=False,
        gated_linear_unit=True,
        activation_func=torch.nn.functional.silu,
        normalization="RMSNorm",
        params_dtype=torch.float32,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    settings.update(overrides)
    return mc.TransformerConfig(**settings)


def build_moe_layer(
    config,
    routing: TaskRoutingConfig,
    *,
    layer_number: int = 1,
    router: str = "task_guided",
    pg_collection=None,
    local_experts: str = "grouped",
):
    """A bare NeKo MoE layer (local modules) for ``config``."""
    kwargs = {} if pg_collection is None else {"pg_collection": pg_collection}
    layer = mc.build_moe_module(
        neko_moe_spec(
            routing,
            config.num_moe_experts,
            use_te=False,
            router=router,
            local_experts=local_experts,
        ),
        config,
        **kwargs,
    )
    layer.set_layer_number(layer_number)
    return layer


def build_tiny_gpt(
    config,
    routing: TaskRoutingConfig,
    *,
    vocab_size: int = 128,
    max_sequence_length: int = 64,
    pre_process: bool = True,
    post_process: bool = True,
    vp_stage: int | None = None,
    local_attention: str = "sdpa",
    local_experts: str = "grouped",
):
    """A tiny ``GPTModel`` (RoPE, untied embeddings) whose MoE layers are NeKo's."""
    spec = neko_decoder_block_spec(
        config,
        routing,
        use_te=False,
        vp_stage=vp_stage,
        local_attention=local_attention,
        local_experts=local_experts,
    )
    return mc.GPTModel(
        config=config,
        transformer_layer_spec=spec,
        vocab_size=vocab_size,
        max_sequence_length=max_sequence_length,
        pre_process=pre_process,
        post_process=post_process,
        position_embedding_type="rope",
        share_embeddings_and_output_weights=False,
    )


def causal_mask(seq_len: int) -> torch.Tensor:
    """``[1, 1, S, S]`` bool, True where attention is masked (Megatron's convention)."""
    return torch.triu(torch.ones(seq_len, seq_len, dtype=torch.bool), diagonal=1).view(
        1, 1, seq_len, seq_len
    )


def tiny_decoding_gpt(seed: int = 0, vocab_size: int = 64):
    """A tiny 8-expert NeKo ``GPTModel`` in eval mode, in this process's one-rank parallel state
    (set up here): what the decoding tests generate with (vocabulary ``vocab_size``, 64
    positions)."""
    from nemo_neko.parallel import ParallelLayout, initialize_parallel

    initialize_parallel(ParallelLayout(), num_experts=8)
    torch.manual_seed(seed)
    model = build_tiny_gpt(
        tiny_moe_config(hidden_size=64, ffn_hidden_size=128, moe_ffn_hidden_size=64),
        TaskRoutingConfig(task_to_expert=[0]),
        vocab_size=vocab_size,
        max_sequence_length=64,
    )
    return model.eval()
