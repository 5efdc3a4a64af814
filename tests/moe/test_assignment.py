"""Task-to-expert assignment: seeded random, explicit, many-to-one, and its errors."""

from collections import Counter

import pytest

from nemo_neko.moe.assignment import TaskAssignmentConfig, assign_tasks_to_experts
from nemo_neko.moe.config import TaskRoutingConfig

DATASETS = ["librispeech", "cv", "gigaspeech", "coedit_gec", "pleias_ocr"]


def test_random_is_seeded_and_gives_distinct_experts_when_they_suffice():
    cfg = TaskAssignmentConfig(mode="random", seed=3)
    first = assign_tasks_to_experts(DATASETS, 8, cfg)
    assert first == assign_tasks_to_experts(DATASETS, 8, cfg)
    assert len(set(first)) == len(DATASETS)
    assert all(0 <= e < 8 for e in first)
    others = {
        tuple(assign_tasks_to_experts(DATASETS, 8, TaskAssignmentConfig(seed=s))) for s in range(20)
    }
    assert len(others) > 1, "the seed must change the mapping"


def test_random_many_to_one_is_balanced():
    datasets = [f"d{i}" for i in range(19)]
    experts = assign_tasks_to_experts(datasets, 8, TaskAssignmentConfig(seed=0))
    load = Counter(experts)
    assert set(load) == set(range(8))
    assert max(load.values()) == 3 and min(load.values()) == 2


def test_explicit_mapping():
    mapping = {name: i for i, name in enumerate(DATASETS)}
    cfg = TaskAssignmentConfig(mode="explicit", mapping=mapping)
    assert assign_tasks_to_experts(DATASETS, 8, cfg) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "mapping,message",
    [
        (
            {**{d: 0 for d in DATASETS}, "pleias_ocr": 8},
            r"'pleias_ocr' -> expert 8 is outside \[0, 8\)",
        ),
        ({**{d: 0 for d in DATASETS}, "ted": 1}, r"unknown datasets \['ted'\]"),
        ({d: 0 for d in DATASETS[:-1]}, r"no expert for datasets \['pleias_ocr'\]"),
        ({**{d: 0 for d in DATASETS}, "cv": -1}, r"'cv' -> expert -1 is outside"),
    ],
)
def test_explicit_mapping_errors(mapping, message):
    cfg = TaskAssignmentConfig(mode="explicit", mapping=mapping)
    with pytest.raises(ValueError, match=message):
        assign_tasks_to_experts(DATASETS, 8, cfg)


def test_more_tasks_than_allowed_per_expert():
    cfg = TaskAssignmentConfig(
        mode="explicit", mapping={d: 2 for d in DATASETS}, max_tasks_per_expert=2
    )
    with pytest.raises(
        ValueError, match="more tasks mapped to one expert than max_tasks_per_expert=2"
    ):
        assign_tasks_to_experts(DATASETS, 8, cfg)
    many = [f"d{i}" for i in range(9)]
    with pytest.raises(ValueError, match="max_tasks_per_expert=1"):
        assign_tasks_to_experts(many, 8, TaskAssignmentConfig(max_tasks_per_expert=1))


def test_other_errors():
    with pytest.raises(ValueError, match="duplicated dataset names"):
        assign_tasks_to_experts(["a", "a"], 8, TaskAssignmentConfig())
    with pytest.raises(ValueError, match="at least one dataset"):
        assign_tasks_to_experts([], 8, TaskAssignmentConfig())
    with pytest.raises(ValueError, match="mode must be one of"):
        assign_tasks_to_experts(["a"], 8, TaskAssignmentConfig(mode="round_robin"))


def test_routing_config_rejects_task_ids_beyond_the_experts():
    with pytest.raises(
        ValueError,
        match=r"task id 1 \('st'\) is mapped to expert 8, outside \[0, num_moe_experts=8\)",
    ):
        TaskRoutingConfig(task_to_expert=[0, 8], task_names=["asr", "st"]).validate(8, 2)
    with pytest.raises(ValueError, match="moe_router_topk=9"):
        TaskRoutingConfig(task_to_expert=[0]).validate(8, 9)
    routing = TaskRoutingConfig.for_datasets(DATASETS, 8, TaskAssignmentConfig(seed=1))
    routing.validate(8, 2)
    assert routing.num_tasks == 5 and routing.num_task_slots == 6
    assert routing.task_names == DATASETS
