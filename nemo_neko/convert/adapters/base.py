"""What every state-dict adapter shares: the Llama-family layout of a Hugging Face checkpoint.

Mixtral, Qwen2-MoE, Gemma, Mistral and Llama checkpoints name embeddings, attention and norms
alike (``model.embed_tokens``, ``model.layers.{i}.self_attn.{q,k,v,o}_proj``,
``input_layernorm``, ``post_attention_layernorm``, ``model.norm``, ``lm_head``); they differ in
the feed-forward block and in a few config fields. :class:`StateDictAdapter` maps the shared
part and leaves ``_mlp`` (the feed-forward recipes of one layer) and the config particulars to
each architecture.

Megatron names are the state-dict names of the NeKo GPTModel built with the local spec at
TP = PP = EP = 1 (see :mod:`nemo_neko.convert.megatron_io`).
"""

from __future__ import annotations

import math
from typing import ClassVar

from nemo_neko.convert.mapping import Piece, Recipe, padded, qkv_pieces, whole
from nemo_neko.model.config import ModelConfig


class ConversionError(ValueError):
    """A checkpoint, a config or a layout that cannot be converted (the message says why)."""


ACTIVATIONS_FROM_HF = {
    "silu": "swiglu",
    "swish": "swiglu",
    "gelu_pytorch_tanh": "geglu_tanh",
    "gelu_new": "geglu_tanh",
    "gelu": "geglu",
}
"""Hugging Face ``hidden_act`` of a gated MLP -> :data:`nemo_neko.train.model.ACTIVATIONS` name."""
TOKEN_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id")
ACTIVATIONS_TO_HF = {"swiglu": "silu", "geglu_tanh": "gelu_pytorch_tanh", "geglu": "gelu"}


def rope_theta(hf: dict) -> float:
    """The RoPE base of a Hugging Face config (``rope_theta``, or transformers 5's
    ``rope_parameters``); only plain RoPE converts."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    kind = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if kind != "default":
        raise ConversionError(f"RoPE scaling {kind!r} is not supported (plain RoPE only)")
    factor = params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
    if factor != 1.0:
        raise ConversionError(f"partial_rotary_factor={factor} is not supported (1.0 only)")
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    if theta != int(theta):
        raise ConversionError(f"rope_theta={theta} is not an integer (Megatron takes an int base)")
    return theta


def activation(hf: dict, key: str = "hidden_act") -> str:
    name = hf.get(key) or "silu"
    if name not in ACTIVATIONS_FROM_HF:
        raise ConversionError(f"{key}={name!r} is not supported ({sorted(ACTIVATIONS_FROM_HF)})")
    return ACTIVATIONS_FROM_HF[name]


class StateDictAdapter:
    """One Hugging Face architecture: its config and its tensors, both ways.

    Subclasses set :attr:`model_type` / :attr:`architecture` and implement :meth:`_configure`
    (config fields beyond the shared ones), :meth:`_mlp` (feed-forward recipes of layer ``i``),
    :meth:`_hf_extra` (config fields to write) and :meth:`matches` (can this model be written in
    this format).
    """

    model_type: ClassVar[str]
    architecture: ClassVar[str]

    # -- config ---------------------------------------------------------------------------------

    def model_config(self, hf: dict) -> ModelConfig:
        """The :class:`ModelConfig` of a Hugging Face ``config.json`` (as a dict)."""
        if hf.get("attention_bias"):
            raise ConversionError(
                "attention_bias=true (bias on the output projection too) is not supported"
            )
        if hf.get("mlp_bias"):
            raise ConversionError("mlp_bias=true is not supported")
        heads, hidden = hf["num_attention_heads"], hf["hidden_size"]
        fields = dict(
            name=hf.get("model_type", self.model_type),
            num_layers=hf["num_hidden_layers"],
            hidden_size=hidden,
            num_attention_heads=heads,
            num_query_groups=hf.get("num_key_value_heads") or heads,
            kv_channels=hf.get("head_dim") or hidden // heads,
            ffn_hidden_size=hf["intermediate_size"],
            vocab_size=hf["vocab_size"],
            max_position_embeddings=hf.get("max_position_embeddings", 4096),
            rotary_base=rope_theta(hf),
            normalization="RMSNorm",
            layernorm_epsilon=float(hf.get("rms_norm_eps", 1e-6)),
            activation=activation(hf),
            share_embeddings_and_output_weights=bool(hf.get("tie_word_embeddings", False)),
            num_experts=0,
            moe_ffn_hidden_size=hf["intermediate_size"],
        )
        fields.update(self._configure(hf))
        return ModelConfig(**fields)

    def _configure(self, hf: dict) -> dict:
        return {}

    def hf_config(self, model: ModelConfig, vocab_size: int, base: dict | None = None) -> dict:
        """A ``config.json`` for ``model``: ``base`` (the original one, when known) with every
        field the weights depend on overwritten (of another architecture's ``base``, only the
        special token ids are kept)."""
        base = base or {}
        if base.get("model_type") == self.model_type:
            config = dict(base)
        else:  # another architecture (an upcycled model): its special tokens still hold
            config = {k: base[k] for k in TOKEN_FIELDS if k in base}
        config.update(
            architectures=[self.architecture],
            model_type=self.model_type,
            hidden_size=model.hidden_size,
            num_hidden_layers=model.num_layers,
            num_attention_heads=model.num_attention_heads,
            num_key_value_heads=model.query_groups,
            head_dim=model.head_dim,
            intermediate_size=model.ffn_hidden_size,
            vocab_size=vocab_size,
            max_position_embeddings=model.max_position_embeddings,
            rms_norm_eps=model.layernorm_epsilon,
            rope_theta=float(model.rotary_base),
            rope_parameters={"rope_type": "default", "rope_theta": float(model.rotary_base)},
            hidden_act=ACTIVATIONS_TO_HF[model.activation],
            tie_word_embeddings=model.share_embeddings_and_output_weights,
            dtype=model.params_dtype,
            torch_dtype=model.params_dtype,
        )
        config.update(self._hf_extra(model))
        return config

    def _hf_extra(self, model: ModelConfig) -> dict:
        return {}

    def matches(self, model: ModelConfig) -> bool:
        """Whether ``model`` can be written exactly in this format."""
        raise NotImplementedError

    # -- tensors --------------------------------------------------------------------------------

    def recipes(self, model: ModelConfig, padded_vocab: int) -> list[tuple[str, Recipe]]:
        """``(Megatron parameter, recipe)`` for every parameter of the model (import order).

        A parameter may appear twice only in export-only adapters (one parameter written as two
        Hugging Face tensors)."""
        vocab = model.vocab_size
        out = [("embedding.word_embeddings.weight", self._embedding(model, padded_vocab))]
        for i in range(model.num_layers):
            out += self._attention(model, i)
            out += self._mlp(model, i)
        h = model.hidden_size
        out.append(("decoder.final_layernorm.weight", Recipe([self._norm("model.norm.weight", h)])))
        if not model.share_embeddings_and_output_weights:
            out.append(
                ("output_layer.weight", Recipe(padded("lm_head.weight", vocab, padded_vocab)))
            )
        return out

    def _embedding(self, model: ModelConfig, padded_vocab: int) -> Recipe:
        return Recipe(padded("model.embed_tokens.weight", model.vocab_size, padded_vocab))

    def _norm(self, name: str, rows: int) -> Piece:
        return whole(name, rows)

    def _attention(self, model: ModelConfig, i: int) -> list[tuple[str, Recipe]]:
        hf, mg = f"model.layers.{i}.", f"decoder.layers.{i}."
        a = hf + "self_attn."
        shape = (model.num_attention_heads, model.query_groups, model.head_dim)
        h = model.hidden_size
        out = [
            (mg + "input_layernorm.weight", Recipe([self._norm(hf + "input_layernorm.weight", h)])),
            (
                mg + "self_attention.linear_qkv.weight",
                Recipe(
                    qkv_pieces(
                        a + "q_proj.weight", a + "k_proj.weight", a + "v_proj.weight", *shape
                    )
                ),
            ),
            (mg + "self_attention.linear_proj.weight", Recipe([whole(a + "o_proj.weight", h)])),
            (
                mg + "pre_mlp_layernorm.weight",
                Recipe([self._norm(hf + "post_attention_layernorm.weight", h)]),
            ),
        ]
        if model.add_qkv_bias:
            out.insert(
                2,
                (
                    mg + "self_attention.linear_qkv.bias",
                    Recipe(
                        qkv_pieces(a + "q_proj.bias", a + "k_proj.bias", a + "v_proj.bias", *shape)
                    ),
                ),
            )
        return out

    def _mlp(self, model: ModelConfig, i: int) -> list[tuple[str, Recipe]]:
        raise NotImplementedError


def gated_mlp(
    megatron_prefix: str, gate: str, up: str, down: str, ffn: int, hidden: int
) -> list[tuple[str, Recipe]]:
    """A gated MLP of width ``ffn``: ``linear_fc1 = [gate; up]``, ``linear_fc2 = down``."""
    return [
        (megatron_prefix + "linear_fc1.weight", Recipe([whole(gate, ffn), whole(up, ffn)])),
        (megatron_prefix + "linear_fc2.weight", Recipe([whole(down, hidden)])),
    ]


def dense_llama_mlp(model: ModelConfig, i: int) -> list[tuple[str, Recipe]]:
    """Layer ``i``'s dense Llama-style MLP (``mlp.gate_proj/up_proj/down_proj``: Gemma, Mistral)."""
    p = f"model.layers.{i}.mlp."
    return gated_mlp(
        f"decoder.layers.{i}.mlp.",
        p + "gate_proj.weight",
        p + "up_proj.weight",
        p + "down_proj.weight",
        model.ffn_hidden_size,
        model.hidden_size,
    )


def sqrt_hidden(model: ModelConfig) -> float:
    return math.sqrt(model.hidden_size)
