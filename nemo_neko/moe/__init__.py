"""NeKo's Mixture-of-Experts layer on Megatron-Core: task-guided routing with expert parallelism.

See README.md in this folder for what each file does.
"""

from nemo_neko.moe.assignment import TaskAssignmentConfig, assign_tasks_to_experts
from nemo_neko.moe.config import TaskRoutingConfig
from nemo_neko.moe.layer import NeKoMoELayer
from nemo_neko.moe.router import TaskGuidedRouter
from nemo_neko.moe.routing import task_guided_topk
from nemo_neko.moe.spec import neko_decoder_block_spec, neko_layer_spec, neko_moe_spec
from nemo_neko.moe.stats import collect_routing_stats
from nemo_neko.moe.task_context import current_task_ids, task_routing_scope

__all__ = [
    "NeKoMoELayer",
    "TaskAssignmentConfig",
    "TaskGuidedRouter",
    "TaskRoutingConfig",
    "assign_tasks_to_experts",
    "collect_routing_stats",
    "current_task_ids",
    "neko_decoder_block_spec",
    "neko_layer_spec",
    "neko_moe_spec",
    "task_guided_topk",
    "task_routing_scope",
]
