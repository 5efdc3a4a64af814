"""The NeKo model description: a typed config and its parameter counts, from the config alone.

:class:`ModelConfig` describes a Mixtral-style decoder (attention + MoE FFN blocks) in the terms
of the published Hugging Face configs (hidden size, layers, heads, KV heads, head dim, FFN sizes,
vocab, RoPE base, norm epsilon, activation, tied embeddings, Gemma's (1+w) RMSNorm, QKV bias).
:meth:`ModelConfig.num_params` counts total and active parameters without building anything;
:meth:`ModelConfig.build` builds the Megatron-Core model (:mod:`nemo_neko.model.build`).

Every choice is a :class:`~enum.StrEnum` that validates itself: a YAML value outside the enum is
an error naming the key when the config is loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from nemo_neko.parallel.layout import ParallelLayout


class Activation(StrEnum):
    """The expert / FFN activation (``model.activation``)."""

    swiglu = "swiglu"
    """SiLU-gated linear unit (Mixtral, Qwen, Llama)."""
    geglu = "geglu"
    """GELU-gated linear unit."""
    geglu_tanh = "geglu_tanh"
    """tanh-approximated GELU-gated linear unit (Gemma's ``gelu_pytorch_tanh``)."""
    gelu = "gelu"
    """plain GELU MLP."""

    @property
    def gated(self) -> bool:
        """A gated linear unit (``linear_fc1`` holds the gate and the up projection)."""
        return self is not Activation.gelu

    def function(self):
        """The elementwise activation callable (``torch.nn.functional``)."""
        import functools

        import torch.nn.functional as F

        if self is Activation.swiglu:
            return F.silu
        if self is Activation.geglu_tanh:
            return functools.partial(F.gelu, approximate="tanh")
        return F.gelu


class Normalization(StrEnum):
    """The norm layers (``model.normalization``), Megatron's names."""

    RMSNorm = "RMSNorm"
    LayerNorm = "LayerNorm"


class ParamsDtype(StrEnum):
    """Parameter dtype (``model.params_dtype``): fp32, or bf16 mixed precision."""

    float32 = "float32"
    bfloat16 = "bfloat16"

    def torch_dtype(self):
        import torch

        return {ParamsDtype.float32: torch.float32, ParamsDtype.bfloat16: torch.bfloat16}[self]


class TransformerImpl(StrEnum):
    """Layer implementation (``model.transformer_impl``)."""

    auto = "auto"
    """Transformer Engine where it runs (CUDA and TE importable), local modules otherwise."""
    local = "local"
    transformer_engine = "transformer_engine"

    def use_te(self) -> bool | None:
        """``None`` = decide at build time, else whether to use Transformer Engine layers."""
        return {TransformerImpl.auto: None, TransformerImpl.local: False}.get(self, True)


class LocalAttention(StrEnum):
    """Core attention of the local (non-Transformer-Engine) layers (``model.local_attention``)."""

    sdpa = "sdpa"
    """PyTorch's fused ``scaled_dot_product_attention`` (:mod:`nemo_neko.layers.sdpa_attention`)."""
    megatron = "megatron"
    """Megatron's unfused ``DotProductAttention`` (baddbmm, masked softmax, bmm)."""


class LocalExperts(StrEnum):
    """How the local (non-Transformer-Engine) experts compute (``model.local_experts``)."""

    grouped = "grouped"
    """Two grouped GEMMs over all experts (:mod:`nemo_neko.layers.grouped_experts`)."""
    sequential = "sequential"
    """Megatron's ``SequentialMLP``: one MLP call per expert."""


class Dispatcher(StrEnum):
    """Megatron-Core token dispatcher (``model.moe_token_dispatcher_type``)."""

    alltoall = "alltoall"
    allgather = "allgather"
    flex = "flex"
    """DeepEP / HybridEP (GPU only; routing statistics are not collected with it)."""


class LoadBalancing(StrEnum):
    """Megatron-Core load-balancing type (``model.moe_router_load_balancing_type``)."""

    aux_loss = "aux_loss"
    seq_aux_loss = "seq_aux_loss"
    global_aux_loss = "global_aux_loss"
    sinkhorn = "sinkhorn"
    none = "none"


class ScoreFunction(StrEnum):
    """Router score function (``model.moe_router_score_function``)."""

    softmax = "softmax"
    sigmoid = "sigmoid"


class RecomputeGranularity(StrEnum):
    """Activation recomputation (``model.recompute_granularity``; unset = none)."""

    full = "full"
    selective = "selective"


class RecomputeMethod(StrEnum):
    """How full recomputation picks its layers (``model.recompute_method``).

    ``uniform``: the layers of each pipeline stage in groups of ``recompute_num_layers``, each
    group checkpointed as one; ``block``: only the first ``recompute_num_layers`` layers of each
    stage are checkpointed (one by one), the rest keep their activations.
    """

    uniform = "uniform"
    block = "block"


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
    moe_layers: list[int] | None = None
    """The 0-based layers that are MoE layers, the others dense (a partly upcycled model);
    None = every ``moe_layer_freq``-th layer."""
    moe_shared_expert_intermediate_size: int | None = None
    """Shared expert intermediate size (Qwen-MoE); None = no shared expert."""
    moe_shared_expert_gate: bool = False
    """Sigmoid gate on the shared expert output (Qwen-MoE)."""
    moe_router_pre_softmax: bool = False
    """Softmax over all experts before top-k (Qwen: no renormalisation); Mixtral: False."""
    moe_router_score_function: ScoreFunction = ScoreFunction.softmax
    moe_aux_loss_coeff: float = 0.01
    moe_router_load_balancing_type: LoadBalancing = LoadBalancing.aux_loss
    moe_z_loss_coeff: float | None = None
    moe_token_dispatcher_type: Dispatcher = Dispatcher.alltoall
    moe_expert_capacity_factor: float | None = None
    vocab_size: int | None = None
    """None = the tokenizer's vocabulary size (padded, see ``make_vocab_size_divisible_by``)."""
    make_vocab_size_divisible_by: int = 128
    max_position_embeddings: int = 4096
    rotary_base: float = 10000.0
    normalization: Normalization = Normalization.RMSNorm
    layernorm_epsilon: float = 1e-5
    layernorm_zero_centered_gamma: bool = False
    """Gemma's RMSNorm scales by (1 + w)."""
    activation: Activation = Activation.swiglu
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
    params_dtype: ParamsDtype = ParamsDtype.float32
    """float32 or bfloat16 (bf16 mixed precision on GPU)."""
    transformer_impl: TransformerImpl = TransformerImpl.auto
    """auto (Transformer Engine where it runs), local, transformer_engine."""
    local_attention: LocalAttention = LocalAttention.sdpa
    """Core attention of local layers: sdpa (fused) or megatron (unfused). TE layers: TE's."""
    local_experts: LocalExperts = LocalExperts.grouped
    """Experts of local layers: grouped (grouped GEMMs) or sequential (one call per expert)."""
    recompute_granularity: RecomputeGranularity | None = None
    """``full`` (whole layers, see ``recompute_method``) or ``selective`` (``recompute_modules``).
    Task-guided forcing routes the recomputed forward exactly as the first one."""
    recompute_method: RecomputeMethod | None = None
    """With ``full``: ``uniform`` or ``block`` (required by Megatron for ``full``)."""
    recompute_num_layers: int | None = None
    """With ``full``: layers per checkpointed group (uniform) or layers checkpointed (block)."""
    recompute_modules: list[str] = field(default_factory=list)
    """With ``selective``: Megatron's names, e.g. ``core_attn``, ``moe``, ``moe_act``,
    ``layernorm``, ``mlp``, ``shared_experts``."""
    parallel: ParallelLayout = field(default_factory=ParallelLayout)
    """Default parallel layout for this model size."""

    def __post_init__(self) -> None:
        if self.moe_layers is not None:
            layers = list(self.moe_layers)
            outside = [i for i in layers if not 0 <= i < self.num_layers]
            if outside or len(set(layers)) != len(layers) or not layers:
                raise ValueError(
                    f"model.moe_layers={layers} must be distinct layers in [0, {self.num_layers})"
                )
            self.moe_layers = sorted(layers)
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if value is not None and not isinstance(value, choices):
                try:
                    setattr(self, name, choices(value))
                except ValueError:
                    known = ", ".join(c.value for c in choices)
                    raise ValueError(f"model.{name}={value!r} is not one of: {known}") from None

    # -- derived ---------------------------------------------------------------------------------

    @property
    def head_dim(self) -> int:
        return self.kv_channels or self.hidden_size // self.num_attention_heads

    @property
    def query_groups(self) -> int:
        return self.num_query_groups or self.num_attention_heads

    def padded_vocab_size(
        self, tokenizer_vocab: int | None = None, tensor_parallel: int | None = None
    ) -> int:
        """Vocabulary rounded up to ``make_vocab_size_divisible_by * TP`` (Megatron's rule).

        Args:
            tokenizer_vocab: the tokenizer's size, used when ``vocab_size`` is unset.
            tensor_parallel: TP of the layout the model is built for (None: ``parallel.tensor``).
        """
        vocab = self.vocab_size or tokenizer_vocab
        if vocab is None:
            raise ValueError(f"model {self.name!r}: vocab_size unset and no tokenizer given")
        multiple = self.make_vocab_size_divisible_by * (tensor_parallel or self.parallel.tensor)
        return int(math.ceil(vocab / multiple) * multiple)

    def is_moe_layer(self, index: int) -> bool:
        if not self.num_experts:
            return False
        if self.moe_layers is not None:
            return index in self.moe_layers
        return index % self.moe_layer_freq == 0

    def moe_layer_pattern(self) -> int | list[int]:
        """Megatron's ``moe_layer_freq``: the frequency, or a 0/1 entry per layer."""
        if self.moe_layers is None:
            return self.moe_layer_freq
        return [int(self.is_moe_layer(i)) for i in range(self.num_layers)]

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
        gated = Activation(self.activation).gated
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

    # -- building --------------------------------------------------------------------------------

    def build(self, **kwargs):
        """The Megatron-Core model of this config: :func:`nemo_neko.model.build.build_model`
        (same keyword arguments), returning a :class:`~nemo_neko.model.build.NeKoModel`."""
        from nemo_neko.model.build import build_model

        return build_model(self, **kwargs)


_CHOICES = {
    "activation": Activation,
    "normalization": Normalization,
    "params_dtype": ParamsDtype,
    "transformer_impl": TransformerImpl,
    "local_attention": LocalAttention,
    "local_experts": LocalExperts,
    "moe_token_dispatcher_type": Dispatcher,
    "moe_router_load_balancing_type": LoadBalancing,
    "moe_router_score_function": ScoreFunction,
    "recompute_granularity": RecomputeGranularity,
    "recompute_method": RecomputeMethod,
}
"""ModelConfig fields that take one of an enum's values (strings are converted on creation)."""
