"""Gemma (``GemmaForCausalLM``, Gemma-2B and 7B): dense, and the start of Gemma 8x2B.

Gemma's particulars, all carried by :class:`ModelConfig`: RMSNorm scaled by ``(1 + w)`` (HF
stores ``w``, which is Megatron's ``layernorm_zero_centered_gamma`` weight as it is), input
embeddings multiplied by ``sqrt(hidden)``, tied input/output embeddings (no ``lm_head``
tensor), GeGLU with the tanh GELU, a head dimension that is not ``hidden / heads`` (256).
"""

from __future__ import annotations

from nemo_neko.convert.adapters.base import (
    StateDictAdapter,
    activation,
    dense_llama_mlp,
    sqrt_hidden,
)
from nemo_neko.convert.mapping import Recipe
from nemo_neko.model.config import ModelConfig


class GemmaAdapter(StateDictAdapter):
    """Gemma (1st generation)."""

    model_type = "gemma"
    architecture = "GemmaForCausalLM"

    def _configure(self, hf: dict) -> dict:
        # transformers reads the legacy "gelu" of the official configs as the tanh GELU
        act = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
        act = "gelu_pytorch_tanh" if act == "gelu" else act
        return dict(
            activation=activation({"hidden_act": act}),
            layernorm_zero_centered_gamma=True,
            embedding_multiplier=hf["hidden_size"] ** 0.5,
            share_embeddings_and_output_weights=bool(hf.get("tie_word_embeddings", True)),
        )

    def _hf_extra(self, model: ModelConfig) -> dict:
        return {"hidden_activation": None, "attention_bias": False}

    def matches(self, model: ModelConfig) -> bool:
        return (
            model.num_experts == 0
            and model.layernorm_zero_centered_gamma
            and model.embedding_multiplier is not None
            and abs(model.embedding_multiplier - sqrt_hidden(model)) < 1e-6
            and not model.add_qkv_bias
        )

    def _mlp(self, model: ModelConfig, i: int) -> list[tuple[str, Recipe]]:
        return dense_llama_mlp(model, i)
