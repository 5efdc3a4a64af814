"""What one transformer layer saves for the backward pass, per token: the activation terms.

Pure arithmetic on a :class:`~nemo_neko.model.config.ModelConfig` (no torch, no Megatron). The
accounting follows Korthikanti et al., *Reducing Activation Recomputation in Large Transformer
Models* (arXiv 2205.05198, Table 2), which Megatron-LM's ``compute_activation_memory``
(``megatron/training/theoretical_memory_usage.py``) implements as ``sbh(18 + 4f/h)`` bytes per
layer with sequence parallelism and selective recomputation, ``sbh(10 + 24/t)`` without. Their
derivation assumes a dense GeLU MLP, multi-head attention and dropout; every term below says
whether it is one of theirs (``megatron=True``) or what the Megatron-Core 0.16 code path of a
NeKo layer adds to it (grouped-query attention, RoPE, gated units, routed experts):

attention block
    norm input ``h`` and its fp32 statistics; the QKV projection's input (the norm output) ``h``;
    the QKV projection's output ``q + 2kv`` (the value heads are a view of it, so all of it
    stays); the RoPE'd query and key ``q + kv`` (new tensors); the fused kernel's output ``q``
    (the output projection's input) and fp32 log-sum-exp (``4a`` bytes), or for Megatron's
    unfused attention the ``a x s`` softmax probabilities per token; dropout masks (1 byte per
    element) only when ``attention_dropout`` / ``hidden_dropout`` > 0 (PyTorch keeps no mask at 0).
dense MLP
    norm input and output ``2h``; fc1's output ``2f`` (gated) or ``f``; the gated unit's
    activation ``f`` (``act(gate) * up`` keeps ``act(gate)``); fc2's input ``f``.
MoE MLP (top-``k`` of ``E`` routed experts, intermediate ``fe``)
    norm input and output ``2h``; router and dispatcher bookkeeping ``14E + 24k`` bytes (fp32
    logits, probabilities and routing map, int64 indices; counted on Megatron-Core 0.16's
    ``TopKRouter`` + token dispatcher); the permuted tokens ``k h``; per routed copy fc1's output
    ``2fe`` (gated), the activation and the probability-scaled intermediate (0.16 scales inside
    the expert, ``per_token_scale``), fc2's input: ``5k fe`` gated, ``3k fe`` otherwise; a shared
    expert like a dense MLP of ``fs`` plus its gated output ``h``.

Each term carries how it divides over a tensor-parallel group (:class:`Split`): ``sequence``
terms (norms, residual-stream tensors) divide by TP only with sequence parallelism, ``tensor``
terms (heads, FFN columns) always; routed-expert token copies are all-gathered over the
expert-tensor group after the all-to-all (``x ETP / TP``), their FFN columns split by ETP
(``/ TP`` overall). Routing is assumed balanced: task-guided forcing sends every token of a task
to its expert, so with expert parallelism one rank's expert terms can reach
``EP x min(k, E / EP) / k`` times the balanced figure when a micro-batch holds a single task.

Selective recomputation (Megatron's ``recompute_modules``, default ``["core_attn"]``) drops the
terms each module regenerates in the backward pass (``dropped_by``); full recomputation keeps
each layer's input ``h`` only (:func:`checkpointed_layer_terms`).

Not counted: RoPE's cos/sin tables (``s x d`` per layer, independent of the batch), the
attention mask of the local (non-THD) path, temporaries of the backward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from nemo_neko.model.config import Activation, LocalAttention, ModelConfig, TransformerImpl


class Split(StrEnum):
    """How a per-token term divides over the tensor-parallel group."""

    sequence = "sequence"
    """Residual-stream tensors: ``/ TP`` with sequence parallelism, replicated without."""
    tensor = "tensor"
    """Attention heads and FFN columns: always ``/ TP``."""
    expert_tokens = "expert_tokens"
    """Routed token copies of ``h``: ``x ETP / TP`` (gathered over the expert-tensor group)."""
    replicated = "replicated"
    """Held whole by every TP rank (the token ids the vocabulary-parallel embedding reads)."""


DEFAULT_RECOMPUTE_MODULES = ("core_attn",)
"""Megatron-Core's ``recompute_modules`` when ``recompute_granularity=selective`` sets none."""


@dataclass(frozen=True)
class Term:
    """One tensor kept for the backward pass, in bytes per token of one micro-batch.

    Attributes:
        name: what it is.
        bytes_per_token: bytes per token before any parallel split.
        split: how tensor / sequence parallelism divides it.
        megatron: one of Korthikanti et al.'s Table 2 terms (Megatron-LM's formula).
        dropped_by: the selective-recompute modules that regenerate it in the backward pass.
    """

    name: str
    bytes_per_token: float
    split: Split
    megatron: bool = False
    dropped_by: tuple[str, ...] = ()

    def per_rank(self, tensor: int, expert_tensor: int, sequence_parallel: bool) -> float:
        """Bytes per token on one rank of a tensor-parallel group of ``tensor`` ranks."""
        if self.split is Split.tensor or (self.split is Split.sequence and sequence_parallel):
            return self.bytes_per_token / tensor
        if self.split is Split.expert_tokens:
            return self.bytes_per_token * expert_tensor / tensor
        return self.bytes_per_token


def element_bytes(model: ModelConfig) -> int:
    """Bytes per activation element: the parameters' dtype (bf16 mixed precision: 2)."""
    return 4 if str(model.params_dtype) == "float32" else 2


def fused_attention(model: ModelConfig) -> bool:
    """Whether core attention is a fused kernel (TE / flash / SDPA): no ``s x s`` tensors."""
    local = TransformerImpl(model.transformer_impl) is TransformerImpl.local
    return not (local and LocalAttention(model.local_attention) is LocalAttention.megatron)


def _norm_stats(model: ModelConfig) -> float:
    """fp32 statistics a norm keeps per token: RMSNorm ``rstd``, LayerNorm also the mean."""
    return 4.0 if str(model.normalization) == "RMSNorm" else 8.0


def attention_terms(model: ModelConfig, seq_length: int) -> list[Term]:
    """The attention block's terms (norm, QKV, RoPE, core attention, output, dropout)."""
    e = element_bytes(model)
    h, heads, d = model.hidden_size, model.num_attention_heads, model.head_dim
    q, kv = heads * d, model.query_groups * d
    terms = [
        Term("attention norm input", h * e, Split.sequence, True),
        Term("attention norm statistics", _norm_stats(model), Split.sequence),
        Term("QKV input (norm output)", h * e, Split.sequence, True, ("layernorm",)),
        Term("QKV output (Q, K, V)", (q + 2 * kv) * e, Split.tensor, True),
        Term("RoPE'd query and key", (q + kv) * e, Split.tensor),
        Term("attention output (projection input)", q * e, Split.tensor, True),
    ]
    if fused_attention(model):
        terms.append(Term("softmax log-sum-exp", 4.0 * heads, Split.tensor, False, ("core_attn",)))
    else:
        probs = heads * seq_length
        terms.append(Term("attention probabilities", probs * e, Split.tensor, True, ("core_attn",)))
        if model.attention_dropout > 0:
            terms.append(
                Term("attention dropout", probs * (1 + e), Split.tensor, True, ("core_attn",))
            )
    if model.hidden_dropout > 0:
        terms.append(Term("attention dropout mask", h * 1.0, Split.sequence, True))
    return terms


def _ffn_terms(model: ModelConfig, intermediate: int, copies: float, prefix: str, drop: tuple):
    """fc1 output, the activation, fc2 input of an MLP of ``intermediate`` columns."""
    e = element_bytes(model)
    gated = Activation(model.activation).gated
    fc1 = (2 if gated else 1) * intermediate * copies * e
    terms = [Term(f"{prefix} fc1 output", fc1, Split.tensor, True, drop)]
    if gated:
        terms.append(Term(f"{prefix} gate activation", intermediate * copies * e, Split.tensor))
    terms.append(Term(f"{prefix} fc2 input", intermediate * copies * e, Split.tensor, True, drop))
    return terms


def mlp_terms(model: ModelConfig, moe: bool) -> list[Term]:
    """The MLP block's terms: a dense MLP, or the router, routed experts and shared expert."""
    e = element_bytes(model)
    h = model.hidden_size
    terms = [
        Term("MLP norm input", h * e, Split.sequence, True),
        Term("MLP norm statistics", _norm_stats(model), Split.sequence),
        Term("MLP input (norm output)", h * e, Split.sequence, True, ("layernorm",)),
    ]
    if not moe:
        terms += _ffn_terms(model, model.ffn_hidden_size, 1, "dense", ("mlp",))
    else:
        k, experts, fe = model.moe_router_topk, model.num_experts, model.moe_ffn_hidden_size
        gated = Activation(model.activation).gated
        routed = [
            Term("router and dispatch bookkeeping", 14.0 * experts + 24.0 * k, Split.sequence),
            Term("expert inputs (permuted tokens)", k * h * e, Split.expert_tokens),
            Term("expert fc1 output", (2 if gated else 1) * k * fe * e, Split.tensor, True),
            Term("expert activation, scaled", (3 if gated else 2) * k * fe * e, Split.tensor),
        ]
        for term in routed:
            moe_act = ("moe_act",) if term.name == "expert activation, scaled" else ()
            terms.append(
                Term(term.name, term.bytes_per_token, term.split, term.megatron, moe_act + ("moe",))
            )
        shared = model.moe_shared_expert_intermediate_size
        if shared:
            drop = ("shared_experts", "moe")
            terms += _ffn_terms(model, shared, 1, "shared expert", drop)
            if model.moe_shared_expert_gate:
                terms.append(Term("shared expert gated output", h * e, Split.sequence, False, drop))
    if model.hidden_dropout > 0:
        terms.append(Term("MLP dropout mask", h * 1.0, Split.sequence, True))
    return terms


def layer_terms(model: ModelConfig, index: int, seq_length: int) -> list[Term]:
    """Every term of layer ``index`` (0-based; MoE or dense from the model's layer pattern)."""
    return attention_terms(model, seq_length) + mlp_terms(model, model.is_moe_layer(index))


def checkpointed_layer_terms(model: ModelConfig) -> list[Term]:
    """Full recomputation: a layer keeps its input (the checkpoint's argument) and nothing else."""
    return [
        Term("layer input (checkpoint)", model.hidden_size * element_bytes(model), Split.sequence)
    ]


def embedding_terms(model: ModelConfig) -> list[Term]:
    """The first stage's input: the int64 token ids (read whole by each TP rank), the
    embedding dropout mask when ``hidden_dropout`` > 0."""
    terms = [Term("token ids", 8.0, Split.replicated, True)]
    if model.hidden_dropout > 0:
        terms.append(Term("embedding dropout mask", model.hidden_size * 1.0, Split.sequence, True))
    return terms


def output_terms(model: ModelConfig, vocab: int) -> list[Term]:
    """The last stage's output: final norm input, the output layer's input, the cross-entropy's
    fp32 softmax over the vocabulary-parallel logits, labels."""
    e = element_bytes(model)
    h = model.hidden_size
    return [
        Term("final norm input", h * e, Split.sequence, True),
        Term("final norm statistics", _norm_stats(model), Split.sequence),
        Term("output layer input", h * e, Split.sequence, True),
        Term("cross-entropy softmax (fp32)", 4.0 * vocab, Split.tensor, True),
        Term("labels and loss masks", 8.0 + 4.0, Split.sequence),
    ]


def selected(terms: list[Term], recompute: str | None, modules: tuple[str, ...]) -> list[Term]:
    """The terms kept under ``recompute`` (None or ``selective`` with ``modules``)."""
    if recompute != "selective":
        return list(terms)
    return [t for t in terms if not set(t.dropped_by) & set(modules)]


def bytes_on_rank(
    terms: list[Term], *, tensor: int, expert_tensor: int, sequence_parallel: bool
) -> float:
    """Bytes per token that ``terms`` take on one rank of the tensor-parallel group."""
    return sum(t.per_rank(tensor, expert_tensor, sequence_parallel) for t in terms)
