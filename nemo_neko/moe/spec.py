"""Layer specs: Megatron GPT decoder layers whose MoE is NeKo's.

Start from Megatron-Core's own GPT layer specs (local modules on CPU, Transformer Engine when it
imports and a GPU is present) and swap the MoE module for :class:`~nemo_neko.moe.layer.NeKoMoELayer`
with the router picked by name from :data:`ROUTERS`; with RMSNorm and local modules, the norms
become :class:`~nemo_neko.layers.RMSNorm` (Gemma's ``1 + w`` gain, sequence parallelism).
Anything Megatron's MoE supports comes along: top-k > 2 (task expert + top-(k-1)), shared experts with or without a gate (Qwen-MoE),
dense/MoE interleaving through ``moe_layer_freq``.

Typical use::

    routing = TaskRoutingConfig.for_datasets(["asr", "st", "ocr"], num_experts=8)
    block_spec = neko_decoder_block_spec(config, routing)
    model = GPTModel(config, block_spec, vocab_size, max_sequence_length)
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from nemo_neko.compat import megatron as mc
from nemo_neko.layers.grouped_experts import GroupedSequentialMLP
from nemo_neko.layers.rms_norm import RMSNorm
from nemo_neko.layers.sdpa_attention import SDPAttention
from nemo_neko.moe.config import TaskRoutingConfig
from nemo_neko.moe.layer import NeKoMoELayer
from nemo_neko.moe.router import TaskGuidedRouter

ROUTERS: dict[str, Callable] = {
    "task_guided": TaskGuidedRouter,
    "topk": mc.TopKRouter,
}
"""Routers by registered name (``router: task_guided`` in configs)."""

LOCAL_ATTENTION: dict[str, type | None] = {"sdpa": SDPAttention, "megatron": None}
"""``model.local_attention`` -> the core attention of local layers (None: Megatron's own)."""

LOCAL_EXPERTS: dict[str, type | None] = {"grouped": GroupedSequentialMLP, "sequential": None}
"""``model.local_experts`` -> the experts class of local layers (None: ``SequentialMLP``)."""


def resolve_use_te(use_te: bool | None) -> bool:
    """``None`` = Transformer Engine when it imports and CUDA is available."""
    if use_te is None:
        return mc.transformer_engine_available() and torch.cuda.is_available()
    if use_te and not mc.transformer_engine_available():
        raise ValueError("use_te=True but Transformer Engine does not import on this machine")
    return use_te


def router_builder(name: str, routing: TaskRoutingConfig) -> Callable:
    """Callable building the router ``name`` as ``builder(config=..., pg_collection=...)``."""
    if name not in ROUTERS:
        raise ValueError(f"unknown router {name!r}; registered routers: {sorted(ROUTERS)}")
    router_cls = ROUTERS[name]
    if router_cls is TaskGuidedRouter:
        return functools.partial(TaskGuidedRouter, routing=routing)
    return router_cls


def _neko_params(routing: TaskRoutingConfig) -> dict:
    return {"task_routing": routing}


def _choice(table: dict, name: str, what: str):
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; known: {sorted(table)}")
    return table[name]


def neko_moe_spec(
    routing: TaskRoutingConfig,
    num_experts: int,
    *,
    use_te: bool | None = None,
    moe_grouped_gemm: bool = False,
    router: str = "task_guided",
    local_experts: str = "grouped",
):
    """The MoE ``mlp`` spec alone (for a bare layer: tests, benchmarks)."""
    spec = mc.moe_mlp_spec(resolve_use_te(use_te), num_experts, moe_grouped_gemm)
    return mc.swap_moe_module(
        spec,
        NeKoMoELayer,
        router_builder(router, routing),
        _neko_params(routing),
        _choice(LOCAL_EXPERTS, local_experts, "local_experts"),
    )


def neko_layer_spec(
    routing: TaskRoutingConfig,
    num_experts: int,
    *,
    use_te: bool | None = None,
    normalization: str = "RMSNorm",
    qk_layernorm: bool = False,
    moe_grouped_gemm: bool = False,
    router: str = "task_guided",
    local_attention: str = "sdpa",
    local_experts: str = "grouped",
):
    """One GPT decoder layer (attention + NeKo MoE) as a Megatron ``ModuleSpec``."""
    if resolve_use_te(use_te):
        spec = mc.get_gpt_layer_te_spec(
            num_experts=num_experts, moe_grouped_gemm=moe_grouped_gemm, qk_layernorm=qk_layernorm
        )
    else:
        spec = mc.get_gpt_layer_local_spec(
            num_experts=num_experts,
            moe_grouped_gemm=moe_grouped_gemm,
            qk_layernorm=qk_layernorm,
            normalization=normalization,
        )
    spec = mc.swap_moe_in_layer_spec(
        spec,
        NeKoMoELayer,
        router_builder(router, routing),
        _neko_params(routing),
        _choice(LOCAL_EXPERTS, local_experts, "local_experts"),
    )
    return _local_layer(
        spec, normalization, _choice(LOCAL_ATTENTION, local_attention, "local_attention")
    )


def neko_decoder_block_spec(
    config,
    routing: TaskRoutingConfig,
    *,
    use_te: bool | None = None,
    router: str = "task_guided",
    vp_stage: int | None = None,
    local_attention: str = "sdpa",
    local_experts: str = "grouped",
):
    """The decoder block spec for ``config`` (honours ``moe_layer_freq`` and pipeline stages)."""
    routing.validate(config.num_moe_experts, config.moe_router_topk)
    block = mc.get_gpt_decoder_block_spec(
        config,
        use_transformer_engine=resolve_use_te(use_te),
        normalization=config.normalization,
        vp_stage=vp_stage,
    )
    build_router = router_builder(router, routing)
    experts_cls = _choice(LOCAL_EXPERTS, local_experts, "local_experts")
    block.layer_specs = [
        mc.swap_moe_in_layer_spec(
            spec, NeKoMoELayer, build_router, _neko_params(routing), experts_cls
        )
        for spec in block.layer_specs
    ]
    return with_local_layers(block, config.normalization, local_attention)


def dense_decoder_block_spec(
    config,
    *,
    use_te: bool | None = None,
    vp_stage: int | None = None,
    local_attention: str = "sdpa",
):
    """Megatron's decoder block spec for a model without experts, local layers as in the NeKo
    spec."""
    block = mc.get_gpt_decoder_block_spec(
        config,
        use_transformer_engine=resolve_use_te(use_te),
        normalization=config.normalization,
        vp_stage=vp_stage,
    )
    return with_local_layers(block, config.normalization, local_attention)


def _local_layer(spec, normalization: str, attention_cls: type | None):
    if attention_cls is not None:
        spec = mc.swap_core_attention(spec, attention_cls)
    return mc.swap_local_norms(spec, RMSNorm) if normalization == "RMSNorm" else spec


def with_local_layers(block, normalization: str, local_attention: str = "sdpa"):
    """The block's local (non-TE) layers as NeKo builds them: the chosen core attention, and
    with RMSNorm NeKo's :class:`~nemo_neko.layers.RMSNorm` (Gemma's ``1 + w``, sequence
    parallelism). Transformer Engine layers are left as they are."""
    attention_cls = _choice(LOCAL_ATTENTION, local_attention, "local_attention")
    block.layer_specs = [
        _local_layer(spec, normalization, attention_cls) for spec in block.layer_specs
    ]
    if normalization == "RMSNorm":
        mc.swap_block_norm(block, RMSNorm)
    return block
