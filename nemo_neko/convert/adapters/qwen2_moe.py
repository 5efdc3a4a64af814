"""Qwen2-MoE (``Qwen2MoeForCausalLM``: Qwen1.5-MoE-A2.7B, Qwen2-57B-A14B).

Routing: a softmax over all experts, then the top-k, renormalised only with
``norm_topk_prob=true``: Megatron's ``moe_router_pre_softmax=True`` without renormalisation,
or ``False`` (softmax over the top-k logits) with it. A shared expert (``shared_expert``,
``shared_expert_intermediate_size`` wide) is added to every token behind a sigmoid gate
(``shared_expert_gate``, ``[1, hidden]``) -> Megatron's ``mlp.shared_experts`` with
``moe_shared_expert_gate``. Biases on q, k and v.
"""

from __future__ import annotations

from nemo_neko.convert.adapters.base import ConversionError, StateDictAdapter, gated_mlp
from nemo_neko.convert.mapping import Recipe, whole
from nemo_neko.model.config import ModelConfig


class Qwen2MoeAdapter(StateDictAdapter):
    """Qwen2-MoE with every layer sparse (``decoder_sparse_step=1``, no ``mlp_only_layers``)."""

    model_type = "qwen2_moe"
    architecture = "Qwen2MoeForCausalLM"

    def _configure(self, hf: dict) -> dict:
        if hf.get("decoder_sparse_step", 1) != 1 or hf.get("mlp_only_layers"):
            raise ConversionError(
                "Qwen2-MoE with dense layers (decoder_sparse_step > 1 or mlp_only_layers) is not "
                "supported: every layer must be sparse"
            )
        if hf.get("use_sliding_window"):
            raise ConversionError("use_sliding_window=true is not supported")
        if not hf.get("shared_expert_intermediate_size"):
            raise ConversionError("a Qwen2-MoE without a shared expert is not supported")
        if not hf.get("qkv_bias", True):
            raise ConversionError("qkv_bias=false is not supported for Qwen2-MoE")
        return dict(
            num_experts=hf["num_experts"],
            moe_router_topk=hf["num_experts_per_tok"],
            moe_ffn_hidden_size=hf["moe_intermediate_size"],
            moe_shared_expert_intermediate_size=hf["shared_expert_intermediate_size"],
            moe_shared_expert_gate=True,
            moe_router_pre_softmax=not hf.get("norm_topk_prob", False),
            moe_aux_loss_coeff=float(hf.get("router_aux_loss_coef", 0.001)),
            add_qkv_bias=True,
        )

    def _hf_extra(self, model: ModelConfig) -> dict:
        return dict(
            num_experts=model.num_experts,
            num_experts_per_tok=model.moe_router_topk,
            moe_intermediate_size=model.moe_ffn_hidden_size,
            shared_expert_intermediate_size=model.moe_shared_expert_intermediate_size,
            norm_topk_prob=not model.moe_router_pre_softmax,
            router_aux_loss_coef=model.moe_aux_loss_coeff,
            decoder_sparse_step=1,
            mlp_only_layers=[],
            qkv_bias=True,
            use_sliding_window=False,
        )

    def matches(self, model: ModelConfig) -> bool:
        return (
            model.num_experts > 0
            and model.moe_layer_freq == 1
            and model.moe_layers is None
            and bool(model.moe_shared_expert_intermediate_size)
            and model.moe_shared_expert_gate
            and model.add_qkv_bias
            and model.activation == "swiglu"
            and not model.layernorm_zero_centered_gamma
            and not model.embedding_multiplier
        )

    def _mlp(self, model: ModelConfig, i: int) -> list[tuple[str, Recipe]]:
        hf, mg = f"model.layers.{i}.mlp.", f"decoder.layers.{i}.mlp."
        h = model.hidden_size
        out = [(mg + "router.weight", Recipe([whole(hf + "gate.weight", model.num_experts)]))]
        for j in range(model.num_experts):
            e = f"{hf}experts.{j}."
            out += gated_mlp(
                f"{mg}experts.local_experts.{j}.",
                e + "gate_proj.weight",
                e + "up_proj.weight",
                e + "down_proj.weight",
                model.moe_ffn_hidden_size,
                h,
            )
        s = hf + "shared_expert."
        out += gated_mlp(
            mg + "shared_experts.",
            s + "gate_proj.weight",
            s + "up_proj.weight",
            s + "down_proj.weight",
            model.moe_shared_expert_intermediate_size,
            h,
        )
        gate = whole(hf + "shared_expert_gate.weight", 1)
        out.append((mg + "shared_experts.gate_weight", Recipe([gate])))
        return out
