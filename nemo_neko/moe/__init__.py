"""NeKo's Mixture-of-Experts layer on Megatron-Core: task-guided routing with expert parallelism.

See README.md in this folder for what each file does. Names are imported lazily, so the pure
parts (``assignment``, ``config``, ``routing``, ``task_context``) load without Megatron.
"""

import importlib

_EXPORTS = {
    "NeKoMoELayer": "nemo_neko.moe.layer",
    "TaskAssignmentConfig": "nemo_neko.moe.assignment",
    "assign_tasks_to_experts": "nemo_neko.moe.assignment",
    "TaskGuidedRouter": "nemo_neko.moe.router",
    "TaskRoutingConfig": "nemo_neko.moe.config",
    "task_guided_topk": "nemo_neko.moe.routing",
    "neko_decoder_block_spec": "nemo_neko.moe.spec",
    "neko_layer_spec": "nemo_neko.moe.spec",
    "neko_moe_spec": "nemo_neko.moe.spec",
    "collect_routing_stats": "nemo_neko.moe.stats",
    "current_task_ids": "nemo_neko.moe.task_context",
    "task_routing_scope": "nemo_neko.moe.task_context",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nemo_neko.moe' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
