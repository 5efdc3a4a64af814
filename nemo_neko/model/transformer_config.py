"""``ModelConfig`` + ``ParallelLayout`` -> Megatron-Core's ``TransformerConfig``.

The one translation of NeKo's model description into Megatron's terms; training, correction and
conversion all build their ``TransformerConfig`` here (through :func:`nemo_neko.model.build`).
"""

from __future__ import annotations

from nemo_neko.model.config import Activation, ModelConfig, ParamsDtype
from nemo_neko.parallel.layout import ParallelLayout


def _value(choice):
    """An enum member's plain value (Megatron compares strings), None as it is."""
    return None if choice is None else getattr(choice, "value", choice)


def transformer_config(model: ModelConfig, layout: ParallelLayout | None = None, **overrides):
    """Megatron ``TransformerConfig`` for ``model`` under ``layout`` (default: the model's own).

    Args:
        model: the model description.
        layout: the parallel layout (None: ``model.parallel``).
        overrides: ``TransformerConfig`` fields set last (e.g. ``perform_initialization=False``).
    """
    import torch

    from nemo_neko.compat import megatron as mc

    layout = layout or model.parallel
    activation = Activation(model.activation)
    dtype = ParamsDtype(model.params_dtype).torch_dtype()
    settings = dict(
        num_layers=model.num_layers,
        hidden_size=model.hidden_size,
        num_attention_heads=model.num_attention_heads,
        num_query_groups=model.num_query_groups,
        kv_channels=model.kv_channels,
        ffn_hidden_size=model.ffn_hidden_size,
        num_moe_experts=model.num_experts or None,
        moe_ffn_hidden_size=model.moe_ffn_hidden_size if model.num_experts else None,
        moe_router_topk=model.moe_router_topk,
        moe_layer_freq=model.moe_layer_pattern(),
        moe_shared_expert_intermediate_size=model.moe_shared_expert_intermediate_size,
        moe_shared_expert_gate=model.moe_shared_expert_gate,
        moe_router_pre_softmax=model.moe_router_pre_softmax,
        moe_router_score_function=_value(model.moe_router_score_function),
        moe_aux_loss_coeff=model.moe_aux_loss_coeff,
        moe_router_load_balancing_type=_value(model.moe_router_load_balancing_type),
        moe_z_loss_coeff=model.moe_z_loss_coeff,
        moe_token_dispatcher_type=_value(model.moe_token_dispatcher_type),
        moe_expert_capacity_factor=model.moe_expert_capacity_factor,
        moe_router_dtype="fp32",
        normalization=_value(model.normalization),
        layernorm_epsilon=model.layernorm_epsilon,
        layernorm_zero_centered_gamma=model.layernorm_zero_centered_gamma,
        activation_func=activation.function(),
        gated_linear_unit=activation.gated,
        add_bias_linear=False,
        add_qkv_bias=model.add_qkv_bias,
        qk_layernorm=model.qk_layernorm,
        init_method_std=model.init_method_std,
        hidden_dropout=model.hidden_dropout,
        attention_dropout=model.attention_dropout,
        params_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        pipeline_dtype=dtype,
        tensor_model_parallel_size=layout.tensor,
        pipeline_model_parallel_size=layout.pipeline,
        virtual_pipeline_model_parallel_size=layout.virtual_pipeline,
        context_parallel_size=layout.context,
        expert_model_parallel_size=layout.expert,
        expert_tensor_parallel_size=layout.expert_tensor,
        sequence_parallel=layout.sequence_parallel,
        use_cpu_initialization=not torch.cuda.is_available(),
        calculate_per_token_loss=True,
        recompute_granularity=_value(model.recompute_granularity),
        recompute_method=_value(model.recompute_method),
        recompute_num_layers=model.recompute_num_layers,
    )
    if model.recompute_modules:
        settings["recompute_modules"] = list(model.recompute_modules)
    if layout.virtual_pipeline:
        # Interleaving sends activations forward and gradients backward in one exchange; with two
        # stages both go to the same peer, and one batched isend/irecv call cannot tell them apart
        # (they are matched in posting order, which differs on the two ranks: gradients arrived as
        # activations). Megatron-LM's default for interleaving: separate, overlapped p2p calls
        # (which use two process groups for a two-rank pipeline).
        settings.update(overlap_p2p_comm=True, batch_p2p_comm=False)
    settings.update(overrides)
    return mc.TransformerConfig(**settings)
