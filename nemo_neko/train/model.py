"""The NeKo model: a typed config, its parameter counts, and the Megatron-Core GPTModel it builds.

:class:`ModelConfig` describes a Mixtral-style decoder (attention + MoE FFN blocks) in the terms
of the published Hugging Face configs (hidden size, layers, heads, KV heads, head dim, FFN sizes,
vocab, RoPE base, norm epsilon, activation, tied embeddings, Gemma's (1+w) RMSNorm, QKV bias).
:meth:`ModelConfig.num_params` counts total and active parameters from the config alone, without
building anything; :func:`build_model` builds the model chunks of this pipeline rank with NeKo's
MoE layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from nemo_neko.layout import ParallelLayout

ACTIVATIONS = {
    "swiglu": ("silu", True),
    "geglu": ("gelu", True),
    "geglu_tanh": ("gelu_tanh", True),
    "gelu": ("gelu", False),
}
"""activation name -> (function, gated linear unit); ``gelu_tanh`` is the tanh-approximated GELU
(Gemma's ``gelu_pytorch_tanh``), the others are ``torch.nn.functional`` functions."""


def activation_function(name: str):
    """The callable for an :data:`ACTIVATIONS` function name."""
    import functools

    import torch.nn.functional as F

    if name == "gelu_tanh":
        return functools.partial(F.gelu, approximate="tanh")
    return getattr(F, name)


@dataclass
class ModelConfig:
    """A decoder-only MoE transformer (Mixtral, Gemma-MoE, Qwen-MoE, tiny)."""

    name: str = "tiny"
    """Model name (logs, checkpoints)."""
    num_layers: int = 4
    hidden_size: int = 256
    num_attention_heads: int = 4
    num_query_groups: int | None = None
    """Key/value heads (grouped-query attention); None = as many as attention heads."""
    kv_channels: int | None = None
    """Head dimension; None = hidden_size / num_attention_heads."""
    ffn_hidden_size: int = 1024
    """Intermediate size of dense FFN layers (layers without experts)."""
    num_experts: int = 8
    """Experts per MoE layer; 0 = a dense model (an imported dense checkpoint before upcycling)."""
    moe_ffn_hidden_size: int = 512
    """Intermediate size of each expert."""
    moe_router_topk: int = 2
    moe_layer_freq: int = 1
    """An MoE layer every N layers (1 = all layers)."""
    moe_shared_expert_intermediate_size: int | None = None
    """Shared expert intermediate size (Qwen-MoE); None = no shared expert."""
    moe_shared_expert_gate: bool = False
    """Sigmoid gate on the shared expert output (Qwen-MoE)."""
    moe_router_pre_softmax: bool = False
    """Softmax over all experts before top-k (Qwen: no renormalisation); Mixtral: False."""
    moe_aux_loss_coeff: float = 0.01
    moe_router_load_balancing_type: str = "aux_loss"
    moe_z_loss_coeff: float | None = None
    moe_token_dispatcher_type: str = "alltoall"
    moe_expert_capacity_factor: float | None = None
    vocab_size: int | None = None
    """None = the tokenizer's vocabulary size (padded, see ``make_vocab_size_divisible_by``)."""
    make_vocab_size_divisible_by: int = 128
    max_position_embeddings: int = 4096
    rotary_base: float = 10000.0
    normalization: str = "RMSNorm"
    layernorm_epsilon: float = 1e-5
    layernorm_zero_centered_gamma: bool = False
    """Gemma's RMSNorm scales by (1 + w)."""
    activation: str = "swiglu"
    """swiglu (Mixtral, Qwen), geglu_tanh (Gemma), geglu, gelu."""
    add_qkv_bias: bool = False
    """Bias on the QKV projection (Qwen)."""
    qk_layernorm: bool = False
    share_embeddings_and_output_weights: bool = False
    """Tied input/output embeddings (Gemma)."""
    embedding_multiplier: float | None = None
    """Scale the input embeddings (Gemma: sqrt(hidden_size)); None = no scaling."""
    init_method_std: float = 0.02
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    params_dtype: str = "float32"
    """float32 or bfloat16 (bf16 mixed precision on GPU)."""
    transformer_impl: str = "auto"
    """auto (Transformer Engine where it runs), local, transformer_engine."""
    recompute_granularity: str | None = None
    recompute_modules: list[str] = field(default_factory=list)
    parallel: ParallelLayout = field(default_factory=ParallelLayout)
    """Default parallel layout for this model size."""

    # -- derived ---------------------------------------------------------------------------------

    @property
    def head_dim(self) -> int:
        return self.kv_channels or self.hidden_size // self.num_attention_heads

    @property
    def query_groups(self) -> int:
        return self.num_query_groups or self.num_attention_heads

    def padded_vocab_size(self, tokenizer_vocab: int | None = None) -> int:
        """Vocabulary rounded up to ``make_vocab_size_divisible_by * TP`` (Megatron's rule)."""
        vocab = self.vocab_size or tokenizer_vocab
        if vocab is None:
            raise ValueError(f"model {self.name!r}: vocab_size unset and no tokenizer given")
        multiple = self.make_vocab_size_divisible_by * self.parallel.tensor
        return int(math.ceil(vocab / multiple) * multiple)

    def is_moe_layer(self, index: int) -> bool:
        return self.num_experts > 0 and index % self.moe_layer_freq == 0

    def num_params(
        self, tokenizer_vocab: int | None = None, padded: bool = False
    ) -> dict[str, int]:
        """Total and active (per token) parameter counts, from the config alone.

        Counts what the Megatron model holds: attention (QKV with its optional bias, output
        projection, optional QK norms), two norms per layer, the router, the experts (all of them
        in ``total``, ``moe_router_topk`` in ``active``), the shared expert and its gate, dense
        FFNs in non-MoE layers, embeddings, the output layer unless tied, the final norm.
        Mixtral 8x7B: 46.70B / 12.88B; 8x22B: 140.63B / 39.16B; Qwen1.5-MoE-A2.7B: 14.32B /
        2.69B (the published 46.7B / 12.9B, 141B / 39B, 14.3B / 2.7B).

        Args:
            tokenizer_vocab: vocabulary size when ``vocab_size`` is unset.
            padded: ``False`` counts the vocabulary as given (what Hugging Face reports), ``True``
                Megatron's padded vocabulary (what the built model holds).

        Returns:
            ``{"total": ..., "active": ..., "embedding": ...}`` (``embedding``: the input
            embedding table alone).
        """
        vocab = (
            self.padded_vocab_size(tokenizer_vocab)
            if padded
            else (self.vocab_size or tokenizer_vocab)
        )
        h, heads, groups, d = (
            self.hidden_size,
            self.num_attention_heads,
            self.query_groups,
            self.head_dim,
        )
        gated = ACTIVATIONS[self.activation][1]
        attention = h * heads * d + 2 * h * groups * d + heads * d * h
        if self.add_qkv_bias:
            attention += heads * d + 2 * groups * d
        if self.qk_layernorm:
            attention += 2 * d
        norms = 2 * h  # input and pre-MLP norms

        def mlp(intermediate: int) -> int:
            return h * intermediate * (2 if gated else 1) + intermediate * h

        expert = mlp(self.moe_ffn_hidden_size)
        shared = 0
        if self.moe_shared_expert_intermediate_size:
            shared = mlp(self.moe_shared_expert_intermediate_size) + (
                h if self.moe_shared_expert_gate else 0
            )
        router = h * self.num_experts
        total = active = 0
        for index in range(self.num_layers):
            if self.is_moe_layer(index):
                total += attention + norms + router + self.num_experts * expert + shared
                active += attention + norms + router + self.moe_router_topk * expert + shared
            else:
                total += attention + norms + mlp(self.ffn_hidden_size)
                active += attention + norms + mlp(self.ffn_hidden_size)
        embedding = vocab * h
        output = 0 if self.share_embeddings_and_output_weights else vocab * h
        final_norm = h
        extra = embedding + output + final_norm
        return {"total": total + extra, "active": active + extra, "embedding": embedding}


def transformer_config(model: ModelConfig, layout: ParallelLayout | None = None, **overrides):
    """Megatron ``TransformerConfig`` for ``model`` under ``layout`` (default: the model's own)."""
    import torch

    from nemo_neko.compat import megatron as mc

    layout = layout or model.parallel
    if model.activation not in ACTIVATIONS:
        raise ValueError(f"model {model.name!r}: activation must be one of {sorted(ACTIVATIONS)}")
    function_name, gated = ACTIVATIONS[model.activation]
    activation = activation_function(function_name)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[model.params_dtype]
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
        moe_layer_freq=model.moe_layer_freq,
        moe_shared_expert_intermediate_size=model.moe_shared_expert_intermediate_size,
        moe_shared_expert_gate=model.moe_shared_expert_gate,
        moe_router_pre_softmax=model.moe_router_pre_softmax,
        moe_aux_loss_coeff=model.moe_aux_loss_coeff,
        moe_router_load_balancing_type=model.moe_router_load_balancing_type,
        moe_z_loss_coeff=model.moe_z_loss_coeff,
        moe_token_dispatcher_type=model.moe_token_dispatcher_type,
        moe_expert_capacity_factor=model.moe_expert_capacity_factor,
        moe_router_dtype="fp32",
        normalization=model.normalization,
        layernorm_epsilon=model.layernorm_epsilon,
        layernorm_zero_centered_gamma=model.layernorm_zero_centered_gamma,
        activation_func=activation,
        gated_linear_unit=gated,
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
        recompute_granularity=model.recompute_granularity,
    )
    if model.recompute_modules:
        settings["recompute_modules"] = list(model.recompute_modules)
    settings.update(overrides)
    return mc.TransformerConfig(**settings)


def build_model(
    model: ModelConfig,
    config,
    routing,
    vocab_size: int,
    max_sequence_length: int,
    *,
    use_te: bool | None = None,
) -> list:
    """The model chunks this pipeline rank holds (one, or ``virtual_pipeline`` with interleaving).

    Args:
        model: the model description.
        config: its Megatron ``TransformerConfig`` (:func:`transformer_config`).
        routing: ``TaskRoutingConfig`` for the NeKo routers (unused by a dense model).
        vocab_size: padded vocabulary size.
        max_sequence_length: longest sequence the position embeddings must cover.
        use_te: Transformer Engine layers (None = where they run).
    """
    from nemo_neko.compat import megatron as mc
    from nemo_neko.moe.spec import neko_decoder_block_spec

    if model.transformer_impl == "local":
        use_te = False
    elif model.transformer_impl == "transformer_engine":
        use_te = True
    ps = mc.parallel_state
    vp_size = config.virtual_pipeline_model_parallel_size
    chunks = []
    for vp_stage in range(vp_size or 1):
        stage = vp_stage if vp_size else None
        pre = ps.is_pipeline_first_stage(ignore_virtual=False, vp_stage=stage)
        post = ps.is_pipeline_last_stage(ignore_virtual=False, vp_stage=stage)
        if model.num_experts:
            spec = neko_decoder_block_spec(config, routing, use_te=use_te, vp_stage=stage)
        else:
            spec = _dense_block_spec(config, use_te, stage)
        gpt = mc.GPTModel(
            config=config,
            transformer_layer_spec=spec,
            vocab_size=vocab_size,
            max_sequence_length=max_sequence_length,
            pre_process=pre,
            post_process=post,
            share_embeddings_and_output_weights=model.share_embeddings_and_output_weights,
            position_embedding_type="rope",
            rotary_base=int(model.rotary_base),
            vp_stage=stage,
        )
        if model.embedding_multiplier and pre:
            _scale_embeddings(gpt, model.embedding_multiplier)
        chunks.append(gpt)
    return chunks


def _dense_block_spec(config, use_te: bool | None, vp_stage: int | None):
    """Megatron's decoder block spec without experts (norms as in the NeKo spec)."""
    from nemo_neko.compat import megatron as mc
    from nemo_neko.layers.rms_norm import RMSNorm
    from nemo_neko.moe.spec import resolve_use_te

    block = mc.get_gpt_decoder_block_spec(
        config,
        use_transformer_engine=resolve_use_te(use_te),
        normalization=config.normalization,
        vp_stage=vp_stage,
    )
    if config.normalization == "RMSNorm":
        block.layer_specs = [mc.swap_local_norms(spec, RMSNorm) for spec in block.layer_specs]
        mc.swap_block_norm(block, RMSNorm)
    return block


def _scale_embeddings(gpt, multiplier: float) -> None:
    """Multiply the word embeddings' output by ``multiplier`` (Gemma's sqrt(hidden) scaling)."""

    def scale(module, inputs, output):
        return output * multiplier

    gpt.embedding.word_embeddings.register_forward_hook(scale)
