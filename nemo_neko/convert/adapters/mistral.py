"""Dense Mistral and Llama checkpoints (``MistralForCausalLM``, ``LlamaForCausalLM``): the dense
models sparse upcycling starts from. Feed-forward: ``mlp.{gate,up,down}_proj`` (SwiGLU)."""

from __future__ import annotations

import logging

from nemo_neko.convert.adapters.base import StateDictAdapter, dense_llama_mlp
from nemo_neko.convert.mapping import Recipe
from nemo_neko.model.config import ModelConfig

log = logging.getLogger(__name__)


class MistralAdapter(StateDictAdapter):
    """Mistral-7B style dense decoder."""

    model_type = "mistral"
    architecture = "MistralForCausalLM"

    def _configure(self, hf: dict) -> dict:
        window = hf.get("sliding_window")
        if window and window < hf.get("max_position_embeddings", 0):
            log.warning(
                "sliding_window=%s is not converted: attention is full-length in Megatron "
                "(identical up to %s tokens)",
                window,
                window,
            )
        return {}

    def _hf_extra(self, model: ModelConfig) -> dict:
        return {"sliding_window": None}

    def matches(self, model: ModelConfig) -> bool:
        return (
            model.num_experts == 0
            and model.activation == "swiglu"
            and not model.layernorm_zero_centered_gamma
            and not model.embedding_multiplier
            and not model.add_qkv_bias
        )

    def _mlp(self, model: ModelConfig, i: int) -> list[tuple[str, Recipe]]:
        return dense_llama_mlp(model, i)


class LlamaAdapter(MistralAdapter):
    """Llama-2/3 style dense decoder (plain RoPE only)."""

    model_type = "llama"
    architecture = "LlamaForCausalLM"

    def _hf_extra(self, model: ModelConfig) -> dict:
        return {"attention_bias": False, "mlp_bias": False}
