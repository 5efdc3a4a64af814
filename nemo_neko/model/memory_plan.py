"""Memory and FLOPs per GPU of a training run, from the config alone (no torch, no Megatron).

Megatron-LM's theoretical memory (``megatron/training/theoretical_memory_usage.py``) and FLOPs
(``num_floating_point_operations`` in ``megatron/training/training.py``) formulas, worked out
for a NeKo run on every pipeline rank; the dry run (:func:`nemo_neko.launch.describe`) prints
:func:`format_memory_plan`. The terms:

weights, gradients, optimizer state (:func:`parameter_inventory`, :func:`plan_memory`)
    every parameter by its Megatron name, on the pipeline rank that holds it (the embedding on
    the first, the final norm and output layer on the last, layers in contiguous blocks or
    interleaved chunks) and divided as Megatron divides it: attention, dense MLPs, shared
    experts, embedding and output layer by TP (vocabulary parallel), routed experts by
    ``EP x ETP``, norms and routers replicated. Bytes per parameter: the weight in
    ``params_dtype`` (2 or 4); for a trainable one a 4-byte fp32 main gradient (our DDP runs
    with ``grad_reduce_in_fp32``) and Adam's two fp32 moments, plus the fp32 main copy of a bf16
    weight: Megatron's 18 bytes (bf16) or 16 (fp32) per parameter, or with the distributed
    optimizer ``6 + 12 / DP`` (bf16) / ``8 + 8 / DP`` (fp32), the optimizer part sharded over
    the data-parallel group with context parallelism (``DP x CP``) for dense parameters and
    over the expert-data-parallel group (``world / (ETP x EP x PP)``) for experts. Frozen
    parameters (``train.freeze*``) keep the weight only.
activations (:mod:`nemo_neko.model.activation_memory` per layer and token)
    what a micro-batch of ``micro_batch_size x seq_length / CP`` tokens keeps for the backward
    pass, times the micro-batches in flight at the peak of Megatron's schedule on that rank:
    one without pipelining, ``min(PP - rank, micro-batches)`` with 1F1B, the warm-up count
    ``2 (PP - rank - 1) + (VPP - 1) PP`` plus one chunk micro-batch interleaved (the first rank
    then holds ``L (1 + (PP - 1) / (PP VPP))`` layer passes: Megatron's interleaving penalty).
    Full recomputation keeps each layer's input plus one layer recomputed in the backward
    pass. A frozen layer keeps nothing when no gradient flows into it (everything below it
    frozen, on the same pipeline chunk: a received activation always asks for its gradient).
FLOPs (:func:`flops_per_token`)
    ``6 x`` (the GEMM weights a token passes through: attention projections, top-k experts of
    ``3`` (gated) or ``2`` matrices, output layer) ``+ 6 q s L`` for causal attention.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from nemo_neko.model import activation_memory as am
from nemo_neko.model.config import Activation, ModelConfig
from nemo_neko.parallel.layout import ParallelLayout

GIB = 1024**3


@dataclass(frozen=True)
class Parameter:
    """One parameter tensor of the whole model (global layer and expert numbers).

    Attributes:
        name: Megatron's name in the local spec (``decoder.layers.3.mlp.router.weight``).
        numel: elements of the whole tensor (before any split).
        kind: ``tensor`` (split by TP), ``replicated`` or ``expert`` (split by EP x ETP).
        place: ``embedding``, ``output`` or the 0-based layer.
    """

    name: str
    numel: int
    kind: str
    place: str | int


def parameter_inventory(model: ModelConfig, vocab: int) -> list[Parameter]:
    """Every parameter tensor of ``model`` with a padded vocabulary of ``vocab`` (the output
    layer of a tied model is not listed: see :func:`plan_memory` for its copy on the last
    pipeline stage). Sums to ``model.num_params(padded=True)["total"]`` for RMSNorm models."""
    h, d = model.hidden_size, model.head_dim
    q, kv = model.num_attention_heads * d, model.query_groups * d
    gated = Activation(model.activation).gated
    norm = 2 if str(model.normalization) == "LayerNorm" else 1  # LayerNorm has a bias

    def mlp(prefix: str, intermediate: int, kind: str, place) -> list[Parameter]:
        fc1 = h * intermediate * (2 if gated else 1)
        return [
            Parameter(f"{prefix}.linear_fc1.weight", fc1, kind, place),
            Parameter(f"{prefix}.linear_fc2.weight", intermediate * h, kind, place),
        ]

    params = [Parameter("embedding.word_embeddings.weight", vocab * h, "tensor", "embedding")]
    for i in range(model.num_layers):
        p = f"decoder.layers.{i}"
        params += [
            Parameter(f"{p}.input_layernorm.weight", norm * h, "replicated", i),
            Parameter(f"{p}.self_attention.linear_qkv.weight", h * (q + 2 * kv), "tensor", i),
            Parameter(f"{p}.self_attention.linear_proj.weight", q * h, "tensor", i),
            Parameter(f"{p}.pre_mlp_layernorm.weight", norm * h, "replicated", i),
        ]
        if model.add_qkv_bias:
            params.append(Parameter(f"{p}.self_attention.linear_qkv.bias", q + 2 * kv, "tensor", i))
        if model.qk_layernorm:
            for name in ("q_layernorm", "k_layernorm"):
                params.append(Parameter(f"{p}.self_attention.{name}.weight", d, "replicated", i))
        if not model.is_moe_layer(i):
            params += mlp(f"{p}.mlp", model.ffn_hidden_size, "tensor", i)
            continue
        params.append(Parameter(f"{p}.mlp.router.weight", model.num_experts * h, "replicated", i))
        for e in range(model.num_experts):
            expert = f"{p}.mlp.experts.local_experts.{e}"
            params += mlp(expert, model.moe_ffn_hidden_size, "expert", i)
        if model.moe_shared_expert_intermediate_size:
            shared = model.moe_shared_expert_intermediate_size
            params += mlp(f"{p}.mlp.shared_experts", shared, "tensor", i)
            if model.moe_shared_expert_gate:
                params.append(Parameter(f"{p}.mlp.shared_experts.gate_weight", h, "replicated", i))
    params.append(Parameter("decoder.final_layernorm.weight", norm * h, "replicated", "output"))
    if not model.share_embeddings_and_output_weights:
        params.append(Parameter("output_layer.weight", vocab * h, "tensor", "output"))
    return params


def stage_layers(num_layers: int, pipeline: int, virtual: int | None) -> list[list[list[int]]]:
    """``[rank][chunk] -> layers``: contiguous blocks of ``L / PP``, or with interleaving chunk
    ``c`` of rank ``r`` holding block ``c x PP + r`` of ``L / (PP x VPP)`` layers."""
    chunks = virtual or 1
    per_chunk = num_layers // (pipeline * chunks)
    return [
        [
            list(range((c * pipeline + r) * per_chunk, (c * pipeline + r + 1) * per_chunk))
            for c in range(chunks)
        ]
        for r in range(pipeline)
    ]


def in_flight_chunks(
    pipeline: int, virtual: int | None, rank: int, micro_batches: int
) -> list[int]:
    """The model chunk of each (chunk, micro-batch) forward pass whose activations rank
    ``rank`` holds at its peak, in Megatron-Core's schedule order (``get_pp_rank_microbatches``:
    warm-up forwards, then the first 1F1B forward; interleaved, ``PP`` micro-batches per chunk
    in turn)."""
    if pipeline == 1:
        return [
            0
        ]  # forward_backward_no_pipelining: each micro-batch's backward follows its forward
    chunks = virtual or 1
    if virtual is None:
        warmup = pipeline - rank - 1
    else:
        warmup = 2 * (pipeline - rank - 1) + (chunks - 1) * pipeline
    count = min(warmup + 1, micro_batches * chunks)
    return [(j // pipeline) % chunks for j in range(count)]


@dataclass(frozen=True)
class TrainingShape:
    """What a plan needs besides the model.

    Attributes:
        world_size: ranks (``cluster.nnodes x cluster.nproc_per_node``).
        seq_length: tokens per sequence (``data.seq_length``).
        micro_batch_size: sequences per micro-batch.
        micro_batches: micro-batches per rank and step (:func:`nemo_neko.train.optim.plan_batches`).
        vocab: the padded vocabulary.
        distributed_optimizer: shard main weights and Adam state over data-parallel ranks.
        recompute: None, ``selective`` or ``full``.
        recompute_modules: selective recomputation's modules (empty: Megatron's ``core_attn``).
        frozen: global parameter name -> frozen (None: everything trains).
    """

    world_size: int
    seq_length: int
    micro_batch_size: int
    micro_batches: int
    vocab: int
    distributed_optimizer: bool = False
    recompute: str | None = None
    recompute_modules: tuple[str, ...] = ()
    frozen: Callable[[str], bool] | None = field(default=None, compare=False)


@dataclass
class RankMemory:
    """Bytes on one GPU of pipeline rank ``rank`` (any of its TP / DP / EP peers)."""

    rank: int
    parameters: float
    """Parameter elements on this GPU (routed experts: the average over the EP ranks)."""
    trainable: float
    """Those that train (the others: ``train.freeze*``)."""
    weights: float
    """Bytes of the parameters in ``params_dtype``."""
    grads: float
    """Bytes of the fp32 main gradients of the trainable ones."""
    optimizer: float
    """Bytes of Adam's moments and fp32 main weights (this GPU's shard of them)."""
    activations: float
    """Bytes kept for the backward pass at this rank's peak."""
    passes_in_flight: int
    """Layer forward passes whose activations are held at the peak."""
    layers: int
    """Layers this rank holds (all its chunks)."""
    activation_terms: dict[str, float] = field(default_factory=dict)
    """``activations`` by :class:`~nemo_neko.model.activation_memory.Term` name."""

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer + self.activations


@dataclass
class MemoryPlan:
    """Every pipeline rank's memory under one setting; ``peak`` is the busiest."""

    shape: TrainingShape
    ranks: list[RankMemory]

    @property
    def peak(self) -> RankMemory:
        return max(self.ranks, key=lambda r: r.total)


def _trainable(params: list[Parameter], frozen) -> dict[str | int, bool]:
    """``place -> whether any of its parameters trains``."""
    places: dict[str | int, bool] = {}
    for p in params:
        places[p.place] = places.get(p.place, False) or not (frozen and frozen(p.name))
    return places


def _saving_layers(model: ModelConfig, layout: ParallelLayout, trains: dict) -> set[int]:
    """The layers that keep activations: a gradient flows into them (from a trainable layer
    below on the same model chunk, a trainable embedding, or a received activation: Megatron's
    pipeline receives tensors that ask for their gradient) or they train themselves."""
    chunks = layout.pipeline * (layout.virtual_pipeline or 1)
    per_chunk = model.num_layers // chunks
    saving = set()
    for chunk in range(chunks):  # in model order: chunk g holds layers g * per_chunk ...
        grad_in = trains.get("embedding", False) if chunk == 0 else True
        for layer in range(chunk * per_chunk, (chunk + 1) * per_chunk):
            grad_in = grad_in or trains.get(layer, False)
            if grad_in:
                saving.add(layer)
    return saving


def plan_memory(
    model: ModelConfig, shape: TrainingShape, layout: ParallelLayout | None = None
) -> MemoryPlan:
    """Weights, gradients, optimizer state and activations on a GPU of every pipeline rank."""
    layout = layout or model.parallel
    params = parameter_inventory(model, shape.vocab)
    if model.share_embeddings_and_output_weights and layout.pipeline > 1:  # the last stage's copy
        params.append(
            Parameter("output_layer.weight", shape.vocab * model.hidden_size, "tensor", "output")
        )
    trains = _trainable(params, shape.frozen)
    saving = _saving_layers(model, layout, trains)
    stages = stage_layers(model.num_layers, layout.pipeline, layout.virtual_pipeline)
    ranks = []
    for rank, chunks in enumerate(stages):
        places: set[str | int] = {layer for chunk in chunks for layer in chunk}
        if rank == 0:
            places.add("embedding")
        if rank == layout.pipeline - 1:
            places.add("output")
        state = _state_bytes(model, shape, layout, [p for p in params if p.place in places])
        held = _activations(model, shape, layout, rank, chunks, saving, trains)
        flight = in_flight_chunks(
            layout.pipeline, layout.virtual_pipeline, rank, shape.micro_batches
        )
        passes = sum(1 for c in flight for layer in chunks[c] if layer in saving)
        layers = sum(len(chunk) for chunk in chunks)
        ranks.append(
            RankMemory(
                rank,
                **state,
                activations=sum(held.values()),
                passes_in_flight=passes,
                layers=layers,
                activation_terms=held,
            )
        )
    return MemoryPlan(shape, ranks)


def _state_bytes(model, shape, layout, params: list[Parameter]) -> dict[str, float]:
    """Elements and bytes of weights, gradients and optimizer state of ``params`` on one GPU."""
    tp, ep = layout.tensor, layout.expert
    etp = layout.expert_tensor or tp
    dense_shard = shape.world_size // (tp * layout.pipeline)  # DP x CP: the dense optimizer group
    expert_shard = shape.world_size // (etp * ep * layout.pipeline)
    bf16 = str(model.params_dtype) == "bfloat16"
    weight_bytes = 2 if bf16 else 4
    state_bytes = 8 + (4 if bf16 else 0)  # Adam's moments + the fp32 main copy of a bf16 weight
    out = dict(parameters=0.0, trainable=0.0, weights=0.0, grads=0.0, optimizer=0.0)
    for p in params:
        if p.kind == "tensor":
            numel, shard = p.numel / tp, dense_shard
        elif p.kind == "expert":
            numel, shard = p.numel / (ep * etp), expert_shard
        else:
            numel, shard = p.numel, dense_shard
        out["parameters"] += numel
        out["weights"] += numel * weight_bytes
        if shape.frozen and shape.frozen(p.name):
            continue
        out["trainable"] += numel
        out["grads"] += numel * 4  # fp32 main gradients (grad_reduce_in_fp32)
        out["optimizer"] += numel * state_bytes / (shard if shape.distributed_optimizer else 1)
    return out


def _activations(model, shape, layout, rank, chunks, saving, trains) -> dict[str, float]:
    """Bytes per activation term on pipeline rank ``rank`` at its peak."""
    tokens = shape.micro_batch_size * shape.seq_length // layout.context
    split = dict(
        tensor=layout.tensor,
        expert_tensor=layout.expert_tensor or layout.tensor,
        sequence_parallel=layout.sequence_parallel,
    )
    modules = tuple(shape.recompute_modules) or am.DEFAULT_RECOMPUTE_MODULES

    def layer(index: int, recompute: str | None) -> list[am.Term]:
        if index not in saving:
            return []
        if recompute == "full":
            return am.checkpointed_layer_terms(model)
        return am.selected(am.layer_terms(model, index, shape.seq_length), recompute, modules)

    def add(held: dict[str, float], terms: list[am.Term], times: int = 1) -> None:
        for term in terms:
            value = term.per_rank(**split) * tokens * times
            held[term.name] = held.get(term.name, 0.0) + value

    flight = in_flight_chunks(layout.pipeline, layout.virtual_pipeline, rank, shape.micro_batches)
    held: dict[str, float] = {}
    for c, layers in enumerate(chunks):
        times = flight.count(c)
        for index in layers:
            add(held, layer(index, shape.recompute), times)
        if rank == 0 and c == 0 and trains.get("embedding", False):
            add(held, am.embedding_terms(model), times)
        if rank == layout.pipeline - 1 and c == len(chunks) - 1:
            add(held, am.output_terms(model, shape.vocab), times)
    if shape.recompute == "full":  # the backward pass recomputes one layer at a time
        own = [index for chunk in chunks for index in chunk if index in saving]
        if own:
            busiest = max(own, key=lambda i: am.bytes_on_rank(layer(i, None), **split))
            add(
                held,
                [
                    am.Term(f"recomputed layer: {t.name}", t.bytes_per_token, t.split)
                    for t in layer(busiest, None)
                ],
            )
    return held


def flops_per_token(model: ModelConfig, seq_length: int, vocab: int) -> dict[str, float]:
    """Training FLOPs (forward + backward) per token, Megatron-LM's ``num_floating_point_operations``
    divided by the tokens of a batch of full ``seq_length`` sequences.

    ``linear``: ``6 x`` the GEMM weights a token passes through (QKV and output projections,
    dense MLPs and the top-k experts, ``3`` matrices gated or ``2``, shared experts, the output
    layer; Megatron leaves out routers and norms); ``attention``: ``6 q s L`` (``QK^T`` and the
    product with ``V``, halved by the causal mask). Packed sequences attend within their sample
    only, so for them ``attention`` is an upper bound.
    """
    h, d = model.hidden_size, model.head_dim
    q, kv = model.num_attention_heads * d, model.query_groups * d
    ffn = 3 if Activation(model.activation).gated else 2
    moe_layers = sum(model.is_moe_layer(i) for i in range(model.num_layers))
    dense_layers = model.num_layers - moe_layers
    shared = model.moe_shared_expert_intermediate_size or 0
    mlp = (
        h
        * ffn
        * (
            model.ffn_hidden_size * dense_layers
            + (model.moe_ffn_hidden_size * model.moe_router_topk + shared) * moe_layers
        )
    )
    attention_linear = (h * (q + 2 * kv) + q * h) * model.num_layers
    linear = 6.0 * (mlp + attention_linear + h * vocab)
    attention = 6.0 * q * seq_length * model.num_layers
    return {"linear": linear, "attention": attention, "total": linear + attention}


RECOMPUTE_SETTINGS = (None, "selective", "full")
"""The columns of the dry run's table."""


def memory_table(model: ModelConfig, shape: TrainingShape, layout: ParallelLayout | None = None):
    """``{(distributed_optimizer, recompute): MemoryPlan}`` for both optimizers and every
    recomputation setting, the rest of ``shape`` as it is."""
    from dataclasses import replace

    return {
        (distributed, recompute): plan_memory(
            model, replace(shape, distributed_optimizer=distributed, recompute=recompute), layout
        )
        for distributed in (True, False)
        for recompute in RECOMPUTE_SETTINGS
    }


def _gib(value: float) -> str:
    return (
        f"{value / GIB:.1f} GiB" if value >= GIB / 10 or value == 0 else f"{value / 2**20:.1f} MiB"
    )


def format_memory_plan(
    model: ModelConfig,
    shape: TrainingShape,
    layout: ParallelLayout | None = None,
    *,
    gpu: str | None = None,
    gpu_bytes: float | None = None,
) -> str:
    """The dry run's memory and FLOPs lines: the run's own setting on its busiest GPU, a table
    of the total per GPU with and without the distributed optimizer and recomputation, the
    FLOPs, and a ``WARNING`` line when the run's setting exceeds ``gpu_bytes``."""
    layout = layout or model.parallel
    table = memory_table(model, shape, layout)
    own = table[(shape.distributed_optimizer, shape.recompute)].peak
    tp, pp, cp = layout.tensor, layout.pipeline, layout.context
    etp, ep = layout.expert_tensor or tp, layout.expert
    bf16 = str(model.params_dtype) == "bfloat16"
    dense, expert = shape.world_size // (tp * pp), shape.world_size // (etp * ep * pp)
    sharding = (
        f"sharded over DP x CP {dense}" + (f", expert DP {expert}" if model.num_experts else "")
        if shape.distributed_optimizer
        else "not sharded"
    )
    frozen = own.parameters - own.trainable
    schedule = (
        "no pipelining"
        if pp == 1
        else f"1F1B over PP {pp}"
        + (f", VPP {layout.virtual_pipeline}" if layout.virtual_pipeline else "")
    )
    setting = shape.recompute or "none"
    if shape.recompute == "selective":
        setting += f" ({', '.join(shape.recompute_modules or am.DEFAULT_RECOMPUTE_MODULES)})"
    lines = [
        f"memory per GPU (estimate: Megatron-LM's theoretical-memory terms, MoE-aware; "
        f"{'bf16' if bf16 else 'fp32'} weights, fp32 grads, Adam{' + fp32 main weights' if bf16 else ''}):",
        f"  pipeline rank {own.rank} of {pp} (the busiest): {own.layers} layers, "
        f"{own.parameters / 1e9:.3f}B parameters"
        + (f" ({frozen / 1e9:.3f}B frozen)" if frozen else "")
        + f": weights {_gib(own.weights)} + grads {_gib(own.grads)} + optimizer {_gib(own.optimizer)} "
        f"({sharding})",
        f"  activations {_gib(own.activations)}: {own.passes_in_flight} layer passes of "
        f"{shape.micro_batch_size} x {shape.seq_length // cp} tokens in flight ({schedule}), "
        f"recompute {setting}",
        f"  {'total per GPU (* = run)':<24}"
        + "".join(f"{(r or 'no recompute'):>14}" for r in RECOMPUTE_SETTINGS),
    ]
    for distributed in (True, False):
        name = "distributed optimizer" if distributed else "plain optimizer"
        cells = []
        for recompute in RECOMPUTE_SETTINGS:
            mark = (
                "*"
                if (distributed, recompute) == (shape.distributed_optimizer, shape.recompute)
                else " "
            )
            cells.append(f"{_gib(table[(distributed, recompute)].peak.total) + mark:>14}")
        lines.append(f"  {name:<24}" + "".join(cells))
    flops = flops_per_token(model, shape.seq_length, shape.vocab)
    tokens = shape.micro_batches * shape.micro_batch_size * shape.seq_length
    tokens *= shape.world_size // (tp * pp * cp)
    lines.append(
        f"  FLOPs (Megatron's count): {flops['total']:.3g} per token ({flops['linear']:.3g} GEMMs + "
        f"{flops['attention']:.3g} attention at {shape.seq_length} tokens), {flops['total'] * tokens:.3g} "
        f"per step, {flops['total'] * tokens / shape.world_size:.3g} per GPU per step"
    )
    if gpu_bytes:
        share = own.total / gpu_bytes
        margin = " (not counted: CUDA context, NCCL buffers, fragmentation)" if share > 0.8 else ""
        lines.append(
            f"  GPU {gpu or 'memory'}: {_gib(gpu_bytes)}; the run's setting needs "
            f"{_gib(own.total)} ({share:.0%}){margin}"
        )
        if share > 1:
            fits = [
                f"{'distributed' if d else 'plain'} optimizer + {r or 'no'} recompute ({_gib(p.peak.total)})"
                for (d, r), p in table.items()
                if p.peak.total <= gpu_bytes
            ]
            lines.append(
                f"WARNING: {model.name} needs {_gib(own.total)} per GPU on pipeline rank {own.rank}, more than "
                f"the {_gib(gpu_bytes)} of a {gpu or 'GPU'}; "
                + (
                    f"fits with {fits[0]}"
                    if fits
                    else "no setting of the table fits: add GPUs or raise TP / PP / EP"
                )
            )
    else:
        lines.append(
            "  GPU memory unknown (set cluster.gpu=h100|h200 or cluster.gpu_memory_gib) for the fit check"
        )
    return "\n".join(lines)
