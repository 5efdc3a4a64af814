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
from nemo_neko.layers.rms_norm import RMSNorm
from nemo_neko.moe.config import TaskRoutingConfig
from nemo_neko.moe.layer import NeKoMoELayer
from nemo_neko.moe.router import TaskGuidedRouter

ROUTERS: dict[str, Callable] = {
    "task_guided": TaskGuidedRouter,
    "topk": mc.TopKRouter,
}
"""Routers by registered name (``router: task_guided`` in configs)."""


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


def neko_moe_spec(
    routing: TaskRoutingConfig,
    num_experts: int,
    *,
    use_te: bool | None = None,
    moe_grouped_gemm: bool = False,
    router: str = "task_guided",
):
    """The MoE ``mlp`` spec alone (for a bare layer: tests, benchmarks)."""
    spec = mc.moe_mlp_spec(resolve_use_te(use_te), num_experts, moe_grouped_gemm)
    return mc.swap_moe_module(
        spec, NeKoMoELayer, router_builder(router, routing), _neko_params(routing)
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
        spec, NeKoMoELayer, router_builder(router, routing), _neko_params(routing)
    )
    return mc.swap_local_norms(spec, RMSNorm) if normalization == "RMSNorm" else spec


def neko_decoder_block_spec(
    config,
    routing: TaskRoutingConfig,
    *,
    use_te: bool | None = None,
    router: str = "task_guided",
    vp_stage: int | None = None,
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
    block.layer_specs = [
        mc.swap_moe_in_layer_spec(spec, NeKoMoELayer, build_router, _neko_params(routing))
        for spec in block.layer_specs
    ]
    return with_neko_norms(block, config.normalization)


def dense_decoder_block_spec(config, *, use_te: bool | None = None, vp_stage: int | None = None):
    """Megatron's decoder block spec for a model without experts, norms as in the NeKo spec."""
    block = mc.get_gpt_decoder_block_spec(
        config,
        use_transformer_engine=resolve_use_te(use_te),
        normalization=config.normalization,
        vp_stage=vp_stage,
    )
    return with_neko_norms(block, config.normalization)


def with_neko_norms(block, normalization: str):
    """With RMSNorm and local modules: every norm of the block becomes NeKo's
    :class:`~nemo_neko.layers.RMSNorm` (Gemma's ``1 + w`` gain, sequence parallelism)."""
    if normalization == "RMSNorm":
        block.layer_specs = [mc.swap_local_norms(spec, RMSNorm) for spec in block.layer_specs]
        mc.swap_block_norm(block, RMSNorm)
    return block
