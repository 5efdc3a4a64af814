"""Mixtral (``MixtralForCausalLM``: 8x7B, 8x22B), and Gemma-style MoE models written as Mixtral.

Routing: a softmax over all experts, the top-k kept and renormalised, which equals a softmax over
the top-k logits: Megatron's ``moe_router_pre_softmax=False``. Experts: ``w1`` (gate), ``w3``
(up), ``w2`` (down) -> ``linear_fc1 = [w1; w3]``, ``linear_fc2 = w2``.

There is no Hugging Face Gemma-MoE class; an upcycled Gemma (8x2B) is exported as Mixtral with
Gemma's particulars folded into the weights, so transformers / vLLM / TensorRT-LLM serve it as a
Mixtral: norm gains written as ``1 + w``, the input embeddings untied and pre-multiplied by
``sqrt(hidden)``, ``hidden_act = gelu_pytorch_tanh``, ``head_dim`` set. Exact in fp32; in bf16
the folded gains and embeddings are rounded once more (to bf16) than in the trained model.
"""

from __future__ import annotations

from nemo_neko.convert.adapters.base import ConversionError, StateDictAdapter, sqrt_hidden
from nemo_neko.convert.mapping import Recipe, Rows, padded, whole
from nemo_neko.model.config import ModelConfig


class MixtralAdapter(StateDictAdapter):
    """Mixtral sparse MoE: every layer has ``num_local_experts`` SwiGLU experts, top-k."""

    model_type = "mixtral"
    architecture = "MixtralForCausalLM"

    def _configure(self, hf: dict) -> dict:
        return dict(
            num_experts=hf["num_local_experts"],
            moe_router_topk=hf["num_experts_per_tok"],
            moe_ffn_hidden_size=hf["intermediate_size"],
            moe_router_pre_softmax=False,
            moe_aux_loss_coeff=float(hf.get("router_aux_loss_coef", 0.01)),
        )

    def _hf_extra(self, model: ModelConfig) -> dict:
        return dict(
            intermediate_size=model.moe_ffn_hidden_size,
            num_local_experts=model.num_experts,
            num_experts_per_tok=model.moe_router_topk,
            router_aux_loss_coef=model.moe_aux_loss_coeff,
            sliding_window=None,
        )

    def matches(self, model: ModelConfig) -> bool:
        return (
            model.num_experts > 0
            and model.moe_layer_freq == 1
            and model.moe_layers is None
            and not model.moe_shared_expert_intermediate_size
            and not model.moe_router_pre_softmax
            and not model.add_qkv_bias
            and not model.layernorm_zero_centered_gamma
            and not model.embedding_multiplier
        )

    def _mlp(self, model: ModelConfig, i: int) -> list[tuple[str, Recipe]]:
        if not model.is_moe_layer(i):
            raise ConversionError(f"layer {i} is dense: Mixtral has experts in every layer")
        hf, mg = f"model.layers.{i}.block_sparse_moe.", f"decoder.layers.{i}.mlp."
        ffn, h = model.moe_ffn_hidden_size, model.hidden_size
        out = [(mg + "router.weight", Recipe([whole(hf + "gate.weight", model.num_experts)]))]
        for j in range(model.num_experts):
            e, m = f"{hf}experts.{j}.", f"{mg}experts.local_experts.{j}."
            out += [
                (
                    m + "linear_fc1.weight",
                    Recipe([whole(e + "w1.weight", ffn), whole(e + "w3.weight", ffn)]),
                ),
                (m + "linear_fc2.weight", Recipe([whole(e + "w2.weight", h)])),
            ]
        return out


class GemmaMoeAsMixtralAdapter(MixtralAdapter):
    """Export-only: a Gemma-style MoE (upcycled Gemma) written as an equivalent Mixtral."""

    def _configure(self, hf: dict) -> dict:
        raise ConversionError("export only: a Gemma-MoE written as Mixtral imports as Mixtral")

    def _hf_extra(self, model: ModelConfig) -> dict:
        return {**super()._hf_extra(model), "tie_word_embeddings": False}

    def matches(self, model: ModelConfig) -> bool:
        return (
            model.num_experts > 0
            and model.moe_layer_freq == 1
            and model.moe_layers is None
            and not model.moe_shared_expert_intermediate_size
            and not model.moe_router_pre_softmax
            and not model.add_qkv_bias
            and model.layernorm_zero_centered_gamma
            and model.embedding_multiplier is not None
            and abs(model.embedding_multiplier - sqrt_hidden(model)) < 1e-6
        )

    def recipes(self, model: ModelConfig, padded_vocab: int) -> list[tuple[str, Recipe]]:
        out = super().recipes(model, padded_vocab)
        if model.share_embeddings_and_output_weights:  # untie: lm_head is the plain embedding
            out.append(
                (
                    "embedding.word_embeddings.weight",
                    Recipe(padded("lm_head.weight", model.vocab_size, padded_vocab)),
                )
            )
        return out

    def _embedding(self, model: ModelConfig, padded_vocab: int) -> Recipe:
        scale = model.embedding_multiplier
        return Recipe(
            padded("model.embed_tokens.weight", model.vocab_size, padded_vocab, scale=scale)
        )

    def _norm(self, name: str, rows: int) -> Rows:
        return Rows(name, 0, rows, shift=1.0)
