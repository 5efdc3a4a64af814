"""The one seam between nemo_neko and Megatron-Core internals.

Every ``import megatron...`` in the project lives in this file, so that a Megatron-Core upgrade
is one file to read. Supported: megatron-core >= 0.16.1 (0.16.1 is the newest release that
installs on Python 3.11; the NeMo container ships newer ones, checked against 0.19.2).

Version differences handled here:

* 0.17+ builds MoE modules from ``functools.partial(MoELayer, submodules=...)`` where 0.16 used
  ``ModuleSpec(module=MoELayer, submodules=...)``: :func:`swap_moe_module` rewrites either form.
* 0.17+ replaced the dict aux-loss tracker with ``MoEMetricsTracker``:
  :func:`local_aux_loss_values` and :func:`clear_aux_losses` read/clear either.
* 0.16.x references ``te_general_gemm`` in the router gating GEMM without defining it when
  Transformer Engine is absent; :func:`prepare_runtime` defines it as ``None`` (what 0.17+ does).
* 0.16.x ``TransformerLayer`` passes ``pg_collection`` only to MLP classes it lists by identity
  and logs "Unknown MLP type" for any subclass; the NeKo layer then takes Megatron's default
  (global) process groups, which is what a model built on ``parallel_state`` uses anyway. The
  warning is filtered once per layer spec build (0.16 only).

Nothing here runs at import time beyond imports; :func:`prepare_runtime` is called explicitly
by :func:`nemo_neko.parallel.initialize_parallel`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Callable
from importlib.metadata import version as _dist_version
from typing import Any

import torch
from megatron.core import (  # noqa: F401  (re-exported)
    dist_checkpointing,  # noqa: F401
    parallel_state,
    tensor_parallel,
)
from megatron.core.distributed import (  # noqa: F401
    DistributedDataParallel,
    DistributedDataParallelConfig,
    finalize_model_grads,
)
from megatron.core.models.gpt import GPTModel  # noqa: F401
from megatron.core.models.gpt.gpt_layer_specs import (  # noqa: F401
    get_gpt_decoder_block_spec,
    get_gpt_layer_local_spec,
)
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer  # noqa: F401
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler  # noqa: F401
from megatron.core.pipeline_parallel import get_forward_backward_func  # noqa: F401
from megatron.core.process_groups_config import ProcessGroupCollection  # noqa: F401
from megatron.core.tensor_parallel import (  # noqa: F401
    gather_from_sequence_parallel_region,
    model_parallel_cuda_manual_seed,
)
from megatron.core.tensor_parallel import random as tp_random
from megatron.core.transformer.dot_product_attention import DotProductAttention  # noqa: F401
from megatron.core.transformer.enums import AttnMaskType  # noqa: F401
from megatron.core.transformer.module import MegatronModule  # noqa: F401
from megatron.core.transformer.moe import moe_utils
from megatron.core.transformer.moe.experts import SequentialMLP  # noqa: F401
from megatron.core.transformer.moe.moe_layer import MoELayer, MoESubmodules  # noqa: F401
from megatron.core.transformer.moe.moe_utils import (  # noqa: F401
    apply_router_token_dropping,
    compute_routing_scores_for_aux_loss,
    get_capacity,
    get_default_pg_collection,
    sort_chunks_by_idxs,
    switch_load_balancing_loss_func,
    topk_routing_with_score_function,
)
from megatron.core.transformer.moe.router import TopKRouter  # noqa: F401
from megatron.core.transformer.moe.token_dispatcher import (  # noqa: F401
    MoEAllGatherTokenDispatcher,
    MoEAlltoAllTokenDispatcher,
)
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_config import TransformerConfig  # noqa: F401
from packaging.version import Version

MCORE_VERSION = Version(_dist_version("megatron-core"))
"""Installed megatron-core version."""

MCORE_MIN_VERSION = Version("0.16.1")

CudaRNGStatesTracker = tp_random.CudaRNGStatesTracker
MODEL_PARALLEL_RNG_TRACKER_NAME = tp_random._MODEL_PARALLEL_RNG_TRACKER_NAME


@dataclasses.dataclass(frozen=True)
class MegatronName:
    """One Megatron-Core internal nemo_neko relies on (not part of its documented API).

    ``kind``: ``module`` (an attribute of the module ``owner``), ``class`` (an attribute of the
    class ``owner``, given as ``module:Class``) or ``instance`` (an attribute an instance of that
    class has after ``__init__``, or after one forward when ``after_forward``).
    ``versions``: where it exists (``"all"``, or e.g. ``"<0.17"``, ``">=0.17"``).
    """

    owner: str
    name: str
    kind: str
    used_by: str
    versions: str = "all"
    after_forward: bool = False


_A2A = "megatron.core.transformer.moe.token_dispatcher:MoEAlltoAllTokenDispatcher"
_AG = "megatron.core.transformer.moe.token_dispatcher:MoEAllGatherTokenDispatcher"
_ROUTER = "megatron.core.transformer.moe.router:TopKRouter"
_TORCH_STRATEGY = "megatron.core.dist_checkpointing.strategies.torch"

PRIVATE_NAMES: tuple[MegatronName, ...] = (
    # the model-parallel RNG tracker (CPU shims, checkpoints)
    MegatronName("megatron.core.tensor_parallel.random", "_CUDA_RNG_STATE_TRACKER", "module", "install_rng_tracker"),
    MegatronName("megatron.core.tensor_parallel.random", "_CUDA_RNG_STATE_TRACKER_INITIALIZED", "module", "install_rng_tracker"),
    MegatronName("megatron.core.tensor_parallel.random", "_MODEL_PARALLEL_RNG_TRACKER_NAME", "module", "CPU RNG tracker"),
    # the router: the selection hook and the load-balancing losses (moe/router.py)
    MegatronName(_ROUTER, "router_replay", "instance", "TaskGuidedRouter selection hook"),
    MegatronName(_ROUTER, "_apply_aux_loss", "class", "TaskGuidedRouter aux-loss map"),
    MegatronName(_ROUTER, "_apply_seq_aux_loss", "class", "TaskGuidedRouter aux-loss map"),
    MegatronName(_ROUTER, "_apply_global_aux_loss", "class", "TaskGuidedRouter aux-loss map"),
    MegatronName(_ROUTER, "attach_and_log_load_balancing_loss", "class", "TaskGuidedRouter aux-loss scale under SP/CP"),
    MegatronName(_ROUTER, "tp_cp_group", "instance", "TaskGuidedRouter aux-loss scale under SP/CP"),
    MegatronName("megatron.core.transformer.moe.router_replay:RouterReplay", "get_replay_topk", "class", "the selection hook's protocol"),
    # the all-to-all dispatcher's state (moe/dispatchers.py)
    MegatronName(_A2A, "_maybe_dtoh_and_synchronize", "class", "host split sizes on CPU"),
    MegatronName(_A2A, "input_splits", "instance", "task codes all-to-all", after_forward=True),
    MegatronName(_A2A, "output_splits", "instance", "task codes all-to-all", after_forward=True),
    MegatronName(_A2A, "output_splits_tp", "instance", "task codes TP gather", after_forward=True),
    MegatronName(_A2A, "num_global_tokens_per_local_expert", "instance", "task codes sort", after_forward=True),
    MegatronName(_A2A, "sort_input_by_local_experts", "instance", "task codes sort"),
    MegatronName(_A2A, "routing_map", "instance", "task codes permutation", after_forward=True),
    MegatronName(_A2A, "drop_and_pad", "instance", "capacity padding"),
    MegatronName(_A2A, "capacity", "instance", "capacity padding", after_forward=True),
    MegatronName(_AG, "local_map", "instance", "received tokens", after_forward=True),
    MegatronName(_AG, "tp_ep_group", "instance", "task gather"),
    # the CPU shims' multi-tensor fallbacks
    MegatronName("megatron.core.optimizer.clip_grads", "l2_norm_impl", "module", "CPU foreach clipping"),
    MegatronName("megatron.core.optimizer.clip_grads", "multi_tensor_scale_impl", "module", "CPU foreach clipping"),
    # the distributed optimizer's reshardable load without apex / TE (optimizer_loading_template)
    MegatronName("megatron.core.optimizer.distrib_optimizer", "HAVE_APEX_OR_TE", "module", "optimizer_loading_template"),
    MegatronName("megatron.core.optimizer.distrib_optimizer:DistributedOptimizer", "_set_main_param_and_optimizer_states", "class", "optimizer_loading_template"),
    MegatronName("megatron.core.optimizer.distrib_optimizer:DistributedOptimizer", "model_param_group_index_map", "instance", "optimizer_loading_template"),
    # the CPU shims: recomputation's CUDA RNG state
    MegatronName("megatron.core.tensor_parallel.random", "_get_cuda_rng_state", "module", "CPU recomputation"),
    MegatronName("megatron.core.tensor_parallel.random", "_set_cuda_rng_state", "module", "CPU recomputation"),
    # the CPU shims: gloo's all_gather / reduce_scatter with uneven pieces
    MegatronName("megatron.core.tensor_parallel.mappings", "_gather_along_first_dim", "module", "CPU uneven gather"),
    MegatronName("megatron.core.tensor_parallel.mappings", "_reduce_scatter_along_first_dim", "module", "CPU uneven reduce-scatter"),
    # auxiliary-loss logging
    MegatronName("megatron.core.transformer.moe.moe_utils", "get_moe_layer_wise_logging_tracker", "module", "local_aux_loss_values", "<0.17"),
    MegatronName("megatron.core.transformer.moe.moe_utils", "clear_aux_losses_tracker", "module", "clear_aux_losses", "<0.17"),
    MegatronName("megatron.core.transformer.moe.moe_logging", "get_moe_metrics_tracker", "module", "local_aux_loss_values", ">=0.17"),
    # streaming distributed-checkpoint writes (nemo_neko.convert)
    MegatronName(_TORCH_STRATEGY, "_replace_state_dict_keys_with_sharded_keys", "module", "save_streaming"),
    MegatronName(_TORCH_STRATEGY, "mcore_to_pyt_state_dict", "module", "save_streaming"),
    MegatronName(_TORCH_STRATEGY, "MCoreSavePlanner", "module", "save_streaming"),
    MegatronName(_TORCH_STRATEGY, "TorchDistSaveShardedStrategy", "module", "save_streaming"),
)  # fmt: skip
"""Every Megatron-Core internal the project relies on; ``tests/test_compat.py`` asserts that each
one exists on the installed version (the instance ones on real layers)."""


def applies_to_installed(name: MegatronName) -> bool:
    """True when ``name`` is expected on the installed megatron-core."""
    if name.versions == "all":
        return True
    if name.versions.startswith(">="):
        return MCORE_VERSION >= Version(name.versions[2:])
    if name.versions.startswith("<"):
        return MCORE_VERSION < Version(name.versions[1:])
    raise ValueError(f"{name}: versions must be 'all', '>=X' or '<X'")


def resolve_owner(owner: str) -> Any:
    """The module (``a.b``) or class (``a.b:C``) a :class:`MegatronName` belongs to."""
    import importlib

    module, _, cls = owner.partition(":")
    found = importlib.import_module(module)
    return getattr(found, cls) if cls else found


def transformer_engine_available() -> bool:
    """True when Transformer Engine imports (the NeMo container); False on CPU machines."""
    try:
        import transformer_engine  # noqa: F401
    except Exception:  # a broken TE install raises more than ImportError
        return False
    return True


def get_gpt_layer_te_spec(**kwargs):
    """``get_gpt_layer_with_transformer_engine_spec``, imported only when asked for (needs TE)."""
    from megatron.core.models.gpt.gpt_layer_specs import (
        get_gpt_layer_with_transformer_engine_spec,
    )

    return get_gpt_layer_with_transformer_engine_spec(**kwargs)


def prepare_runtime() -> None:
    """Make the installed Megatron-Core runnable here. Idempotent; never called at import.

    0.16.x: ``RouterGatingLinearFunction`` tests ``te_general_gemm is not None`` but the name is
    only bound when Transformer Engine imports, so without TE every router forward raises
    ``NameError``. Bind it to ``None`` exactly as 0.17+ does in its no-TE branch.
    """
    if not hasattr(moe_utils, "te_general_gemm"):
        moe_utils.te_general_gemm = None


def parallel_groups() -> dict[str, Any]:
    """The process groups of Megatron's initialised parallel state, by
    :class:`~nemo_neko.parallel.context.ParallelContext` field name (the one reader of the
    ``parallel_state`` globals)."""
    ps = parallel_state
    return {
        "tp": ps.get_tensor_model_parallel_group(),
        "pp": ps.get_pipeline_model_parallel_group(),
        "cp": ps.get_context_parallel_group(),
        "ep": ps.get_expert_model_parallel_group(),
        "dp": ps.get_data_parallel_group(with_context_parallel=False),
        "dp_cp": ps.get_data_parallel_group(with_context_parallel=True),
        "expt_dp": ps.get_expert_data_parallel_group(),
        "expt_mp": ps.get_expert_tensor_and_model_parallel_group(),
    }


def megatron_clip_grads_module():
    """``megatron.core.optimizer.clip_grads`` (the CPU shims swap its multi-tensor fallbacks)."""
    from megatron.core.optimizer import clip_grads

    return clip_grads


def megatron_random_module():
    """``megatron.core.tensor_parallel.random`` (the CPU shims replace its CUDA RNG state access)."""
    return tp_random


def megatron_mappings_module():
    """``megatron.core.tensor_parallel.mappings`` (the CPU shims make its uneven gathers gloo's)."""
    from megatron.core.tensor_parallel import mappings

    return mappings


def megatron_utils_module():
    """``megatron.core.utils`` (its ``local_multi_tensor_*`` fallbacks)."""
    from megatron.core import utils

    return utils


def torch_optimizers(optimizer) -> list:
    """The ``torch.optim`` optimizers inside a Megatron optimizer (chained or not)."""
    parts = getattr(optimizer, "chained_optimizers", None) or [optimizer]
    return [part.optimizer for part in parts if getattr(part, "optimizer", None) is not None]


def install_rng_tracker(tracker: Any) -> None:
    """Make ``tracker`` the tracker returned by ``get_cuda_rng_tracker()``."""
    tp_random._CUDA_RNG_STATE_TRACKER = tracker
    tp_random._CUDA_RNG_STATE_TRACKER_INITIALIZED = True


def installed_rng_tracker() -> Any:
    """The tracker currently installed (None before Megatron or the shims create one)."""
    return tp_random._CUDA_RNG_STATE_TRACKER


# --------------------------------------------------------------------------------------------
# Layer specs
# --------------------------------------------------------------------------------------------


def _is_moe_layer_class(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, MoELayer)


def swap_moe_module(
    mlp_spec: Any,
    layer_cls: type,
    router_builder: Callable,
    layer_params: dict,
    experts_cls: type | None = None,
) -> Any:
    """Return ``mlp_spec`` with its MoE layer class and router (and experts) replaced.

    Args:
        mlp_spec: the ``mlp`` entry of a ``TransformerLayerSubmodules``: a ``ModuleSpec``
            (0.16) or a ``functools.partial`` (0.17+) building an ``MoELayer``. Anything else
            (a dense MLP) is returned unchanged.
        layer_cls: the ``MoELayer`` subclass to build instead.
        router_builder: called as ``router_builder(config=..., pg_collection=..., ...)``.
        layer_params: extra keyword arguments for ``layer_cls``.
        experts_cls: a ``SequentialMLP`` subclass to build instead of ``SequentialMLP`` (the
            local spec's experts); other expert modules (Transformer Engine's) stay.
    """
    if isinstance(mlp_spec, ModuleSpec) and _is_moe_layer_class(mlp_spec.module):
        submodules = dataclasses.replace(mlp_spec.submodules, router=router_builder)
        submodules = _swap_experts(submodules, experts_cls)
        params = dict(mlp_spec.params or {})
        params.update(layer_params)
        return dataclasses.replace(mlp_spec, module=layer_cls, submodules=submodules, params=params)
    if isinstance(mlp_spec, functools.partial) and _is_moe_layer_class(mlp_spec.func):
        keywords = dict(mlp_spec.keywords)
        submodules = dataclasses.replace(keywords["submodules"], router=router_builder)
        keywords["submodules"] = _swap_experts(submodules, experts_cls)
        keywords.update(layer_params)
        return functools.partial(layer_cls, *mlp_spec.args, **keywords)
    return mlp_spec


def _swap_experts(submodules: Any, experts_cls: type | None) -> Any:
    """``MoESubmodules`` with ``SequentialMLP`` experts built as ``experts_cls`` (both spec
    styles: ``ModuleSpec`` in 0.16, ``functools.partial`` in 0.17+)."""
    experts = submodules.experts
    if experts_cls is None:
        return submodules
    if isinstance(experts, ModuleSpec) and experts.module is SequentialMLP:
        return dataclasses.replace(
            submodules, experts=dataclasses.replace(experts, module=experts_cls)
        )
    if isinstance(experts, functools.partial) and experts.func is SequentialMLP:
        swapped = functools.partial(experts_cls, *experts.args, **experts.keywords)
        return dataclasses.replace(submodules, experts=swapped)
    return submodules


def swap_core_attention(layer_spec: ModuleSpec, attention_cls: type) -> ModuleSpec:
    """A transformer-layer spec whose ``DotProductAttention`` (the local core attention) is
    ``attention_cls``; Transformer Engine's core attention stays."""
    attention = getattr(layer_spec.submodules, "self_attention", None)
    if not isinstance(attention, ModuleSpec) or attention.submodules is None:
        return layer_spec
    if getattr(attention.submodules, "core_attention", None) is not DotProductAttention:
        return layer_spec
    swapped = dataclasses.replace(
        attention,
        submodules=dataclasses.replace(attention.submodules, core_attention=attention_cls),
    )
    return dataclasses.replace(
        layer_spec, submodules=dataclasses.replace(layer_spec.submodules, self_attention=swapped)
    )


class _SubclassedMoEWarningFilter(logging.Filter):
    """Drops 0.16's "Unknown MLP type" warning, logged for every MoELayer subclass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Unknown MLP type" not in record.getMessage()


def _quiet_subclassed_moe_warning() -> None:
    if MCORE_VERSION >= Version("0.17"):
        return
    layer_logger = logging.getLogger("megatron.core.transformer.transformer_layer")
    if not any(isinstance(f, _SubclassedMoEWarningFilter) for f in layer_logger.filters):
        layer_logger.addFilter(_SubclassedMoEWarningFilter())


def swap_moe_in_layer_spec(
    layer_spec: ModuleSpec,
    layer_cls: type,
    router_builder: Callable,
    layer_params: dict,
    experts_cls: type | None = None,
) -> ModuleSpec:
    """Apply :func:`swap_moe_module` to the ``mlp`` of a transformer-layer ``ModuleSpec``."""
    _quiet_subclassed_moe_warning()
    submodules = layer_spec.submodules
    new_mlp = swap_moe_module(submodules.mlp, layer_cls, router_builder, layer_params, experts_cls)
    return dataclasses.replace(layer_spec, submodules=dataclasses.replace(submodules, mlp=new_mlp))


def _local_norm_classes() -> tuple:
    from megatron.core.transformer.torch_norm import WrappedTorchNorm

    classes = [WrappedTorchNorm]
    try:
        from megatron.core.fusions.fused_layer_norm import FusedLayerNorm

        classes.append(FusedLayerNorm)
    except ImportError:
        pass
    return tuple(classes)


def swap_local_norms(layer_spec: ModuleSpec, norm_cls: type) -> ModuleSpec:
    """Replace the local (torch/apex) norms of a transformer-layer spec by ``norm_cls``.

    Covers ``input_layernorm``, ``pre_mlp_layernorm`` and the attention's q/k norms; Transformer
    Engine specs (norms fused into the linear layers) come back unchanged.
    """
    local = _local_norm_classes()
    sub = layer_spec.submodules
    changes = {
        name: norm_cls
        for name in ("input_layernorm", "pre_mlp_layernorm")
        if getattr(sub, name, None) in local
    }
    attention = getattr(sub, "self_attention", None)
    if isinstance(attention, ModuleSpec) and attention.submodules is not None:
        qk = {
            name: norm_cls
            for name in ("q_layernorm", "k_layernorm", "kv_layernorm")
            if getattr(attention.submodules, name, None) in local
        }
        if qk:
            changes["self_attention"] = dataclasses.replace(
                attention, submodules=dataclasses.replace(attention.submodules, **qk)
            )
    if not changes:
        return layer_spec
    return dataclasses.replace(layer_spec, submodules=dataclasses.replace(sub, **changes))


def swap_block_norm(block_spec: Any, norm_cls: type) -> Any:
    """Replace the final norm of a ``TransformerBlockSubmodules`` when it is a local one."""
    if getattr(block_spec, "layer_norm", None) in _local_norm_classes():
        block_spec.layer_norm = norm_cls
    return block_spec


def build_moe_module(mlp_spec: Any, config: TransformerConfig, **kwargs) -> torch.nn.Module:
    """Instantiate an MoE ``mlp`` spec on its own (tests and benchmarks build bare layers)."""
    if isinstance(mlp_spec, ModuleSpec):
        from megatron.core.transformer.spec_utils import build_module

        return build_module(mlp_spec, config=config, **kwargs)
    return mlp_spec(config=config, **kwargs)


def moe_mlp_spec(use_te: bool, num_experts: int, moe_grouped_gemm: bool = False) -> Any:
    """Megatron's stock MoE ``mlp`` spec (local modules or Transformer Engine)."""
    from megatron.core.models.gpt.moe_module_specs import get_moe_module_spec

    return get_moe_module_spec(
        use_te=use_te, num_experts=num_experts, moe_grouped_gemm=moe_grouped_gemm
    )


def set_token_dispatcher(layer: MoELayer, dispatcher: Any) -> None:
    """Make ``dispatcher`` the token dispatcher ``layer`` uses in training.

    0.17+ keeps the training dispatcher a second time as ``_training_token_dispatcher`` (it
    switches to an inference-optimised one and back); 0.16 has ``token_dispatcher`` only.
    """
    if getattr(layer, "_training_token_dispatcher", None) is layer.token_dispatcher:
        layer._training_token_dispatcher = dispatcher
    layer.token_dispatcher = dispatcher


# --------------------------------------------------------------------------------------------
# Auxiliary-loss tracker (dict in 0.16, MoEMetricsTracker in 0.17+)
# --------------------------------------------------------------------------------------------


def local_aux_loss_values(name: str) -> torch.Tensor | None:
    """Per-layer values ``[num_layers]`` that routers logged under ``name`` on this rank.

    Not reduced across ranks. ``None`` when nothing was logged under that name.
    """
    try:
        from megatron.core.transformer.moe.moe_logging import get_moe_metrics_tracker
    except ImportError:  # 0.16
        entry = moe_utils.get_moe_layer_wise_logging_tracker().get(name)
        return None if entry is None else entry["values"]
    entry = get_moe_metrics_tracker().metrics.get(name)
    return None if entry is None else entry.values


def clear_aux_losses() -> None:
    """Zero every logged auxiliary loss (call once per training step, after logging)."""
    try:
        from megatron.core.transformer.moe.moe_logging import get_moe_metrics_tracker
    except ImportError:  # 0.16
        moe_utils.clear_aux_losses_tracker()
        return
    get_moe_metrics_tracker().clear()


def packed_seq_params_from_cu_seqlens(cu_seqlens: torch.Tensor, max_seqlen: int):
    """Megatron's ``PackedSeqParams`` (THD layout) for samples bounded by ``cu_seqlens``."""
    from megatron.core.packed_seq_params import PackedSeqParams

    return PackedSeqParams(
        qkv_format="thd",
        cu_seqlens_q=cu_seqlens,
        cu_seqlens_kv=cu_seqlens,
        max_seqlen_q=max_seqlen,
        max_seqlen_kv=max_seqlen,
    )


def static_inference_context(max_batch_size: int, max_sequence_length: int):
    """Megatron's ``StaticInferenceContext`` (the per-layer KV cache of static batching)."""
    from megatron.core.inference.contexts import StaticInferenceContext

    return StaticInferenceContext(max_batch_size, max_sequence_length)


@functools.cache
def _keep_adam_step_on_reshardable_load() -> None:
    """Without apex or Transformer Engine, ``DistributedOptimizer.load_state_dict`` puts the
    loaded Adam ``step`` into every parameter's state and then copies each state entry from the
    checkpoint's per-parameter tensors, which never hold ``step`` (it is kept in the groups):
    loading a fully reshardable state fails with ``KeyError: 'step'``. The step already set is
    kept (copied onto itself)."""
    from megatron.core.optimizer import distrib_optimizer

    if getattr(distrib_optimizer, "HAVE_APEX_OR_TE", True):
        return
    cls = distrib_optimizer.DistributedOptimizer
    original = cls._set_main_param_and_optimizer_states

    def set_states(self, model_param, tensors):
        if "step" not in tensors and not self.config.use_precision_aware_optimizer_no_fp8_or_ds_fp8:
            group_index, group_order = self.model_param_group_index_map[model_param]
            main_param = self.optimizer.param_groups[group_index]["params"][group_order]
            step = self.optimizer.state[main_param].get("step")
            if step is not None:
                tensors = {**tensors, "step": step.clone()}
        return original(self, model_param, tensors)

    cls._set_main_param_and_optimizer_states = set_states


def separate_adam_steps(optimizer) -> None:
    """Give every parameter its own Adam ``step`` tensor after a load.

    Without apex or Transformer Engine, ``DistributedOptimizer.load_state_dict`` sets one and
    the same ``step`` tensor into every parameter's state; PyTorch's Adam then increments it in
    place once per parameter per step (86 parameters: 86 steps), which skews the bias correction
    from the first step after a resume on.
    """
    parts = getattr(optimizer, "chained_optimizers", None) or [optimizer]
    for part in parts:
        inner = getattr(part, "optimizer", None)
        if inner is None:
            continue
        seen: set[int] = set()
        for state in inner.state.values():
            step = state.get("step")
            if isinstance(step, torch.Tensor):
                if id(step) in seen:
                    state["step"] = step.clone()
                seen.add(id(state["step"]))


@contextlib.contextmanager
def optimizer_loading_template(optimizer):
    """Let a distributed optimizer that has not stepped yet describe the state it will load.

    Without apex or Transformer Engine (CPU), ``DistributedOptimizer.sharded_state_dict`` reads
    the inner optimizer's per-parameter Adam ``step`` (an assertion on a fresh optimizer: a run
    resumed under a new world, or before its first step). Inside the block such an optimizer
    holds a ``step`` for each parameter; afterwards its state is empty again, which is what
    ``load_state_dict`` expects of a fresh optimizer (it creates the state it loads into).
    """
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    _keep_adam_step_on_reshardable_load()
    parts = getattr(optimizer, "chained_optimizers", None) or [optimizer]
    fresh = [
        part.optimizer
        for part in parts
        if isinstance(part, DistributedOptimizer)
        and getattr(part, "optimizer", None) is not None
        and not part.optimizer.state
    ]
    for inner in fresh:
        for group in inner.param_groups:
            for param in group["params"]:
                inner.state[param]["step"] = torch.zeros((), dtype=torch.float32)
    try:
        yield
    finally:
        for inner in fresh:
            inner.state.clear()


def _with_current_hyper_parameters(saved: list[dict], current: list[dict]) -> list[dict]:
    """Saved parameter groups completed with the current groups' hyper-parameters (what the
    saved ones lack: they were written under another sub-optimizer structure)."""
    return [
        {**{k: v for k, v in now.items() if k != "params"}, **group}
        for group, now in zip(saved, current)
    ]


def _current_groups(part, saved_groups: list[dict]) -> list[dict]:
    """``part``'s own parameter groups (hyper-parameters, no ``params``) with the saved step."""
    step = next((g["step"] for g in saved_groups if "step" in g), None)
    groups = []
    for now in part.optimizer.param_groups:
        group = {k: v for k, v in now.items() if k != "params"}
        if step is not None:
            group["step"] = step
        groups.append(group)
    return groups


def _align_distributed(chained, loaded: dict, indexed: list, flat: dict) -> dict:
    """:func:`align_optimizer_state` for Megatron's distributed optimizer, whose state is
    ``{"optimizer": {"param_groups": ...}, "param_state": ..., "param_state_sharding_type": ...}``
    per sub-optimizer; the groups are matched by their expert flag, so they are rebuilt from the
    current sub-optimizers (with the saved step)."""
    count = len(chained)
    candidates = [flat, *(loaded[i] for i in indexed)]
    saved_parts = [p for p in candidates if "optimizer" in p or "param_state_sharding_type" in p]
    saved_groups = [
        g for part in saved_parts for g in part.get("optimizer", {}).get("param_groups", [])
    ]
    sharding = next(
        (p["param_state_sharding_type"] for p in saved_parts if "param_state_sharding_type" in p),
        None,
    )
    extra = {} if sharding is None else {"param_state_sharding_type": sharding}
    if count > 1:
        return {
            i: {
                **{k: v for k, v in loaded[i].items() if k != "optimizer"},
                **extra,
                "optimizer": {"param_groups": _current_groups(chained[i], saved_groups)},
            }
            for i in range(count)
        }
    return {
        **flat,
        **extra,
        "optimizer": {"param_groups": _current_groups(chained[0], saved_groups)},
    }


def align_optimizer_state(optimizer, loaded: dict) -> dict:
    """Fit a loaded optimizer state to ``optimizer``'s chain of sub-optimizers.

    Megatron builds one optimizer for dense and expert parameters when experts are not sharded
    (EP = 1) and two (dense, expert) when they are. Loaded under the other layout, the sharded
    tensors find their parameters by name, but the state's outer structure (one flat state vs
    ``{0: ..., 1: ...}``), the parameter groups' hyper-parameters and the shared Adam step
    (``common_step``, or the groups' ``step`` for the distributed optimizer) must be moved across.
    """
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    chained = getattr(optimizer, "chained_optimizers", None)
    count = len(chained) if chained is not None else 1
    indexed = [k for k in loaded if isinstance(k, int)]
    flat = {k: v for k, v in loaded.items() if not isinstance(k, int)}
    changed = (
        count > 1 and not all(i in loaded and "optimizer" in loaded[i] for i in range(count))
    ) or (count == 1 and indexed)
    if (
        chained is not None
        and changed
        and all(isinstance(c, DistributedOptimizer) for c in chained)
    ):
        return _align_distributed(chained, loaded, indexed, flat)
    if count > 1 and indexed:
        common = flat.get("state", {}).get("common_step")
        aligned = {i: loaded[i] for i in range(count)}
        for i, part in aligned.items():
            if common is not None:
                part["state"].setdefault("common_step", common)
            # group hyper-parameters were saved with the flat structure: take the current ones
            current = chained[i].optimizer.param_groups
            part["param_groups"] = _with_current_hyper_parameters(part["param_groups"], current)
        return aligned
    if count == 1 and indexed and "state" in flat:
        steps = [
            loaded[i]["state"].get("common_step")
            for i in indexed
            if "common_step" in loaded[i]["state"]
        ]
        if steps and "common_step" not in flat["state"]:
            flat["state"]["common_step"] = steps[0]
        # the groups' hyper-parameters were saved per sub-optimizer: take the current ones
        single = chained[0].optimizer if chained is not None else optimizer.optimizer
        flat["param_groups"] = _with_current_hyper_parameters(
            flat.get("param_groups", []), single.param_groups
        )
        return flat
    return loaded


def context_parallel_batch_slice(batch: dict, cp_group=None) -> dict:
    """Megatron's own context-parallel slicing of a ``[B, S, ...]`` batch: this CP rank's two
    chunks of ``2 x CP`` (the load-balanced causal split). ``cp_group``: None = Megatron's.

    0.19 added a required ``is_hybrid_cp`` argument (and per-document balancing when the batch
    carries ``cu_seqlens``, which ours never does: the split stays per sequence).
    """
    import inspect

    from megatron.core.utils import get_batch_on_this_cp_rank

    if "is_hybrid_cp" in inspect.signature(get_batch_on_this_cp_rank).parameters:
        return get_batch_on_this_cp_rank(batch, is_hybrid_cp=False, cp_group=cp_group)
    return get_batch_on_this_cp_rank(batch, cp_group=cp_group)


# --------------------------------------------------------------------------------------------
# Distributed checkpoints, tensor by tensor (nemo_neko.convert)
#
# The importer writes a torch_dist checkpoint from a storage-free (meta) model, one chunk at a
# time, through Megatron's own key/shard translation and PyTorch DCP; the exporter reads any
# block of a stored tensor back. Both use internals of dist_checkpointing.strategies.torch
# (_replace_state_dict_keys_with_sharded_keys, mcore_to_pyt_state_dict, MCoreSavePlanner),
# checked against 0.16.1.
# --------------------------------------------------------------------------------------------


def sharded_tensors_of(entry: Any) -> list:
    """The ``ShardedTensor`` objects one ``sharded_state_dict()`` entry stands for.

    A ``ShardedTensor`` is itself; a ``ShardedTensorFactory`` (e.g. the gated ``linear_fc1``,
    saved as its gate and up halves) is built, so its tensors are views of the factory's data;
    a ``ShardedObject`` (``_extra_state``) has none.
    """
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory

    if isinstance(entry, ShardedTensor):
        return [entry]
    if isinstance(entry, ShardedTensorFactory):
        return [v for v in nested_values(entry.build()) if isinstance(v, ShardedTensor)]
    return []


_STACKED_LAYERS = "decoder.layers."


def _unstack_layer(tensor):
    """A ``ShardedTensor`` of a stacked-layers key (``decoder.layers.<param>``, first prepended
    axis = the global layer) as the same block under that layer's own key
    (``decoder.layers.<layer>.<param>``), the layer axis dropped."""
    key = tensor.key
    at = key.find(_STACKED_LAYERS)
    rest = key[at + len(_STACKED_LAYERS) :] if at >= 0 else ""
    if not rest or rest[0].isdigit() or tensor.prepend_axis_num < 1:
        return tensor  # not stacked (or already per layer)
    fragments = tensor.axis_fragmentations
    layer = tensor.global_offset[0]
    return dataclasses.replace(
        tensor,
        key=f"{key[: at + len(_STACKED_LAYERS)]}{layer}.{rest}",
        global_shape=tuple(tensor.global_shape[1:]),
        global_offset=tuple(tensor.global_offset[1:]),
        axis_fragmentations=None if fragments is None else tuple(fragments[1:]),
        prepend_axis_num=tensor.prepend_axis_num - 1,
    )


def per_layer_keys(sharded: Any) -> Any:
    """``sharded`` (a sharded state dict, e.g. the optimizer's) with every tensor of a stacked
    layers key stored under its layer's own key instead.

    Megatron stores a homogeneous block's layers stacked (``decoder.layers.<param>``,
    ``[layers, ...]``) and its torch_dist strategy needs every key's shards to cover it. Frozen
    layers have no optimizer state, so the optimizer's shards of such a key would cover the
    trainable layers only: per layer, each stored key is whole. Factories (the gated
    ``linear_fc1``'s halves) are rewritten as they build; loading reads the same keys back.
    (Experts frozen within a trainable layer would leave the same gap along the expert axis:
    not handled; freeze whole layers.)
    """
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory

    if isinstance(sharded, dict):
        return {k: per_layer_keys(v) for k, v in sharded.items()}
    if isinstance(sharded, list):
        return [per_layer_keys(v) for v in sharded]
    if isinstance(sharded, ShardedTensor):
        return _unstack_layer(sharded)
    if isinstance(sharded, ShardedTensorFactory):
        build = sharded.build_fn

        def build_per_layer(*args, **kwargs):
            return per_layer_keys(build(*args, **kwargs))

        return dataclasses.replace(sharded, build_fn=build_per_layer)
    return sharded


def checkpoint_tensors(checkpoint_dir: str) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Global shape and dtype of every tensor in a distributed checkpoint (metadata only)."""
    metadata = dist_checkpointing.load_tensors_metadata(str(checkpoint_dir))
    return {key: (tuple(sh.global_shape), sh.dtype) for key, sh in metadata.items()}


def save_streaming(
    sharded_state_dict: dict,
    checkpoint_dir: str,
    resolve_chunk: Callable[..., torch.Tensor],
    max_item_bytes: int | None = None,
) -> None:
    """``dist_checkpointing.save`` whose tensor data are produced one piece at a time.

    ``sharded_state_dict`` may hold tensors without storage (meta device): only keys, shapes,
    offsets and dtypes are read from it. Each stored chunk (a ``ShardedTensor`` of the state
    dict) is written as one or more pieces: blocks of its rows along its first axis longer than
    one, of at most ``max_item_bytes`` (None: whole chunks). A piece is asked for when it is
    written, as ``resolve_chunk(key, chunk_global_offset, start, stop)`` -> rows
    ``[start, stop)`` of the chunk along that axis (the singleton axes before it left out), and
    dropped once written: memory holds one piece at a time. The result is an ordinary
    ``torch_dist`` checkpoint (PyTorch DCP, one file per piece) that
    :func:`dist_checkpointing.load` reads under any layout (pieces are just finer chunks).
    Collective over the default group (a world of one in practice).
    """
    import dataclasses as dc

    from megatron.core.dist_checkpointing.strategies import torch as mtorch
    from torch.distributed import checkpoint as dcp
    from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, MetadataIndex
    from torch.distributed.checkpoint.planner import WriteItemType

    class _StreamingPlanner(mtorch.MCoreSavePlanner):
        pieces: dict = {}  # (key, piece offset) -> (chunk offset, axis, start, stop)

        def create_local_plan(self):
            plan = super().create_local_plan()
            items = []
            for item in plan.items:
                if item.type == WriteItemType.BYTE_IO:
                    items.append(item)
                    continue
                items += self._split(item)
            self.plan = dc.replace(plan, items=items)
            return self.plan

        def _split(self, item):
            chunk = item.tensor_data.chunk
            sizes, offsets = list(chunk.sizes), list(chunk.offsets)
            axis = next((a for a, n in enumerate(sizes) if n > 1), len(sizes) - 1)
            row_bytes = item.tensor_data.properties.dtype.itemsize
            for a, n in enumerate(sizes):
                row_bytes *= n if a != axis else 1
            if not max_item_bytes or row_bytes * sizes[axis] <= max_item_bytes:
                self.pieces[(item.index.fqn, tuple(offsets))] = (tuple(offsets), None, None, None)
                return [item]
            step = max(1, max_item_bytes // row_bytes)
            out = []
            for start in range(0, sizes[axis], step):
                stop = min(sizes[axis], start + step)
                piece_offsets = list(offsets)
                piece_offsets[axis] += start
                piece_sizes = list(sizes)
                piece_sizes[axis] = stop - start
                key = (item.index.fqn, tuple(piece_offsets))
                self.pieces[key] = (tuple(offsets), axis, start, stop)
                piece = ChunkStorageMetadata(torch.Size(piece_offsets), torch.Size(piece_sizes))
                out.append(
                    dc.replace(
                        item,
                        index=MetadataIndex(item.index.fqn, torch.Size(piece_offsets)),
                        tensor_data=dc.replace(item.tensor_data, chunk=piece),
                    )
                )
            return out

        def resolve_data(self, write_item):
            if write_item.type == WriteItemType.BYTE_IO:
                return super().resolve_data(write_item)
            fqn, offset = write_item.index.fqn, tuple(int(o) for o in write_item.index.offset)
            data = resolve_chunk(fqn, *self.pieces[(fqn, offset)])
            sizes = torch.Size(write_item.tensor_data.chunk.sizes)
            dtype = write_item.tensor_data.properties.dtype
            if data.numel() != sizes.numel() or data.dtype != dtype:
                raise ValueError(
                    f"{fqn} at {offset}: produced {tuple(data.shape)} {data.dtype}, the "
                    f"checkpoint expects {tuple(sizes)} {dtype}"
                )
            return data.contiguous().view(sizes)

    # a TorchDistSaveShardedStrategy subclass: 0.19's save() replaces any other strategy class
    class _StreamingStrategy(mtorch.TorchDistSaveShardedStrategy):
        @property
        def can_handle_sharded_objects(self):
            return True

        def save(self, state_dict, directory):
            flat, _, _ = mtorch._replace_state_dict_keys_with_sharded_keys(
                state_dict, keep_only_main_replica=True
            )
            pyt_state_dict = mtorch.mcore_to_pyt_state_dict(flat, False)
            # one file per piece: the writer keeps every tensor of a file alive until it closes
            writer = dcp.FileSystemWriter(str(directory), single_file_per_rank=False)
            planner = _StreamingPlanner(dedup_replicated_tensors=False, flatten_state_dict=False)
            planner.pieces = {}
            dcp.save(pyt_state_dict, storage_writer=writer, planner=planner)

    dist_checkpointing.save(
        sharded_state_dict,
        str(checkpoint_dir),
        sharded_strategy=_StreamingStrategy("torch_dist", 1, keep_only_main_replica=True),
    )


def load_blocks(blocks: dict[str, tuple[str, tuple, tuple, torch.Tensor]], checkpoint_dir: str):
    """Read blocks of stored tensors into ``out`` tensors, each block one ``load`` request.

    Args:
        blocks: name -> ``(key, global_shape, global_offset, out)``: the block of the stored
            tensor ``key`` starting at ``global_offset`` with ``out``'s shape (singleton axes
            included for stacked layers and experts) is read into ``out``.
        checkpoint_dir: a distributed checkpoint.

    Returns:
        name -> the filled tensor. A part of a stacked tensor (one layer, one expert) is read
        without the rest: access-integrity validation is off on purpose.
    """
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    request = {
        name: ShardedTensor(
            key=key,
            data=out,
            dtype=out.dtype,
            local_shape=tuple(out.shape),
            global_shape=tuple(global_shape),
            global_offset=tuple(global_offset),
            axis_fragmentations=None,  # any block, not a grid cell
        )
        for name, (key, global_shape, global_offset, out) in blocks.items()
    }
    return dist_checkpointing.load(request, str(checkpoint_dir), validate_access_integrity=False)


@functools.cache
def aux_loss_scaled_over_tp_cp() -> bool:
    """Whether Megatron scales a per-token-loss run's load-balancing gradient by the tokens of the
    whole TP x CP group (newer releases) rather than by this rank's share of them (0.16).

    Under sequence or context parallelism each rank's auxiliary loss covers its share of the
    micro-batch's tokens and the shares add up to the micro-batch's loss; scaling each share by
    the local token count weighs the loss ``1 / (TP x CP)`` of what one process gives it.
    :class:`~nemo_neko.moe.router.TaskGuidedRouter` applies the newer scaling where this is False.
    """
    import inspect

    source = inspect.getsource(TopKRouter.attach_and_log_load_balancing_loss)
    return "tp_cp_group.size()" in source
