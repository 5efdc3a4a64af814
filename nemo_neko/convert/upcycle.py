"""Sparse upcycling: a dense decoder becomes an N-expert MoE (how NeKo's Gemma 8x2B is built).

Every layer's dense MLP is copied into each of the N experts (optionally with independent
Gaussian noise, so the experts can drift apart from the start); a new router
(``[N, hidden]``) is initialised from a normal distribution or with zeros. Attention, norms and
embeddings are kept. With identical experts and top-k weights that sum to one (a softmax over
the top-k logits, ``moe_router_pre_softmax=False``), the upcycled model computes exactly what
the dense one did, whatever the router: ``sum_k w_k * MLP(x) = MLP(x)``.

Only recipes change (:mod:`nemo_neko.convert.mapping`): the experts' pieces are the dense
MLP's pieces, so nothing is copied in memory beyond the chunk being written.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from nemo_neko.convert.adapters.base import ConversionError
from nemo_neko.convert.mapping import Fill, Recipe
from nemo_neko.model.config import ModelConfig

ROUTER_INITS = ("normal", "zeros")

_DENSE_MLP = re.compile(r"decoder\.layers\.(\d+)\.mlp\.(linear_fc[12]\.weight)")


@dataclass
class UpcycleConfig:
    """How a dense model becomes an MoE."""

    num_experts: int = 8
    topk: int = 2
    router_init: str = "normal"
    """``normal`` (mean 0, ``router_std``) or ``zeros``."""
    router_std: float = 0.02
    noise: float = 0.0
    """Standard deviation of Gaussian noise added to each expert's copy (0 = exact copies)."""
    seed: int = 0
    layers: list[int] | None = None
    """The 0-based layers to upcycle (the others keep their dense MLP); None = every layer."""

    def validate(self) -> None:
        if self.num_experts < 1:
            raise ConversionError(f"num_experts must be >= 1, got {self.num_experts}")
        if not 1 <= self.topk <= self.num_experts:
            raise ConversionError(
                f"topk={self.topk} must be in [1, num_experts={self.num_experts}]"
            )
        if self.router_init not in ROUTER_INITS:
            raise ConversionError(
                f"router_init must be one of {ROUTER_INITS}, got {self.router_init!r}"
            )
        if self.router_std < 0 or self.noise < 0:
            raise ConversionError("router_std and noise must be >= 0")
        if self.layers is not None and not self.layers:
            raise ConversionError("layers: name at least one layer to upcycle (or None for all)")


def upcycled_model(dense: ModelConfig, up: UpcycleConfig) -> ModelConfig:
    """The MoE :class:`ModelConfig` of ``dense`` upcycled: experts as wide as the dense FFN,
    an MoE in every layer (or in ``up.layers``), top-k weights renormalised (sum to one)."""
    up.validate()
    if dense.num_experts:
        raise ConversionError(f"model {dense.name!r} already has {dense.num_experts} experts")
    outside = [i for i in up.layers or [] if not 0 <= i < dense.num_layers]
    if outside:
        raise ConversionError(f"layers {outside} are outside the model's {dense.num_layers} layers")
    return dataclasses.replace(
        dense,
        name=f"{dense.name}-{up.num_experts}x",
        num_experts=up.num_experts,
        moe_router_topk=up.topk,
        moe_ffn_hidden_size=dense.ffn_hidden_size,
        moe_layer_freq=1,
        moe_layers=sorted(up.layers) if up.layers is not None else None,
        moe_router_pre_softmax=False,
        moe_shared_expert_intermediate_size=None,
    )


def upcycle_recipes(
    dense: list[tuple[str, Recipe]], model: ModelConfig, up: UpcycleConfig
) -> list[tuple[str, Recipe]]:
    """The MoE model's recipes from the dense model's: ``decoder.layers.{i}.mlp.linear_fc{1,2}``
    becomes ``mlp.experts.local_experts.{j}.linear_fc{1,2}`` for every expert ``j``, plus
    ``mlp.router.weight``."""
    std = up.router_std if up.router_init == "normal" else 0.0
    out: list[tuple[str, Recipe]] = []
    for param, recipe in dense:
        match = _DENSE_MLP.fullmatch(param)
        if match is None:
            out.append((param, recipe))
            continue
        layer, leaf = match.groups()
        if not model.is_moe_layer(int(layer)):  # a layer left dense
            out.append((param, recipe))
            continue
        prefix = f"decoder.layers.{layer}.mlp."
        if leaf == "linear_fc1.weight":
            out.append((prefix + "router.weight", Recipe([Fill(model.num_experts, std, up.seed)])))
        for j in range(model.num_experts):
            expert = Recipe(recipe.pieces, noise_std=up.noise, noise_seed=up.seed)
            out.append((f"{prefix}experts.local_experts.{j}.{leaf}", expert))
    return out
