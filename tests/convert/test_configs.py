"""The published Hugging Face configs (transformers' config classes at the released sizes) become
the shipped ``conf/model`` configs, field for field; routing and activation semantics map."""

import pytest

from nemo_neko.convert.adapters import adapter_for_hf, adapter_for_model
from nemo_neko.convert.importer import compare_models, conf_model
from nemo_neko.convert.upcycle import UpcycleConfig, upcycled_model


def _published(name: str) -> dict:
    from transformers import GemmaConfig, MixtralConfig, Qwen2MoeConfig

    if name == "8x7b":  # mistralai/Mixtral-8x7B-v0.1 (transformers' defaults)
        return MixtralConfig().to_dict()
    if name == "8x22b":  # mistralai/Mixtral-8x22B-v0.1
        return MixtralConfig(
            vocab_size=32768,
            hidden_size=6144,
            intermediate_size=16384,
            num_hidden_layers=56,
            num_attention_heads=48,
            num_key_value_heads=8,
            max_position_embeddings=65536,
            rope_theta=1e6,
        ).to_dict()
    if name == "qwen_moe":  # Qwen/Qwen1.5-MoE-A2.7B (transformers' defaults)
        return Qwen2MoeConfig(max_position_embeddings=8192, rope_theta=1e6).to_dict()
    if name == "8x2b":  # google/gemma-2b, as released (legacy hidden_act "gelu")
        return GemmaConfig(
            vocab_size=256000,
            hidden_size=2048,
            intermediate_size=16384,
            num_hidden_layers=18,
            num_attention_heads=8,
            num_key_value_heads=1,
            head_dim=256,
            hidden_act="gelu",
        ).to_dict()
    raise ValueError(name)


@pytest.mark.parametrize("name", ["8x7b", "8x22b", "qwen_moe", "8x2b"])
def test_published_configs_match_the_shipped_models(name):
    hf = _published(name)
    model = adapter_for_hf(hf).model_config(hf)
    if name == "8x2b":
        model = upcycled_model(model, UpcycleConfig(num_experts=8, topk=2))
    assert compare_models(model, conf_model(name)) == []


def test_routing_and_activation_semantics():
    qwen = _published("qwen_moe")
    assert qwen["norm_topk_prob"] is False
    assert adapter_for_hf(qwen).model_config(qwen).moe_router_pre_softmax is True
    renormalised = dict(qwen, norm_topk_prob=True)
    assert adapter_for_hf(renormalised).model_config(renormalised).moe_router_pre_softmax is False
    mixtral = adapter_for_hf(_published("8x7b")).model_config(_published("8x7b"))
    assert mixtral.moe_router_pre_softmax is False and mixtral.activation == "swiglu"
    gemma = adapter_for_hf(_published("8x2b")).model_config(_published("8x2b"))
    assert gemma.activation == "geglu_tanh" and gemma.layernorm_zero_centered_gamma
    assert gemma.embedding_multiplier == pytest.approx(2048**0.5) and gemma.kv_channels == 256
    assert adapter_for_model(gemma).model_type == "gemma"
    upcycled = upcycled_model(gemma, UpcycleConfig())
    assert adapter_for_model(upcycled).architecture == "MixtralForCausalLM"
